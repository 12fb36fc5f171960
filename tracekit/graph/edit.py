"""Graph edit primitives for what-if transforms.

Graphs are values: every function returns a new :class:`Graph` and never modifies its
input (unchanged arrays may be shared between the two, so do not modify arrays in place
either: build new ones). Node ids are array indices, so:

- :func:`add_nodes` appends: old ids stay valid, the new ids are returned.
- :func:`remove_nodes` drops nodes and renumbers the survivors in order;
  :func:`renumbering` gives the old -> new id map.

Lanes are chains of LANE_ORDER edges. :func:`add_nodes` does not place new nodes on
their lane's chain: use :func:`insert_after`, :func:`insert_before` or
:func:`append_to_lane` (or add LANE_ORDER edges yourself). A node with no incoming edge
is released at its ``start_ns``. A collective is a set of nodes sharing ``coll_id``
(on different lanes); use :func:`new_coll_ids` for fresh ids.

Example: a new all-reduce on rank 0's gloo thread after node 41, issued by node 17::

    g, (v,) = add_nodes(g, lane=[2], kind=[NodeKind.COMM], name=["gloo:all_reduce"],
                        dur_ns=[900_000], bytes=[4 << 20], coll_id=new_coll_ids(g, 1))
    g = insert_after(g, v, after=41)
    g = add_edges(g, [17], [v], EdgeKind.ISSUE, delay_ns=30_000)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from tracekit.errors import TracekitError
from tracekit.graph.model import EdgeKind, Graph, Lane, NodeKind

#: node array -> (dtype, default for new nodes; None = derived, see add_nodes)
NODE_ARRAYS: dict[str, tuple[str, int | None]] = {
    "rank": ("int32", None),
    "lane": ("int32", None),
    "kind": ("int8", None),
    "step": ("int32", -1),
    "name": ("int32", None),
    "start_ns": ("int64", None),
    "dur_ns": ("int64", None),
    "wait_ns": ("int64", 0),
    "bytes": ("int64", -1),
    "coll_id": ("int64", -1),
    "event_row": ("int64", -1),
}
EDGE_ARRAYS = ("src", "dst", "edge_kind", "delay_ns", "inferred")


def _as_array(value, n: int, dtype: str, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if len(arr) != n:
        raise TracekitError(f"{what}: got {len(arr)} values for {n} items; pass one per item "
                            "or a single value")
    return arr.astype(dtype)


def add_nodes(graph: Graph, **columns) -> tuple[Graph, np.ndarray]:
    """Append nodes; return ``(new_graph, new_ids)``.

    Keyword arguments are node arrays (see :data:`NODE_ARRAYS`), one value per new node or
    a single value for all. Required: ``lane``, ``kind``, ``dur_ns`` and ``name`` (strings,
    added to the name table, or existing name codes). Defaults: ``rank`` from the lane,
    ``start_ns`` the graph's earliest start (only used when the node gets no incoming
    edge), ``step`` -1, ``wait_ns`` 0, ``bytes`` -1, ``coll_id`` -1, ``event_row`` -1
    (a synthetic node).
    """
    unknown = set(columns) - set(NODE_ARRAYS)
    if unknown:
        raise TracekitError(f"add_nodes: unknown column(s) {sorted(unknown)}; known: "
                            f"{sorted(NODE_ARRAYS)}")
    for need in ("lane", "kind", "dur_ns", "name"):
        if need not in columns:
            raise TracekitError(f"add_nodes: '{need}' is required")
    lane = np.atleast_1d(np.asarray(columns["lane"], dtype=np.int64))
    n_new = len(lane)
    if n_new and (lane.min() < 0 or lane.max() >= len(graph.lanes)):
        raise TracekitError(f"add_nodes: lane {int(lane.max())} does not exist (the graph has "
                            f"{len(graph.lanes)} lanes); add it first with add_lane")
    names = list(graph.names)
    raw_names = columns["name"]
    if isinstance(raw_names, str):
        raw_names = [raw_names] * n_new
    raw_names = list(raw_names) if not isinstance(raw_names, np.ndarray) else raw_names.tolist()
    if raw_names and isinstance(raw_names[0], str):
        index = {nm: i for i, nm in enumerate(names)}
        codes = []
        for nm in raw_names:
            if nm not in index:
                index[nm] = len(names)
                names.append(nm)
            codes.append(index[nm])
        columns = {**columns, "name": codes}
    defaults = {
        "rank": np.array([graph.lanes[int(x)].rank for x in lane], dtype=np.int32),
        "start_ns": int(np.min(graph.start_ns)) if graph.n_nodes else 0,
    }
    new = {}
    for col, (dtype, default) in NODE_ARRAYS.items():
        value = columns.get(col, defaults.get(col, default))
        new[col] = np.concatenate([getattr(graph, col), _as_array(value, n_new, dtype, col)])
    ids = np.arange(graph.n_nodes, graph.n_nodes + n_new, dtype=np.int64)
    return replace(graph, **new, names=names, notes=list(graph.notes)), ids


def add_edges(graph: Graph, src, dst, kind: EdgeKind, delay_ns=0, inferred=False) -> Graph:
    """Append edges ``src[i] -> dst[i]`` of one kind (scalars broadcast)."""
    src = np.atleast_1d(np.asarray(src, dtype=np.int64))
    dst = np.atleast_1d(np.asarray(dst, dtype=np.int64))
    if len(src) == 1 and len(dst) > 1:
        src = np.full(len(dst), src[0])
    if len(dst) == 1 and len(src) > 1:
        dst = np.full(len(src), dst[0])
    m = len(src)
    if len(dst) != m:
        raise TracekitError(f"add_edges: {len(src)} sources but {len(dst)} targets")
    n = graph.n_nodes
    for what, ids in (("source", src), ("target", dst)):
        if m and (ids.min() < 0 or ids.max() >= n):
            raise TracekitError(f"add_edges: {what} node {int(ids.max())} does not exist "
                                f"(the graph has {n} nodes)")
    return replace(
        graph,
        src=np.concatenate([graph.src, src]),
        dst=np.concatenate([graph.dst, dst]),
        edge_kind=np.concatenate([graph.edge_kind, np.full(m, int(kind), dtype=np.int8)]),
        delay_ns=np.concatenate([graph.delay_ns, _as_array(delay_ns, m, "int64", "delay_ns")]),
        inferred=np.concatenate([graph.inferred, _as_array(inferred, m, "bool", "inferred")]),
        notes=list(graph.notes),
    )


def remove_edges(graph: Graph, mask: np.ndarray) -> Graph:
    """Drop the edges where ``mask`` is True."""
    keep = ~np.asarray(mask, dtype=bool)
    return replace(graph, **{a: getattr(graph, a)[keep] for a in EDGE_ARRAYS},
                   notes=list(graph.notes))


def renumbering(mask: np.ndarray) -> np.ndarray:
    """Old id -> new id after :func:`remove_nodes` with ``mask`` (-1 for removed nodes)."""
    keep = ~np.asarray(mask, dtype=bool)
    return np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)


def remove_nodes(graph: Graph, mask: np.ndarray, *, keep_inner_gaps: bool = True) -> Graph:
    """Drop the nodes where ``mask`` is True, and every edge touching them.

    Lane order is reconnected around removed nodes: the surviving predecessor and
    successor on the chain get a LANE_ORDER edge whose delay is the sum of the lane-order
    delays along the removed stretch (the host time between ops stays; only the removed
    nodes' durations disappear). With ``keep_inner_gaps=False`` only the delays into and
    out of the stretch are kept: the host time *between* the removed ops was the removed
    work's own (the Python of a code path that no longer runs). Other edges through
    removed nodes are dropped: rewire them explicitly. Survivors keep their order (see
    :func:`renumbering`).

    Before/after (lane delays in us; B and C removed)::

        A -10-> B -20-> C -30-> D    keep_inner_gaps=True:  A -60-> D
                                     keep_inner_gaps=False: A -40-> D
    """
    mask = np.asarray(mask, dtype=bool)
    if len(mask) != graph.n_nodes:
        raise TracekitError(f"remove_nodes: mask has {len(mask)} entries for "
                            f"{graph.n_nodes} nodes")
    is_lane = graph.edge_kind == EdgeKind.LANE_ORDER
    nxt = np.full(graph.n_nodes, -1, dtype=np.int64)
    nxt[graph.src[is_lane]] = graph.dst[is_lane]
    lane_delay = np.zeros(graph.n_nodes, dtype=np.int64)  # delay of the lane edge out of v
    lane_delay[graph.src[is_lane]] = graph.delay_ns[is_lane]
    # bridges: from each kept node whose lane successor is removed, walk to the next kept
    bridge_src, bridge_dst, bridge_delay = [], [], []
    starts = np.flatnonzero(~mask & (nxt >= 0))
    starts = starts[mask[nxt[starts]]]
    for u in starts:
        total, v, inner = int(lane_delay[u]), int(nxt[u]), 0
        while v >= 0 and mask[v]:
            if nxt[v] < 0:
                v = -1
                break
            if mask[nxt[v]]:
                inner += int(lane_delay[v])
            else:
                total += int(lane_delay[v])
            v = int(nxt[v])
        if keep_inner_gaps:
            total += inner
        if v >= 0:
            bridge_src.append(int(u))
            bridge_dst.append(v)
            bridge_delay.append(total)
    new_id = renumbering(mask)
    keep_edge = ~mask[graph.src] & ~mask[graph.dst]
    keep = ~mask
    out = replace(
        graph,
        **{col: getattr(graph, col)[keep] for col in NODE_ARRAYS},
        src=np.concatenate([new_id[graph.src[keep_edge]], new_id[np.asarray(bridge_src,
                                                                              dtype=np.int64)]]),
        dst=np.concatenate([new_id[graph.dst[keep_edge]], new_id[np.asarray(bridge_dst,
                                                                              dtype=np.int64)]]),
        edge_kind=np.concatenate([graph.edge_kind[keep_edge],
                                  np.full(len(bridge_src), EdgeKind.LANE_ORDER, dtype=np.int8)]),
        delay_ns=np.concatenate([graph.delay_ns[keep_edge],
                                 np.asarray(bridge_delay, dtype=np.int64)]),
        inferred=np.concatenate([graph.inferred[keep_edge],
                                 np.zeros(len(bridge_src), dtype=bool)]),
        notes=list(graph.notes),
    )
    return out


def _lane_links(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    is_lane = graph.edge_kind == EdgeKind.LANE_ORDER
    return np.flatnonzero(is_lane), is_lane


def insert_after(graph: Graph, node: int, *, after: int, delay_ns: int = 0) -> Graph:
    """Put ``node`` (not yet on a chain) on ``after``'s lane chain right after it.

    The old edge ``after -> next`` becomes ``node -> next`` (same delay); the new edge
    ``after -> node`` gets ``delay_ns``. ``node`` takes ``after``'s lane.
    """
    _check_free(graph, node)
    idx, _ = _lane_links(graph)
    out_edge = idx[graph.src[idx] == after]
    src, dst = graph.src.copy(), graph.dst.copy()
    if len(out_edge):
        src[out_edge[0]] = node
    g = replace(graph, src=src, dst=dst, lane=_with(graph.lane, node, graph.lane[after]),
                notes=list(graph.notes))
    return add_edges(g, [after], [node], EdgeKind.LANE_ORDER, delay_ns=delay_ns)


def insert_before(graph: Graph, node: int, *, before: int, delay_ns: int = 0) -> Graph:
    """Put ``node`` on ``before``'s lane chain right before it (see :func:`insert_after`).

    The old edge ``prev -> before`` becomes ``prev -> node`` (same delay); the new edge
    ``node -> before`` gets ``delay_ns``.
    """
    _check_free(graph, node)
    idx, _ = _lane_links(graph)
    in_edge = idx[graph.dst[idx] == before]
    src, dst = graph.src.copy(), graph.dst.copy()
    if len(in_edge):
        dst[in_edge[0]] = node
    g = replace(graph, src=src, dst=dst, lane=_with(graph.lane, node, graph.lane[before]),
                notes=list(graph.notes))
    return add_edges(g, [node], [before], EdgeKind.LANE_ORDER, delay_ns=delay_ns)


def append_to_lane(graph: Graph, nodes, lane: int, *, delay_ns=0) -> Graph:
    """Chain ``nodes`` (in the order given) at the end of ``lane``."""
    nodes = np.atleast_1d(np.asarray(nodes, dtype=np.int64))
    if len(nodes) == 0:
        return graph
    for v in nodes:
        _check_free(graph, int(v))
    ids, _ = _lane_links(graph)
    on_lane = np.flatnonzero(graph.lane == lane)
    on_lane = on_lane[~np.isin(on_lane, nodes)]
    has_out = np.zeros(graph.n_nodes, dtype=bool)
    has_out[graph.src[ids]] = True
    tail = on_lane[~has_out[on_lane]]
    tail = tail[np.argsort(graph.start_ns[tail], kind="stable")]
    chain_src = np.concatenate([tail[-1:], nodes[:-1]]) if len(tail) else nodes[:-1]
    chain_dst = nodes if len(tail) else nodes[1:]
    lane_arr = graph.lane.copy()
    lane_arr[nodes] = lane
    g = replace(graph, lane=lane_arr, notes=list(graph.notes))
    d = _as_array(delay_ns, len(nodes), "int64", "delay_ns")
    d = d if len(tail) else d[1:]
    return add_edges(g, chain_src, chain_dst, EdgeKind.LANE_ORDER, delay_ns=d)


def add_lane(graph: Graph, *, rank: int, kind: str, name: str,
             local_id: int = -1) -> tuple[Graph, int]:
    """Append a lane (e.g. a second comm channel); return ``(new_graph, lane_id)``."""
    if kind not in ("cpu", "gpu", "comm"):
        raise TracekitError(f"add_lane: kind must be 'cpu', 'gpu' or 'comm', not {kind!r}")
    lane_id = len(graph.lanes)
    lanes = [*graph.lanes, Lane(id=lane_id, rank=rank, kind=kind, local_id=local_id,
                                name=name)]
    return replace(graph, lanes=lanes, notes=list(graph.notes)), lane_id


def new_coll_ids(graph: Graph, count: int) -> np.ndarray:
    """``count`` collective ids not used in ``graph``."""
    start = int(graph.coll_id.max()) + 1 if graph.n_nodes else 0
    return np.arange(start, start + count, dtype=np.int64)


def with_durations(graph: Graph, dur_ns: np.ndarray) -> Graph:
    """The same graph with new node durations."""
    dur = np.asarray(dur_ns, dtype=np.int64)
    if len(dur) != graph.n_nodes:
        raise TracekitError(f"with_durations: {len(dur)} durations for {graph.n_nodes} nodes")
    return replace(graph, dur_ns=dur, notes=list(graph.notes))


def scale_durations(graph: Graph, factor: float, *, mask: np.ndarray | None = None) -> Graph:
    """Multiply the durations of the nodes in ``mask`` (all when None) by ``factor``."""
    dur = graph.dur_ns.astype(np.float64)
    sel = np.ones(graph.n_nodes, bool) if mask is None else np.asarray(mask, bool)
    dur[sel] = dur[sel] * factor
    return with_durations(graph, np.rint(dur).astype(np.int64))


def nodes_where(graph: Graph, *, rank: int | None = None, lane: int | None = None,
                kind: NodeKind | None = None, step: int | None = None,
                name_contains: str | None = None) -> np.ndarray:
    """Ids of the nodes matching every given filter, ascending."""
    m = np.ones(graph.n_nodes, dtype=bool)
    if rank is not None:
        m &= graph.rank == rank
    if lane is not None:
        m &= graph.lane == lane
    if kind is not None:
        m &= graph.kind == int(kind)
    if step is not None:
        m &= graph.step == step
    if name_contains is not None:
        hit = np.array([name_contains in nm for nm in graph.names] or [False], dtype=bool)
        m &= hit[graph.name]
    return np.flatnonzero(m)


def lane_sequence(graph: Graph, lane: int) -> np.ndarray:
    """The nodes of ``lane`` in chain order (following LANE_ORDER edges from the head)."""
    on = np.flatnonzero(graph.lane == lane)
    if len(on) == 0:
        return on
    ids, _ = _lane_links(graph)
    nxt = {int(s): int(d) for s, d in zip(graph.src[ids], graph.dst[ids])
           if graph.lane[s] == lane}
    heads = set(on.tolist()) - set(nxt.values())
    out = []
    for h in sorted(heads, key=lambda v: int(graph.start_ns[v])):
        v = h
        while v is not None and len(out) <= len(on):
            out.append(v)
            v = nxt.get(v)
    return np.asarray(out, dtype=np.int64)


def _check_free(graph: Graph, node: int) -> None:
    if not 0 <= node < graph.n_nodes:
        raise TracekitError(f"node {node} does not exist (the graph has {graph.n_nodes} nodes)")
    ids, _ = _lane_links(graph)
    if np.any(graph.src[ids] == node) or np.any(graph.dst[ids] == node):
        raise TracekitError(f"node {node} is already on a lane chain; remove its LANE_ORDER "
                            "edges first (remove_edges) or insert a new node")


def _with(arr: np.ndarray, i: int, value) -> np.ndarray:
    out = arr.copy()
    out[i] = value
    return out


def typical_delays(graph: Graph, *, keep_lane_order: bool = True) -> Graph:
    """The graph with every dependency's delay replaced by its typical value.

    Training repeats the same structure every step, so an edge has a *position*: its
    rank, edge kind, the name of the node it leads to, and the how-many-th such edge it
    is within its step, counted in order of its source's start (the issue order: which
    of two gloo threads picked a work item up changes from step to step, the issue order
    does not). The typical delay of an edge is the median over the steps of the *binding*
    edges at its position (dPRO-style averaging across iterations): the ones that decided
    their target's start, the only ones whose latency the trace shows (a non-binding
    edge's target was held by something else, so its own latency is unknown). Structural
    differences survive (the last bucket's collective is picked up at once, an early one
    while the host is busy is not) while no edge keeps its own measured instance value.
    Positions with fewer than two binding samples fall back to the median of the binding
    edges of their kind and target name on their rank, then of their kind on their rank.
    An ISSUE edge's typical delay counts from its issuing op's *start* (the work is
    enqueued inside the call; how long the call then takes to return is host noise that
    does not hold the work back). Lane-order delays (the host time between two ops of a
    thread) are kept as measured unless ``keep_lane_order`` is False.
    """
    n = len(graph.src)
    if n == 0:
        return replace(graph, notes=list(graph.notes))
    # only the edges whose delay may change are looked at (lane order is most of a graph)
    idx = (np.flatnonzero(graph.edge_kind != EdgeKind.LANE_ORDER) if keep_lane_order
           else np.arange(n))
    if len(idx) == 0:
        return replace(graph, notes=list(graph.notes))
    delay = graph.delay_ns.copy()
    kind = graph.edge_kind[idx].astype(np.int64)
    src, dst = graph.src[idx], graph.dst[idx]
    binding = (graph.start_ns[src] + graph.wait_ns[src] + graph.dur_ns[src]  # measured end
               + graph.delay_ns[idx] == graph.start_ns[dst])
    # an ISSUE edge counts from its issuing op's start: gloo enqueues the work inside
    # c10d::allreduce_, so a main thread descheduled before the call returns delays the
    # return, not the pickup (measured: up to 6 ms of the call after the work started)
    # so does a LAUNCH edge from a CUDA / HIP graph launch: the call queues the graph's
    # kernels while it runs, and the first ones start long before it returns
    graph_launch = np.fromiter(("GraphLaunch" in nm for nm in graph.names), dtype=bool,
                               count=len(graph.names))
    from_graph = (kind == EdgeKind.LAUNCH) & graph_launch[graph.name[src]] if len(
        graph.names) else np.zeros(len(idx), dtype=bool)
    from_start = np.where((kind == EdgeKind.ISSUE) | from_graph, graph.dur_ns[src], 0)
    # graph launches are their own kind of latency: never a sample for a plain launch
    group_kind = np.where(from_graph, len(EdgeKind) + int(EdgeKind.LAUNCH), kind)
    del kind, from_graph
    # positions are per rank: one rank's edges at a time (scratch memory stays small)
    for part in _rank_parts(graph.rank[dst]):
        typ = _typical(graph, idx[part], group_kind[part], binding[part], from_start[part])
        delay[idx[part]] = np.rint(typ).astype(np.int64) - from_start[part]
    return replace(graph, delay_ns=delay, notes=list(graph.notes))


def _rank_parts(rank: np.ndarray, rows: int = 200_000) -> list[np.ndarray]:
    """Positions of ``rank`` in chunks of whole ranks (about ``rows`` each)."""
    if len(rank) <= rows:
        return [np.arange(len(rank))]
    o = np.argsort(rank, kind="stable")
    r = rank[o]
    cut = np.flatnonzero(np.concatenate([[True], r[1:] != r[:-1]]))
    parts, lo = [], 0
    for c in cut[1:].tolist():
        if c - lo >= rows:
            parts.append(o[lo:c])
            lo = c
    parts.append(o[lo:])
    return parts


def _typical(graph: Graph, at: np.ndarray, group_kind: np.ndarray, binding: np.ndarray,
             from_start: np.ndarray) -> np.ndarray:
    """The typical delay (counted from the source's end, plus ``from_start``) of the
    edges ``at`` (see :func:`typical_delays`), in the order of ``at``; ``group_kind``,
    ``binding`` and ``from_start`` are given per edge of ``at``."""
    src, dst = graph.src[at], graph.dst[at]
    frame = pd.DataFrame({"rank": graph.rank[dst].astype(np.int64),
                          "kind": group_kind,
                          "name": graph.name[dst].astype(np.int64),
                          "step": graph.step[dst].astype(np.int64),
                          "order": graph.start_ns[src], "dst": dst,
                          "delay": (graph.delay_ns[at] + from_start).astype(np.float64),
                          "sample_ok": binding})
    frame = frame.sort_values(["rank", "kind", "name", "step", "order", "dst"], kind="stable")
    frame["occ"] = frame.groupby(["rank", "kind", "name", "step"]).cumcount()
    frame["sample"] = frame["delay"].where(frame["sample_ok"])
    typ = np.full(len(frame), np.nan)
    # a wait for something outside the trace has no kind-wide typical value: only the
    # same edge in other steps says what it usually is (else it stays as measured)
    own_only = (frame["kind"] == EdgeKind.UNRECORDED).to_numpy()
    for level, keys in enumerate((["rank", "kind", "name", "occ"], ["rank", "kind", "name"],
                                  ["rank", "kind"])):
        grouped = frame.groupby(keys)["sample"]
        value = grouped.transform("median").to_numpy()
        enough = grouped.transform("count").to_numpy() >= 2
        fill = np.isnan(typ) & enough & (~own_only if level else True)
        typ[fill] = value[fill]
    # nothing bound anywhere in the group: keep the nominal values the graph carries
    typ = np.where(np.isnan(typ), frame["delay"].to_numpy(), typ)
    out = np.empty(len(frame))
    out[frame.index.to_numpy()] = typ
    return out
