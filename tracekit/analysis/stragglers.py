"""Stragglers: the ranks whose compute per step exceeds the fastest rank's, and the ops
behind the excess.

A data-parallel step ends when the slowest rank's gradients arrive, so a rank that
computes longer holds every rank back. Per rank, the compute time of a step is the
summary's (:mod:`tracekit.analysis.breakdown`); a rank is a straggler when its median
over the steps every rank has exceeds the fastest rank's by more than
:data:`THRESHOLD`. The excess is split by op name: per step, the total time of each
outermost compute op (GPU: kernels; CPU: operators on the main thread that no other
operator contains) on the straggler minus the same on the fastest rank, median over
steps; the ops with the largest excess are listed.

Before (median compute per step, ms) / after::

    rank 0: 40.1   rank 1: 52.3   rank 2: 40.6
    -> [Straggler(rank=1, excess_ms=12.2, top_ops=[("aten::addmm", 9.8), ...])]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tracekit.core.run import Run
from tracekit.core.schema import EventKind, LaneKind
from tracekit.core.threads import main_threads
from tracekit.core.waits import waits_for_comm

#: a rank whose compute exceeds the fastest rank's by more than this fraction straggles
THRESHOLD = 0.05
#: how many ops are listed per straggler
TOP_OPS = 5
_GPU_COMPUTE = (EventKind.KERNEL.value, EventKind.MEMCPY.value, EventKind.MEMSET.value)


@dataclass(frozen=True, kw_only=True)
class Straggler:
    """One rank that computes longer than the fastest one."""

    rank: int
    #: median compute per step over the fastest rank's, ms
    excess_ms: float
    compute_ms: float
    fastest_rank: int
    fastest_ms: float
    #: (op name, excess ms per step), largest first
    top_ops: list[tuple[str, float]]

    def to_json(self) -> dict:
        return {"rank": self.rank, "excess_ms": round(self.excess_ms, 6),
                "excess_pct": round(self.excess_ms / self.fastest_ms * 100, 3)
                if self.fastest_ms > 0 else None,
                "compute_ms": round(self.compute_ms, 6), "fastest_rank": self.fastest_rank,
                "fastest_ms": round(self.fastest_ms, 6),
                "top_ops": [{"name": n, "excess_ms": round(v, 6)} for n, v in self.top_ops]}


def _outermost(ts: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Of intervals sorted by (start, -length): those no earlier interval contains."""
    reach = np.maximum.accumulate(end) if len(end) else end
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] >= reach[:-1]
    return keep


def op_time_per_step(run: Run, rank: int, windows: pd.DataFrame) -> pd.DataFrame:
    """Total time of each outermost compute op name in each step of ``rank``: columns
    step, name, ms. ``windows``: the rank's rows of the summary (step, start_ns, end_ns)."""
    ev = run.rank_events(rank)
    kind = ev["kind"].to_numpy().astype(str)
    gpu = ev["lane_kind"].to_numpy().astype(str) == LaneKind.GPU.value
    if gpu.any():
        sel = ev[gpu & np.isin(kind, _GPU_COMPUTE)]
    else:
        main = main_threads(ev).get(rank, -1)
        ops = (ev["lane"].to_numpy() == main) & (kind == EventKind.CPU_OP.value)
        sel = ev[ops & ~waits_for_comm(ev["name"].to_numpy())]  # waiting is not compute
    sel = sel.sort_values(["ts_ns", "dur_ns"], ascending=[True, False])
    ts, end = sel["ts_ns"].to_numpy(), sel["end_ns"].to_numpy()
    if not gpu.any():  # nested CPU operators are counted once, at the outermost
        keep = _outermost(ts, end)
        sel, ts, end = sel[keep], ts[keep], end[keep]
    parts = []
    for step, lo, hi in windows[["step", "start_ns", "end_ns"]].itertuples(index=False):
        inside = (ts >= lo) & (ts < hi)
        dur = (np.minimum(end[inside], hi) - ts[inside]) / 1e6
        parts.append(pd.DataFrame({"step": step, "name": sel["name"].astype(str)
                                   .to_numpy()[inside], "ms": dur}))
    if not parts:
        return pd.DataFrame(columns=["step", "name", "ms"])
    return pd.concat(parts).groupby(["step", "name"], as_index=False)["ms"].sum()


def _top_ops(run: Run, rank: int, fastest: int, steps_df: pd.DataFrame,
             common: list[int]) -> list[tuple[str, float]]:
    def per_step(r: int) -> pd.DataFrame:
        rows = steps_df[(steps_df["rank"] == r) & steps_df["step"].isin(common)]
        t = op_time_per_step(run, r, rows)
        return t.pivot_table(index="step", columns="name", values="ms", aggfunc="sum",
                             fill_value=0.0)

    mine, theirs = per_step(rank), per_step(fastest)
    names = mine.columns.union(theirs.columns)
    mine = mine.reindex(index=common, columns=names, fill_value=0.0)
    theirs = theirs.reindex(index=common, columns=names, fill_value=0.0)
    excess = (mine - theirs).median(axis=0).sort_values(ascending=False)
    return [(str(n), float(v)) for n, v in excess.items() if v > 0][:TOP_OPS]


def find_stragglers(run: Run, steps_df: pd.DataFrame, *,
                    threshold: float = THRESHOLD) -> list[Straggler]:
    """The stragglers of ``run``, largest excess first (see module doc); ``steps_df`` is
    :attr:`tracekit.analysis.breakdown.Summary.steps`."""
    if steps_df.empty or steps_df["rank"].nunique() < 2:
        return []
    n_ranks = steps_df["rank"].nunique()
    per_step = steps_df.groupby("step")["rank"].nunique()
    common = sorted(int(s) for s in per_step.index[per_step == n_ranks])
    if not common:
        return []
    rows = steps_df[steps_df["step"].isin(common)]
    compute = rows.groupby("rank")["compute_ms"].median()
    fastest = int(compute.idxmin())
    base = float(compute[fastest])
    out = []
    for rank, ms in compute.items():
        if rank == fastest or not ms > base * (1 + threshold):
            continue
        out.append(Straggler(rank=int(rank), excess_ms=float(ms - base), compute_ms=float(ms),
                             fastest_rank=fastest, fastest_ms=base,
                             top_ops=_top_ops(run, int(rank), fastest, steps_df, common)))
    return sorted(out, key=lambda s: -s.excess_ms)
