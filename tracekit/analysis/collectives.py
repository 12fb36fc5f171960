"""Collectives by type, with the algorithm and protocol NCCL ran them with: what
``tracekit summary`` lists under its step table (and under ``collectives`` in --json).

The algorithm and protocol come from NCCL's log when the run folder has one (its tuning
lines, attached by :mod:`tracekit.core.nccl_attach`), else from the kernel name
(``ncclKernel_AllReduce_RING_LL_Sum_float``: ring, LL), else they are unknown ('').

Example (one row per collective, algorithm and protocol)::

    >>> collective_table(run)                                   # doctest: +SKIP
    [{"collective": "all_reduce", "algorithm": "ring", "protocol": "ll", "calls": 36,
      "median_bytes": 1048576, "total_ms": 12.5, "source": "NCCL log"}, ...]
"""

from __future__ import annotations

import numpy as np

from tracekit.core.run import Run
from tracekit.core.schema import EventKind, LaneKind


def collective_table(run: Run) -> list[dict]:
    """One row per (collective, algorithm, protocol) of the run's device collectives, in
    order of total time; [] when the run has none (a CPU / gloo run: gloo has no such
    choice)."""
    ev = run.events
    comm = ev[(ev["kind"] == EventKind.COMM.value) & (ev["lane_kind"] == LaneKind.GPU.value)]
    if comm.empty:
        return []
    logged = comm["nccl_comm"].astype(str).to_numpy() != ""
    algo = comm["nccl_algo"].astype(str).to_numpy()
    known = algo != ""
    source = np.where(known & logged, "NCCL log", np.where(known, "kernel name", ""))
    frame = comm.assign(collective=comm["collective"].astype(str), algorithm=algo,
                        protocol=comm["nccl_proto"].astype(str).to_numpy(), source=source)
    rows = []
    for (coll, a, p), g in frame.groupby(["collective", "algorithm", "protocol"], sort=False):
        sizes = g["comm_bytes"].to_numpy()
        sizes = sizes[sizes >= 0]
        channels = g["nccl_channels"].to_numpy()
        channels = channels[channels >= 0]
        rows.append({
            "collective": coll, "algorithm": a, "protocol": p, "calls": int(len(g)),
            "median_bytes": int(np.median(sizes)) if len(sizes) else -1,
            "channels": int(np.median(channels)) if len(channels) else -1,
            "total_ms": round(float(g["dur_ns"].sum()) / 1e6, 6),
            "source": str(g["source"].mode().iat[0]) if len(g) else "",
        })
    rows.sort(key=lambda r: -r["total_ms"])
    return rows


def format_collective_table(rows: list[dict]) -> list[str]:
    """The lines ``tracekit summary`` prints for :func:`collective_table`."""
    if not rows:
        return []
    out = ["", f"{'collective':<16} {'algorithm':<15} {'protocol':<9} {'calls':>6} "
               f"{'median bytes':>13} {'channels':>8} {'total ms':>10}  source"]
    for r in rows:
        out.append(f"{r['collective']:<16} {r['algorithm'] or '?':<15} {r['protocol'] or '?':<9} "
                   f"{r['calls']:>6} {r['median_bytes']:>13} "
                   f"{r['channels'] if r['channels'] >= 0 else '?':>8} {r['total_ms']:>10.3f}  "
                   f"{r['source'] or 'unknown'}")
    return out
