"""Critical path of a replayed schedule: the chain of work that decided when a step ended.

For every node the *binding predecessor* is the incoming edge (lane order or any other)
whose ``end + delay`` equals the node's start; a collective participant that waited for
its peers is bound by the predecessor of the participant that arrived last (the path hops
to that rank). A node with no binding predecessor was released at its measured start.

The critical path of step N starts at the node of step N that ends last and follows
binding predecessors back until it leaves step N. Accounting: each node's duration counts
for its kind and its lane; the time between a predecessor's end and the node's start
counts as ``'gap'``.

Example (one rank)::

    kernel A [0, 10] -> launch delay -> kernel B [12, 30]    ends last
    path [A, B]; by_kind {'compute': 28, 'gap': 2}; total 30
"""

from __future__ import annotations

import numpy as np

from replay.engine import Schedule
from replay.result import CriticalPath
from tracekit.graph.model import Graph, NodeKind

_KIND_NAMES = {k.value: k.name.lower() for k in NodeKind}


def binding_predecessors(graph: Graph, sched: Schedule) -> np.ndarray:
    """``pred[v]``: the node whose end (plus edge delay) set ``v``'s start, -1 if none."""
    n = graph.n_nodes
    pred = np.full(n, -1, dtype=np.int64)
    if graph.n_edges == 0 or n == 0:
        return pred
    src = np.asarray(graph.src, dtype=np.int64)
    dst = np.asarray(graph.dst, dtype=np.int64)
    val = sched.end_ns[src] + np.asarray(graph.delay_ns, dtype=np.int64)
    order = np.lexsort((-val, dst))
    d_sorted, v_sorted, s_sorted = dst[order], val[order], src[order]
    first = np.flatnonzero(np.concatenate([[True], d_sorted[1:] != d_sorted[:-1]]))
    best_dst, best_val, best_src = d_sorted[first], v_sorted[first], s_sorted[first]
    hit = best_val == sched.ready_ns[best_dst]
    pred[best_dst[hit]] = best_src[hit]
    # collective participants that waited: bound by the last arrival's predecessor
    coll = np.asarray(graph.coll_id, dtype=np.int64)
    waited = np.flatnonzero((coll >= 0) & (sched.start_ns > sched.ready_ns))
    if len(waited):
        members = np.flatnonzero(coll >= 0)
        o = np.lexsort((-sched.ready_ns[members], coll[members]))
        m_sorted = members[o]
        c_sorted = coll[m_sorted]
        firsts = np.flatnonzero(np.concatenate([[True], c_sorted[1:] != c_sorted[:-1]]))
        last_arrival = m_sorted[firsts]
        which = np.searchsorted(c_sorted[firsts], coll[waited])
        pred[waited] = pred[last_arrival[which]]
    return pred


def _path_of(graph: Graph, sched: Schedule, pred: np.ndarray, nodes: np.ndarray) -> list[int]:
    """Backtrack from the node of ``nodes`` that ends last, staying inside ``nodes``."""
    if len(nodes) == 0:
        return []
    inside = np.zeros(graph.n_nodes, dtype=bool)
    inside[nodes] = True
    v = int(nodes[np.argmax(sched.end_ns[nodes])])
    path = []
    for _ in range(graph.n_nodes):
        path.append(v)
        u = int(pred[v])
        if u < 0 or not inside[u]:
            break
        v = u
    path.reverse()
    return path


def summarize_path(graph: Graph, sched: Schedule, path: list[int]) -> CriticalPath:
    """Accounting of one path (see module doc)."""
    by_kind: dict[str, int] = {}
    by_lane: dict[str, int] = {}
    by_rank: dict[int, int] = {}
    for i, v in enumerate(path):
        dur = int(sched.end_ns[v] - sched.start_ns[v])
        k = _KIND_NAMES[int(graph.kind[v])]
        by_kind[k] = by_kind.get(k, 0) + dur
        label = graph.lanes[int(graph.lane[v])].label
        by_lane[label] = by_lane.get(label, 0) + dur
        gap = int(sched.start_ns[v] - sched.end_ns[path[i - 1]]) if i else 0
        if i:
            by_kind["gap"] = by_kind.get("gap", 0) + gap
        r = int(graph.rank[v])  # a gap belongs to the rank of the node it delays
        by_rank[r] = by_rank.get(r, 0) + dur + gap
    total = int(sched.end_ns[path[-1]] - sched.start_ns[path[0]]) if path else 0
    return CriticalPath(nodes=path, by_kind_ns=by_kind, by_lane_ns=by_lane, total_ns=total,
                        by_rank_ns=by_rank)


def critical_paths(graph: Graph, sched: Schedule) -> dict[int, CriticalPath]:
    """The critical path of every step of the graph, by step number."""
    pred = binding_predecessors(graph, sched)
    out = {}
    steps = np.asarray(graph.step)
    for s in np.unique(steps):
        path = _path_of(graph, sched, pred, np.flatnonzero(steps == s))
        out[int(s)] = summarize_path(graph, sched, path)
    return out


def merge_paths(paths: list[CriticalPath]) -> CriticalPath:
    """One :class:`CriticalPath` for several steps: nodes concatenated, times summed."""
    nodes: list[int] = []
    by_kind: dict[str, int] = {}
    by_lane: dict[str, int] = {}
    by_rank: dict[int, int] = {}
    total = 0
    for p in paths:
        nodes.extend(p.nodes)
        for acc, part in ((by_kind, p.by_kind_ns), (by_lane, p.by_lane_ns),
                          (by_rank, p.by_rank_ns)):
            for k, v in part.items():
                acc[k] = acc.get(k, 0) + v
        total += p.total_ns
    return CriticalPath(nodes=nodes, by_kind_ns=by_kind, by_lane_ns=by_lane, total_ns=total,
                        by_rank_ns=by_rank)
