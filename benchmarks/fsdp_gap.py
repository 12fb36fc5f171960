"""Where a ``fsdp=CLASS`` prediction and a measured FSDP2 run of the same model part ways,
component by component (no new runs).

    python benchmarks/fsdp_gap.py /tmp/wa_f/mlp-4gbit

A cell folder is what ``benchmarks/whatif_accuracy.py`` writes: ``baseline/`` (the profiled
DDP run), ``baseline-fsdp/`` (the profiled FSDP2 run of the same model on the same link)
and ``comm.json``. It prints, for the predicted FSDP step (``fsdp=CLASS`` from the DDP
run) and the measured one:

- the median step and how it splits into forward (to the first backward op) and the rest;
- per FSDP2 host op and per collective: calls per step, median and mean duration (the
  mean minus the median is the tail);
- host dead time: per step, the time the training thread ran no op while no collective of
  its rank was in flight (FSDP2's Python hooks, wake-ups after a blocking wait).

The measured run is profiled, the prediction is not: its profiler overhead is in the
measured figures (``tracekit replay RUN`` prints it per event).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from tracekit.api import PredictionOptions, Session
from tracekit.core.intervals import union

HOST_OPS = ("fsdp::all_gather_copy_in", "c10d::_allgather_base_", "fsdp::split_with_sizes_copy",
            "fsdp::chunk_cat", "c10d::_reduce_scatter_base_")


def _rank0(events: pd.DataFrame) -> pd.DataFrame:
    return events[(events["rank"] == 0) & (events["step"] >= 0)]


def _dead_ms(ev: pd.DataFrame) -> float:
    """Median per step of the training thread's time with no op and no comm in flight."""
    steps = ev[ev["kind"] == "step"]
    main = int(steps["lane"].iloc[0])
    busy = ev[((ev["lane"] == main) & ~ev["kind"].isin(["annotation", "step"]))
              | (ev["kind"] == "comm")]
    s, e = union(busy["ts_ns"].to_numpy(), busy["end_ns"].to_numpy())
    out = []
    for w in steps.itertuples():
        lo, hi = np.clip(s, w.ts_ns, w.end_ns), np.clip(e, w.ts_ns, w.end_ns)
        out.append((w.end_ns - w.ts_ns - int((hi - lo).sum())) / 1e6)
    return float(np.median(out))


def _profile(ev: pd.DataFrame) -> dict:
    ev = _rank0(ev)
    names = ev["name"].astype(str)
    steps = ev[ev["kind"] == "step"]
    n_steps = max(1, len(steps))
    first_bwd = ev[names.str.contains("Backward0")].groupby("step")["ts_ns"].min()
    start = steps.set_index("step")["ts_ns"]
    fwd = ((first_bwd - start.reindex(first_bwd.index)) / 1e6).median()
    ops = {}
    for n in (*HOST_OPS, "gloo:all_gather", "gloo:all_reduce"):
        d = ev.loc[names == n, "dur_ns"] / 1e6
        if len(d):
            ops[n] = (len(d) / n_steps, float(d.median()), float(d.mean()))
    return {"step": float(steps["dur_ns"].median() / 1e6), "forward": float(fwd),
            "ops": ops, "dead": _dead_ms(ev)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cell", type=Path)
    ap.add_argument("--what-if", default="fsdp=Linear")
    args = ap.parse_args()
    options = PredictionOptions(comm_model=str(args.cell / "comm.json"))
    predicted = Session(args.cell / "baseline", options).what_ifs([args.what_if])[0]
    measured = Session(args.cell / "baseline-fsdp", options)
    p = _profile(predicted.result.timeline)
    m = _profile(measured.run.events)
    print(f"{args.cell.name}: {args.what_if} predicted vs measured FSDP2 (profiled), rank 0")
    print(f"  step     {p['step']:8.1f} ms  vs {m['step']:8.1f} ms")
    print(f"  forward  {p['forward']:8.1f} ms  vs {m['forward']:8.1f} ms")
    print(f"  host dead time per step {p['dead']:6.1f} ms  vs {m['dead']:6.1f} ms")
    print(f"  {'op':30} {'calls/step':>10} {'median ms':>20} {'mean ms':>20}")
    for n in m["ops"]:
        pc, pm, pa = p["ops"].get(n, (0, float("nan"), float("nan")))
        mc, mm, ma = m["ops"][n]
        print(f"  {n:30} {pc:4.0f} /{mc:4.0f} {pm:9.2f} /{mm:9.2f} {pa:9.2f} /{ma:9.2f}")


if __name__ == "__main__":
    main()
