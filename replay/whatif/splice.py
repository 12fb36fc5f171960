"""Lane-chain surgery for graph rewrites: find where new nodes go on a lane, and put them
there in bulk.

A lane is a chain of LANE_ORDER edges (a thread or stream runs its nodes one at a time).
A rewrite removes some nodes (they stay in the chain as "removed" until the graph is
renumbered) and inserts new ones ``after`` or ``before`` a kept node, or onto an
``empty`` lane. Before/after, inserting ``[n1, n2]`` after node ``a``::

    a --(d)--> b                 a --(gap + lead)--> n1 --(gap)--> n2 --(d - lead)--> b
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tracekit.graph.edit import add_edges
from tracekit.graph.model import EdgeKind, Graph


def lane_links(graph: Graph) -> tuple[dict[int, int], dict[int, int]]:
    """Per node, its outgoing and its incoming LANE_ORDER edge."""
    lane = np.flatnonzero(graph.edge_kind == EdgeKind.LANE_ORDER)
    out_edge = {int(graph.src[e]): int(e) for e in lane}
    in_edge = {int(graph.dst[e]): int(e) for e in lane}
    return out_edge, in_edge


def comm_anchor(graph: Graph, lane: int, first_old: int, removed: np.ndarray):
    """Where new collectives go on ``lane``: after the last kept node before the
    baseline's first bucket there, else before the first kept node after it."""
    on = np.flatnonzero(graph.lane == lane)
    before = on[(on < first_old) & ~removed[on]]
    if len(before):
        return "after", int(before[-1])
    after = on[(on > first_old) & ~removed[on]]
    if len(after):
        return "before", int(after[0])
    return "empty", lane


def kept_successor(graph: Graph, node: int, removed: np.ndarray, nxt: dict[int, int]) -> int:
    """``node``, or the first node after it on its lane that is not removed (-1: none)."""
    while node >= 0 and removed[node]:
        e = nxt.get(node)
        node = int(graph.dst[e]) if e is not None else -1
    return node


def splice(graph: Graph, inserts: list[tuple[str, int, list[int]]],
           lane_gap: dict[int, int] | None = None, lead: dict[int, int] | None = None) -> Graph:
    """Put new nodes on lane chains in bulk. Each insert is ``("after", node, [new...])``,
    ``("before", node, [new...])`` or ``("empty", lane, [new...])``; the new nodes are
    chained in the order given. The existing edge on the anchor's side keeps its delay;
    new links get ``lane_gap[lane]`` (0 when not given). ``lead[anchor]`` moves that much
    of an "after" anchor's outgoing delay onto the link into the first new node (the host
    time the baseline spent between the anchor and the op the new node replaces)."""
    lane_gap = lane_gap or {}
    lead = lead or {}
    delay = graph.delay_ns.copy()
    out_edge, in_edge = lane_links(graph)
    src, dst = graph.src.copy(), graph.dst.copy()
    lane = graph.lane.copy()
    add_s, add_d, add_delay = [], [], []
    for where, anchor, nodes in inserts:
        if not nodes:
            continue
        chain_s, chain_d = nodes[:-1], nodes[1:]
        gap = lane_gap.get(int(anchor if where == "empty" else graph.lane[anchor]), 0)
        add_s += chain_s
        add_d += chain_d
        add_delay += [gap] * len(chain_s)
        if where == "after":
            lane[nodes] = lane[anchor]
            e = out_edge.get(anchor)
            moved = lead.get(anchor, 0)
            if e is not None:  # anchor -> next becomes last_new -> next (same delay)
                src[e] = nodes[-1]
                out_edge[nodes[-1]] = e
                moved = min(moved, int(delay[e])) if moved > 0 else 0
                delay[e] -= moved
            add_s.append(anchor)
            add_d.append(nodes[0])
            add_delay.append(gap + moved)
            out_edge[anchor] = -1  # further inserts after this anchor go after nodes[-1]
        elif where == "before":
            lane[nodes] = lane[anchor]
            e = in_edge.get(anchor)
            if e is not None and e >= 0:  # prev -> anchor becomes prev -> first_new
                dst[e] = nodes[0]
                in_edge[nodes[0]] = e
            add_s.append(nodes[-1])
            add_d.append(anchor)
            add_delay.append(gap)
            in_edge[anchor] = -1
        else:
            lane[nodes] = anchor
    g = replace(graph, src=src, dst=dst, delay_ns=delay, lane=lane.astype(graph.lane.dtype),
                notes=list(graph.notes))
    return add_edges(g, add_s, add_d, EdgeKind.LANE_ORDER, delay_ns=add_delay) if add_s else g


def group_inserts(inserts: list[tuple[str, int, list[int]]]) -> list[tuple[str, int, list[int]]]:
    """Merge inserts at the same anchor (order kept), so each anchor is spliced once."""
    merged: dict[tuple[str, int], list[int]] = {}
    for where, anchor, nodes in inserts:
        merged.setdefault((where, anchor), []).extend(nodes)
    return [(w, a, ns) for (w, a), ns in merged.items()]


def close_gaps(graph: Graph, nodes: list[int]) -> Graph:
    """Reset the lane-order delay into each of ``nodes`` to its lane's median delay."""
    lane_e = np.flatnonzero(graph.edge_kind == EdgeKind.LANE_ORDER)
    delay = graph.delay_ns.copy()
    into = {int(graph.dst[e]): int(e) for e in lane_e}
    for v in nodes:
        e = into.get(v)
        if e is None:
            continue
        same_lane = lane_e[graph.lane[graph.dst[lane_e]] == graph.lane[v]]
        delay[e] = min(int(delay[e]), max(int(np.median(graph.delay_ns[same_lane])), 0))
    return replace(graph, delay_ns=delay, notes=list(graph.notes))
