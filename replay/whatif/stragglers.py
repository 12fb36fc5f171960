"""``stragglers=off``: every rank runs each compute op as fast as the fastest rank runs it.

Ops are matched across ranks by their position in the step: the k-th compute node of
step s on a rank's j-th compute lane (lanes of a rank in id order: its main thread, its
first stream, ...) is the same op on every rank when it has the same name there. An op
that some rank does not have at that position (different control flow, a missing
kernel) keeps its own duration, and the notes say how many could not be matched.

*The fastest rank* is chosen per lane ordinal, once for the whole run: the rank whose
matched ops on that lane take the least time per step (median over steps). Every rank's
matched op then takes that rank's duration of the same op in the same step. Taking, per
op, the shortest of the ranks' durations instead would pick the luckiest of N noisy
samples of every op: on a balanced 2-rank CPU run that predicted 1.03-1.20x for removing
a straggler there is not (``tracekit replay RUN --what-if stragglers=off`` on
``benchmarks/whatif_accuracy.py``'s balanced baselines); the fastest rank's own samples
keep its step-to-step spread and no bias.

Before/after (two ranks, one step; rank 1 runs its matmul 3x slower)::

    rank 0: aten::mm 1.0 ms, aten::relu 0.1 ms       rank 0: unchanged
    rank 1: aten::mm 3.0 ms, aten::relu 0.1 ms  ->   rank 1: aten::mm 1.0 ms, aten::relu 0.1 ms

Balanced but noisy (the same total; each rank is faster in one op)::

    rank 0: op A 1.0 ms, op B 2.0 ms                 rank 0: unchanged (the fastest rank)
    rank 1: op A 2.0 ms, op B 1.1 ms            ->   rank 1: op A 1.0 ms, op B 2.0 ms
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.variant_edit import VariantEdit
from tracekit.errors import TracekitError
from tracekit.graph.model import Graph, NodeKind


def op_positions(graph: Graph) -> pd.DataFrame:
    """Every compute node with what matches it across ranks.

    Columns: ``node``, ``rank``, ``lane``, ``step``, ``name`` (name id), ``start``,
    ``lane_ord`` (the lane's ordinal among the rank's compute lanes, in id order) and
    ``pos`` (its position on that lane within the step). Nodes of different ranks with
    the same ``(step, lane_ord, pos)`` are the same op when their names agree."""
    comp = np.flatnonzero(graph.kind == NodeKind.COMPUTE)
    df = pd.DataFrame({"node": comp, "rank": graph.rank[comp], "lane": graph.lane[comp],
                       "step": graph.step[comp], "name": graph.name[comp],
                       "start": graph.start_ns[comp]})
    lanes = df[["rank", "lane"]].drop_duplicates().sort_values(["rank", "lane"])
    lanes["lane_ord"] = lanes.groupby("rank").cumcount()
    df = df.merge(lanes, on=["rank", "lane"], how="left")
    df = df.sort_values(["rank", "lane", "step", "start", "node"], kind="stable")
    df["pos"] = df.groupby(["rank", "lane", "step"]).cumcount()
    return df.reset_index(drop=True)


@dataclass(frozen=True, kw_only=True)
class FastestOps:
    """What :func:`fastest_durations` did."""

    #: per node, its new duration (ns)
    dur_ns: np.ndarray
    #: compute ops matched across ranks (they took the fastest rank's time)
    matched: int
    #: compute ops some rank lacks at that position (they kept their own)
    unmatched: int
    #: lane ordinal (0: each rank's first compute lane, its main thread) -> fastest rank
    fastest: dict[int, int]


def fastest_durations(graph: Graph, dur_ns: np.ndarray) -> FastestOps:
    """Per compute node, the duration of the same op on the fastest rank of its lane
    ordinal, in the same step (see module doc)."""
    df = op_positions(graph)
    out = np.asarray(dur_ns, dtype=np.int64).copy()
    if df.empty:
        return FastestOps(dur_ns=out, matched=0, unmatched=0, fastest={})
    df["dur"] = out[df["node"].to_numpy()]
    key = ["step", "lane_ord", "pos"]
    n_ranks = df["rank"].nunique()
    groups = df.groupby(key)
    same = ((groups["name"].transform("nunique") == 1)
            & (groups["rank"].transform("nunique") == n_ranks)).to_numpy()
    matched = df[same]
    if matched.empty:
        return FastestOps(dur_ns=out, matched=0, unmatched=int(len(df)), fastest={})
    per_step = matched.groupby(["lane_ord", "rank", "step"])["dur"].sum()
    typical = per_step.groupby(["lane_ord", "rank"]).median().reset_index()
    fastest = typical.loc[typical.groupby("lane_ord")["dur"].idxmin(), ["lane_ord", "rank"]]
    ref = matched.merge(fastest, on=["lane_ord", "rank"])  # the fastest rank's own ops
    taken = matched[key].merge(ref[[*key, "dur"]], on=key, how="left")["dur"]
    out[matched["node"].to_numpy()] = taken.to_numpy(dtype=np.int64)
    return FastestOps(dur_ns=out, matched=int(same.sum()), unmatched=int((~same).sum()),
                      fastest={int(o): int(r) for o, r in zip(fastest["lane_ord"],
                                                             fastest["rank"])})


@register
@dataclass(frozen=True, kw_only=True)
class Stragglers(WhatIf):
    """``stragglers=off``: no rank computes slower than the fastest one."""

    key = "stragglers"
    syntax = "stragglers=off"
    example = "stragglers=off"
    summary = ("every rank runs each compute op as fast as the fastest rank runs the same op "
               "(ops matched by position in the step)")
    stage = Stage.DEVICES

    @classmethod
    def parse(cls, value: str) -> Stragglers:
        if value.strip().lower() != "off":
            raise TracekitError(f"cannot read stragglers={value!r}; expected stragglers=off "
                                "(the run as recorded is the baseline)")
        return cls()

    @property
    def label(self) -> str:
        return "stragglers=off"

    def apply(self, edit: VariantEdit) -> None:
        done = fastest_durations(edit.graph, edit.dur_ns)
        edit.dur_ns = done.dur_ns
        ranks = sorted(set(done.fastest.values()))
        who = (f"rank {ranks[0]}'s" if len(ranks) == 1 else
               "the fastest rank's (" + ", ".join(f"lane {o}: rank {r}" for o, r in
                                                  sorted(done.fastest.items())) + ")")
        note = (f"stragglers=off: {done.matched} compute op(s) take their fastest rank's "
                f"time: {who}, the least compute per step")
        if done.unmatched:
            note += (f"; {done.unmatched} could not be matched across ranks by position in "
                     "the step and keep their own")
        edit.notes.append(note)
