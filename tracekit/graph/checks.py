"""Structural checks of a graph, with messages that name the nodes at fault.

:func:`check_structure` returns every structural problem found (or raises the first as a
:class:`TracekitError`): arrays of inconsistent length, dangling edges, unknown lanes,
lane-order edges that are not chains, negative durations, two participants of one
collective on the same lane. Whether the graph can be ordered at all (no cycles) takes a
replay: :func:`replay.checks.check_graph` runs these checks and then the engine.

Cycles are found by the replay engine (it finishes every node not on or behind a cycle);
:func:`cycle_message` then walks back from an unfinished node through unfinished
predecessors until a node repeats (:func:`find_cycle`); the participants of a collective
count as one node (they start together).
"""

from __future__ import annotations

import numpy as np

from tracekit.errors import TracekitError
from tracekit.graph.model import EdgeKind, Graph

_NODE_ARRAYS = ("rank", "lane", "kind", "step", "name", "start_ns", "dur_ns", "wait_ns",
                "bytes", "coll_id", "event_row")
_EDGE_ARRAYS = ("src", "dst", "edge_kind", "delay_ns", "inferred")


def _describe(graph: Graph, v: int) -> str:
    lane = int(graph.lane[v])
    label = graph.lanes[lane].label if 0 <= lane < len(graph.lanes) else f"lane {lane}"
    return f"node {v} ({graph.node_name(v)}, {label})"


def find_cycle(graph: Graph, undone: np.ndarray) -> list[int]:
    """A cycle among the ``undone`` nodes (each has an undone predecessor), as node ids in
    dependency order; [] when none is found."""
    n = graph.n_nodes
    rep = np.arange(n)
    members = np.flatnonzero(graph.coll_id >= 0)
    if len(members):
        order = members[np.lexsort((members, graph.coll_id[members]))]
        cid = graph.coll_id[order]
        first = np.concatenate([[True], cid[1:] != cid[:-1]])
        rep[order] = order[np.flatnonzero(first)][np.cumsum(first) - 1]
    s, d = rep[graph.src], rep[graph.dst]
    keep = (s != d) & undone[graph.src] & undone[graph.dst]
    s, d = s[keep], d[keep]
    order = np.argsort(d, kind="stable")
    s, d = s[order], d[order]
    ptr = np.searchsorted(d, np.arange(n + 1))
    start = np.flatnonzero(undone)
    if len(start) == 0:
        return []
    v = int(rep[start[0]])
    seen: dict[int, int] = {}
    path: list[int] = []
    while v not in seen:
        seen[v] = len(path)
        path.append(v)
        preds = s[ptr[v]:ptr[v + 1]]
        if len(preds) == 0:
            return []
        v = int(preds[0])
    cycle = path[seen[v]:]
    cycle.reverse()
    return cycle


def cycle_message(graph: Graph, undone: np.ndarray) -> str:
    """One-line error for a graph whose ``undone`` nodes cannot be ordered."""
    cycle = find_cycle(graph, undone)
    n_undone = int(np.sum(undone))
    if not cycle:
        v = int(np.flatnonzero(undone)[0])
        return (f"replay cannot order {n_undone} node(s), starting at {_describe(graph, v)}: "
                "a cycle through a collective's participants; check the edges a what-if added")
    shown = " -> ".join(_describe(graph, v) for v in cycle[:6])
    more = f" -> ... ({len(cycle)} nodes)" if len(cycle) > 6 else f" -> node {cycle[0]}"
    return (f"the graph has a cycle, replay cannot order it: {shown}{more}; "
            "remove one of these edges (check the edges a what-if added)")


def check_structure(graph: Graph, *, raise_on_error: bool = False) -> list[str]:
    """Every structural problem of ``graph`` as one line each ([] when sound); cycles
    are not looked for (see :func:`replay.checks.check_graph`)."""
    problems: list[str] = []
    n, m = graph.n_nodes, graph.n_edges
    for a in _NODE_ARRAYS:
        if len(getattr(graph, a)) != n:
            problems.append(f"node array {a!r} has {len(getattr(graph, a))} entries, "
                            f"expected {n}")
    for a in _EDGE_ARRAYS:
        if len(getattr(graph, a)) != m:
            problems.append(f"edge array {a!r} has {len(getattr(graph, a))} entries, "
                            f"expected {m}")
    if problems:
        return _finish(problems, raise_on_error)
    bad = np.flatnonzero((graph.src < 0) | (graph.src >= n) | (graph.dst < 0) | (graph.dst >= n))
    for e in bad[:5]:
        problems.append(f"dangling edge {e}: {int(graph.src[e])} -> {int(graph.dst[e])} "
                        f"({EdgeKind(int(graph.edge_kind[e])).name}) but nodes are 0..{n - 1}")
    if len(bad):
        return _finish(problems, raise_on_error)
    bad_lane = np.flatnonzero((graph.lane < 0) | (graph.lane >= len(graph.lanes)))
    for v in bad_lane[:5]:
        problems.append(f"node {v} ({graph.node_name(int(v))}) is on lane {int(graph.lane[v])} "
                        f"but the graph has {len(graph.lanes)} lanes")
    if len(bad_lane):
        return _finish(problems, raise_on_error)
    if (graph.name < 0).any() or (graph.name >= len(graph.names)).any():
        problems.append("a node's name code is outside the name table")
    neg = np.flatnonzero(graph.dur_ns < 0)
    for v in neg[:5]:
        problems.append(f"{_describe(graph, int(v))} has negative duration {int(graph.dur_ns[v])}")
    lane_rank = np.array([ln.rank for ln in graph.lanes], dtype=np.int64)
    wrong_rank = np.flatnonzero(lane_rank[graph.lane] != graph.rank)
    for v in wrong_rank[:5]:
        problems.append(f"{_describe(graph, int(v))} has rank {int(graph.rank[v])} but its "
                        f"lane belongs to rank {int(lane_rank[graph.lane[v]])}")
    lane_e = np.flatnonzero(graph.edge_kind == EdgeKind.LANE_ORDER)
    cross = lane_e[graph.lane[graph.src[lane_e]] != graph.lane[graph.dst[lane_e]]]
    for e in cross[:5]:
        problems.append(f"LANE_ORDER edge {e} joins {_describe(graph, int(graph.src[e]))} and "
                        f"{_describe(graph, int(graph.dst[e]))} on different lanes")
    for what, ends in (("successor", graph.src[lane_e]), ("predecessor", graph.dst[lane_e])):
        counts = np.bincount(ends, minlength=n)
        for v in np.flatnonzero(counts > 1)[:5]:
            problems.append(f"{_describe(graph, int(v))} has {int(counts[v])} lane-order "
                            f"{what}s; a lane is a chain")
    members = np.flatnonzero(graph.coll_id >= 0)
    if len(members):
        key = graph.coll_id[members] * (len(graph.lanes) + 1) + graph.lane[members]
        uk, kc = np.unique(key, return_counts=True)
        for k in uk[kc > 1][:5]:
            problems.append(f"collective {int(k // (len(graph.lanes) + 1))} has two "
                            "participants on one lane; each needs its own lane")
    return _finish(problems, raise_on_error)


def _finish(problems: list[str], raise_on_error: bool) -> list[str]:
    """``problems``, or raise the first of them when asked to."""
    if problems and raise_on_error:
        raise TracekitError(problems[0])
    return problems
