"""FSDP2 (``fully_shard``) in a graph: which collective is which unit's forward
all-gather, backward re-gather or gradient reduce-scatter, and the host work around each.

FSDP2 names its host work with ``record_function`` ranges (torch 2.13,
``_fsdp_param_group.py``), ``<label> (<module fqn>)`` (the root has no fqn)::

    FSDP::pre_forward (2)                 a unit's pre-forward hook
      FSDP::all_gather (2)                  copy-in + c10d::_allgather_base_ (issues the AG)
      FSDP::all_gather_copy_out (2)         waits for the AG, copies out the parameters
    FSDP::pre_backward (2)                its pre-backward hook (re-gathers when resharded)
    FSDP::backward_prefetch for 0         issues the next unit's backward AG early
      FSDP::all_gather (0)
    FSDP::post_backward_reduce (2)        chunk-cat + c10d::_reduce_scatter_base_ + copy

:func:`find_fsdp` reads these ranges from the run's events (or any table of annotations,
see :func:`annotation_table`) and the graph's nodes into an :class:`FSDPGraph`: per rank
and step, every FSDP collective with its unit, its phase (``forward``, ``backward``:
an all-gather in a pre-backward hook or a backward prefetch; ``reduce``: the
reduce-scatter), its comm node, the host nodes that issued it and the host nodes that
waited for it and copied out. These carry the dependencies FSDP imposes: a unit's
all-gather comes before its first forward op (the copy-out waits for it on the same
thread), its backward all-gather before its backward, its reduce-scatter after its last
gradient (the post-backward hook runs once they are all ready), the optimizer step after
the last reduce-scatter (FSDP's root post-backward callback waits for it). The what-ifs
``reshard=`` and ``fsdp=CLASS`` edit exactly these nodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tracekit.graph.model import EdgeKind, Graph, NodeKind

#: ``FSDP::all_gather (layers.0)`` -> label, unit ('' for the root)
_LABEL = re.compile(r"^FSDP::(?P<label>[a-z_]+)(?: \((?P<unit>.*)\))?$")
_PREFETCH = re.compile(r"^FSDP::(?P<pass>forward|backward)_prefetch for (?P<unit>.*)$")
FORWARD, BACKWARD, REDUCE = "forward", "backward", "reduce"


@dataclass(frozen=True, kw_only=True)
class FSDPCollective:
    """One FSDP collective of one rank in one step (node ids of the graph)."""

    unit: str
    #: ``forward`` / ``backward`` (all-gathers) or ``reduce`` (the reduce-scatter)
    phase: str
    comm: int
    #: host nodes of the issuing range (copy-in and the c10d issue op), in lane order
    host: tuple[int, ...]
    #: host nodes of the copy-out that waits for an all-gather (() for a reduce-scatter)
    copy_out: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RankStepFSDP:
    rank: int
    step: int
    #: the thread that runs FSDP's hooks (the main thread)
    lane: int
    collectives: tuple[FSDPCollective, ...]
    #: unit -> first node of the lane at or after its pre-backward hook began
    pre_backward: dict[str, int] = field(default_factory=dict)

    def find(self, unit: str, phase: str) -> FSDPCollective | None:
        return next((c for c in self.collectives if c.unit == unit and c.phase == phase),
                    None)


@dataclass(frozen=True, kw_only=True)
class FSDPGraph:
    """FSDP's collectives in every replayed step of every rank."""

    per_rank_step: dict[tuple[int, int], RankStepFSDP]
    #: units in forward order (the order of their forward all-gathers)
    units: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        out = {FORWARD: 0, BACKWARD: 0, REDUCE: 0}
        for rs in self.per_rank_step.values():
            for c in rs.collectives:
                out[c.phase] += 1
        return out

    def describe(self) -> str:
        n = self.counts()
        return (f"FSDP: {len(self.units)} unit(s) with parameters; {n[FORWARD]} forward and "
                f"{n[BACKWARD]} backward all-gather(s), {n[REDUCE]} reduce-scatter(s) over "
                f"{len(self.per_rank_step)} rank-step(s)")


def annotation_table(run) -> pd.DataFrame:
    """The run's FSDP ranges: ``rank``, ``tid`` (the thread), ``name``, ``ts_ns``,
    ``end_ns``, sorted by rank and start."""
    ev = run.events
    names = ev["name"]
    if isinstance(names.dtype, pd.CategoricalDtype):  # test each distinct name once
        ranges = [c for c in names.cat.categories if str(c).startswith("FSDP::")]
        mask = names.isin(ranges).to_numpy()
    else:
        mask = names.astype(str).str.startswith("FSDP::").to_numpy()
    sel = ev[mask]
    return pd.DataFrame({"rank": sel["rank"].to_numpy(), "tid": sel["lane"].to_numpy(),
                         "name": sel["name"].astype(str).to_numpy(),
                         "ts_ns": sel["ts_ns"].to_numpy(),
                         "end_ns": sel["ts_ns"].to_numpy() + sel["dur_ns"].to_numpy()}
                        ).sort_values(["rank", "ts_ns"], kind="stable")


