"""Re-predict one measured accuracy cell: predicted vs measured speedups, no new runs.

    python benchmarks/predict_cell.py /tmp/wa_q/mlp-4gbit
    # the same cell under another version of the model (any checkout with tracekit.api):
    git worktree add /tmp/old eedae53
    PYTHONPATH=/tmp/old python benchmarks/predict_cell.py /tmp/wa_q/mlp-4gbit

A cell folder is what ``benchmarks/whatif_accuracy.py`` writes: ``baseline/`` (the
profiled DDP run), ``comm.json`` (the calibration) and ``measured_jobs.json`` (per-job
measured speedups). Prints, per DDP what-if measured there, the predicted speedup, the
median measured one and the error, then the mean and worst |error|; then the FSDP
what-ifs measured there (``fsdp=Linear`` from the DDP baseline, ``reshard=off`` from
``baseline-fsdp/``), and ``stragglers=off`` from ``baseline-imbalanced/`` with the
straggler summary names.
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
#: FSDP what-ifs (issue 16): from the DDP baseline, and from the FSDP2 baseline
FSDP_FROM_DDP = ("fsdp=Linear", "fsdp=Linear+reshard=off")
FSDP_FROM_FSDP = ("reshard=off",)
#: issue 16's straggler what-if, from the imbalanced DDP baseline (rank 1: 3x the batch)
FROM_IMBALANCED = ("stragglers=off",)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cell", type=Path, help="a cell folder of whatif_accuracy.py")
    args = ap.parse_args()
    measured = json.loads((args.cell / "measured_jobs.json").read_text())
    specs = [s for s in SPECS if s in measured]
    session = Session(args.cell / "baseline",
                      PredictionOptions(comm_model=str(args.cell / "comm.json")))
    errors = [_report(r, measured) for r in session.what_ifs(specs)]
    print(f"mean |error| {statistics.mean(errors):.1f}%, worst {max(errors):.1f}% "
          f"(the {len(errors)} DDP what-ifs)")
    fsdp = [_report(r, measured) for r in session.what_ifs(
        [s for s in FSDP_FROM_DDP if s in measured])]
    if (args.cell / "baseline-fsdp" / "manifest.json").exists():
        on_fsdp = Session(args.cell / "baseline-fsdp",
                          PredictionOptions(comm_model=str(args.cell / "comm.json")))
        fsdp += [_report(r, measured) for r in on_fsdp.what_ifs(
            [s for s in FSDP_FROM_FSDP if s in measured])]
    if fsdp:
        print(f"FSDP what-ifs: mean |error| {statistics.mean(fsdp):.1f}%, worst "
              f"{max(fsdp):.1f}%")
    if (args.cell / "baseline-imbalanced" / "manifest.json").exists():
        imbalanced = Session(args.cell / "baseline-imbalanced",
                             PredictionOptions(comm_model=str(args.cell / "comm.json")))
        for r in imbalanced.what_ifs([s for s in FROM_IMBALANCED if s in measured]):
            _report(r, measured)
        named = [s.rank for s in imbalanced.summary().stragglers]
        print(f"straggler named: rank(s) {named} (given more work: rank 1)")


def _report(r, measured: dict) -> float:
    """Print one what-if's line; its |error| in %."""
    m = statistics.median(measured[r.spec])
    print(f"{r.spec:24} predicted {r.speedup:.3f} measured {m:.3f} "
          f"error {(r.speedup / m - 1) * 100:+.1f}%")
    return abs(r.speedup / m - 1) * 100


if __name__ == "__main__":
    main()
