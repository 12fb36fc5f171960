"""Re-predict one measured accuracy cell: predicted vs measured speedups, no new runs.

    python benchmarks/predict_cell.py /tmp/wa_q/mlp-4gbit
    # the same cell under another version of the model (any checkout with tracekit.api):
    git worktree add /tmp/old eedae53
    PYTHONPATH=/tmp/old python benchmarks/predict_cell.py /tmp/wa_q/mlp-4gbit

A cell folder is what ``benchmarks/whatif_accuracy.py`` writes: ``baseline/`` (the
profiled DDP run), ``comm.json`` (the calibration) and ``measured_jobs.json`` (per-job
measured speedups). Prints, per DDP what-if measured there, the predicted speedup, the
median measured one and the error, then the mean and worst |error|.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tracekit.api import PredictionOptions, Session

#: the DDP what-ifs of issue 11's table
SPECS = ("fusion=1MB", "fusion=4MB", "fusion=16MB", "fusion=64MB", "fusion=100MB",
         "overlap=off", "dear", "dear+fusion=4MB", "bandwidth=2x", "bandwidth=0.5x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cell", type=Path, help="a cell folder of whatif_accuracy.py")
    args = ap.parse_args()
    measured = json.loads((args.cell / "measured_jobs.json").read_text())
    specs = [s for s in SPECS if s in measured]
    session = Session(args.cell / "baseline",
                      PredictionOptions(comm_model=str(args.cell / "comm.json")))
    errors = []
    for r in session.what_ifs(specs):
        m = statistics.median(measured[r.spec])
        errors.append(abs(r.speedup / m - 1) * 100)
        print(f"{r.spec:18} predicted {r.speedup:.3f} measured {m:.3f} "
              f"error {(r.speedup / m - 1) * 100:+.1f}%")
    print(f"mean |error| {statistics.mean(errors):.1f}%, worst {max(errors):.1f}%")


if __name__ == "__main__":
    main()