def find_fsdp(run, graph: Graph, annotations: pd.DataFrame | None = None) -> FSDPGraph | None:
    """FSDP's collectives in ``graph`` (see module doc); None when the run has no FSDP
    ranges. ``annotations`` defaults to :func:`annotation_table` of ``run``."""
    ann = annotation_table(run) if annotations is None else annotations
    if ann.empty:
        return None
    issue_of = _issued_comm(graph)
    per: dict[tuple[int, int], RankStepFSDP] = {}
    order: dict[str, float] = {}
    for lane in graph.lanes:
        if lane.kind != "cpu":
            continue
        mine = ann[(ann["rank"] == lane.rank) & (ann["tid"] == lane.local_id)]
        if mine.empty:
            continue
        nodes = np.flatnonzero(graph.lane == lane.id)
        nodes = nodes[np.argsort(graph.start_ns[nodes], kind="stable")]
        for step in np.unique(graph.step[nodes]):
            if step < 0:
                continue
            on = nodes[graph.step[nodes] == step]
            rs = _rank_step(graph, mine, on, issue_of, lane.rank, int(step), lane.id)
            if rs is not None and rs.collectives:
                per[(lane.rank, int(step))] = rs
                for k, c in enumerate(rs.collectives):
                    if c.phase == FORWARD:
                        order.setdefault(c.unit, k)
    if not per:
        return None
    return FSDPGraph(per_rank_step=per, units=tuple(sorted(order, key=order.get)))


def _issued_comm(graph: Graph) -> dict[int, int]:
    """Issue node -> the comm node its ISSUE (or LAUNCH) edge starts."""
    sel = np.flatnonzero(np.isin(graph.edge_kind, [int(EdgeKind.ISSUE), int(EdgeKind.LAUNCH)]))
    out = {}
    for s, d in zip(graph.src[sel].tolist(), graph.dst[sel].tolist()):
        if graph.kind[d] == NodeKind.COMM:
            out.setdefault(s, d)
    return out


def _inside(graph: Graph, on: np.ndarray, ts: int, end: int) -> np.ndarray:
    starts = graph.start_ns[on]
    lo, hi = np.searchsorted(starts, [ts, end], side="left")
    return on[lo:hi]


def _rank_step(graph: Graph, ann: pd.DataFrame, on: np.ndarray, issue_of: dict[int, int],
               rank: int, step: int, lane: int) -> RankStepFSDP | None:
    if len(on) == 0:
        return None
    t0, t1 = int(graph.start_ns[on[0]]), int(graph.measured_end_ns[on[-1]])
    mine = ann[(ann["end_ns"] >= t0) & (ann["ts_ns"] <= t1)]
    backward_ranges: list[tuple[int, int]] = []
    pre_backward: dict[str, int] = {}
    gathers: list[tuple[int, str, tuple[int, ...], int]] = []
    reduces: list[FSDPCollective] = []
    copy_outs: list[tuple[int, str, tuple[int, ...]]] = []
    for name, ts, end in zip(mine["name"], mine["ts_ns"].tolist(), mine["end_ns"].tolist()):
        m = _LABEL.match(name)
        p = _PREFETCH.match(name)
        if p is not None and p["pass"] == "backward":
            backward_ranges.append((ts, end))
            continue
        if m is None:
            continue
        label, unit = m["label"], m["unit"] or ""
        inside = _inside(graph, on, ts, end)
        comm = next((issue_of[int(v)] for v in inside if int(v) in issue_of), None)
        if label == "pre_backward":
            backward_ranges.append((ts, end))
            first = _inside(graph, on, ts, t1 + 1)
            if len(first):
                pre_backward.setdefault(unit, int(first[0]))
        elif label == "all_gather" and comm is not None:
            gathers.append((ts, unit, tuple(int(v) for v in inside), comm))
        elif label == "all_gather_copy_out":
            copy_outs.append((ts, unit, tuple(int(v) for v in inside)))
        elif label == "post_backward_reduce" and comm is not None:
            reduces.append(FSDPCollective(unit=unit, phase=REDUCE, comm=comm,
                                          host=tuple(int(v) for v in inside)))
    out = []
    for ts, unit, host, comm in gathers:
        phase = BACKWARD if any(a <= ts <= b for a, b in backward_ranges) else FORWARD
        later = [c for c in copy_outs if c[1] == unit and c[0] >= ts]
        copy = min(later)[2] if later else ()
        if later:
            copy_outs.remove(min(later))
        out.append(FSDPCollective(unit=unit, phase=phase, comm=comm, host=host,
                                  copy_out=copy))
    return RankStepFSDP(rank=rank, step=step, lane=lane, collectives=tuple(out + reduces),
                        pre_backward=pre_backward)
