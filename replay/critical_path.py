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
#: edges looked at together by :func:`binding_predecessors`
_EDGE_CHUNK = 1 << 18


def binding_predecessors(graph: Graph, sched: Schedule) -> np.ndarray:
    """``pred[v]``: the node whose end (plus edge delay) set ``v``'s start, -1 if none.

    Per target, the first edge (in edge order) with the latest ``end + delay``, if that
    is when the target was ready. Edges of a built graph are sorted by target: they are
    read :data:`_EDGE_CHUNK` at a time, each chunk whole targets, so the scratch arrays
    are a chunk's, whatever the graph's size (otherwise two passes over all edges)."""
    n = graph.n_nodes
    pred = np.full(n, -1, dtype=np.int64)
    m = graph.n_edges
    if m == 0 or n == 0:
        return pred
    dst_all = graph.dst
    if m > 1 and not bool((dst_all[1:] >= dst_all[:-1]).all()):
        _bind_unsorted(graph, sched, pred)
    else:
        lo = 0
        while lo < m:
            hi = min(lo + _EDGE_CHUNK, m)
            if hi < m:  # end the chunk where a target's edges end
                hi = int(np.searchsorted(dst_all, dst_all[hi - 1], side="right"))
            src, dst, val = _edges(graph, sched, lo, hi)
            base = int(dst[0])
            local = dst - base
            best = np.full(int(dst[-1]) - base + 1, np.iinfo(np.int64).min, dtype=np.int64)
            np.maximum.at(best, local, val)
            top = np.flatnonzero(val == best[local])
            best_dst, first = _first_of_each(dst[top])
            hit = best[best_dst - base] == sched.ready_ns[best_dst]
            pred[best_dst[hit]] = src[top[first[hit]]]
            lo = hi
    # collective participants that waited: bound by the last arrival's predecessor
    coll = np.asarray(graph.coll_id)
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


def _edges(graph: Graph, sched: Schedule, lo: int, hi: int):
    """``(src, dst, end[src] + delay)`` of edges ``lo..hi-1`` (int64)."""
    src = np.asarray(graph.src[lo:hi], dtype=np.int64)
    dst = np.asarray(graph.dst[lo:hi], dtype=np.int64)
    return src, dst, sched.end_ns[src] + np.asarray(graph.delay_ns[lo:hi], dtype=np.int64)


def _bind_unsorted(graph: Graph, sched: Schedule, pred: np.ndarray) -> None:
    """:func:`binding_predecessors`' edge pass for edges not sorted by target: the
    latest ``end + delay`` per target over every edge, then per target its first edge
    that reaches it, :data:`_EDGE_CHUNK` edges at a time."""
    n, m = graph.n_nodes, graph.n_edges
    chunks = [(lo, min(lo + _EDGE_CHUNK, m)) for lo in range(0, m, _EDGE_CHUNK)]
    best = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    for lo, hi in chunks:
        _, dst, val = _edges(graph, sched, lo, hi)
        np.maximum.at(best, dst, val)
    binds = best == sched.ready_ns  # the latest predecessor is what the node waited for
    seen = np.zeros(n, dtype=bool)  # a target whose first latest edge was found
    for lo, hi in chunks:
        src, dst, val = _edges(graph, sched, lo, hi)
        top = np.flatnonzero(val == best[dst])
        best_dst, first = _first_of_each(dst[top])
        new = ~seen[best_dst]
        best_dst, first = best_dst[new], first[new]
        seen[best_dst] = True
        hit = binds[best_dst]
        pred[best_dst[hit]] = src[top[first[hit]]]


def _first_of_each(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_index=True)`` (each distinct key, ascending, and where it
    first occurs) without its scratch arrays: one stable sort, none for sorted keys."""
    order = None
    if len(keys) > 1 and not bool((keys[1:] >= keys[:-1]).all()):
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(
        keys) else np.zeros(0, dtype=np.int64)
    return keys[first], first if order is None else order[first]


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
    p = np.asarray(path, dtype=np.int64)
    dur = sched.end_ns[p] - sched.start_ns[p]
    gap = np.zeros(len(p), dtype=np.int64)
    gap[1:] = sched.start_ns[p[1:]] - sched.end_ns[p[:-1]]
    by_kind = _sums(graph.kind[p], dur, lambda k: _KIND_NAMES[int(k)])
    if len(p) > 1:
        by_kind["gap"] = int(gap[1:].sum())
    by_lane = _sums(graph.lane[p], dur, lambda ln: graph.lanes[int(ln)].label)
    # a gap belongs to the rank of the node it delays
    by_rank = _sums(graph.rank[p], dur + gap, int)
    total = int(sched.end_ns[path[-1]] - sched.start_ns[path[0]]) if path else 0
    return CriticalPath(nodes=path, by_kind_ns=by_kind, by_lane_ns=by_lane, total_ns=total,
                        by_rank_ns=by_rank)


def _sums(keys: np.ndarray, values: np.ndarray, label) -> dict:
    """``{label(key): sum of values}`` in order of first appearance along the path."""
    if len(keys) == 0:
        return {}
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    totals = np.bincount(inv.ravel(), weights=values, minlength=len(uniq))
    out: dict = {}
    for i in np.argsort(first, kind="stable"):
        name = label(uniq[i])
        out[name] = out.get(name, 0) + int(round(totals[i]))
    return out


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
