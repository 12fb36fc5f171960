"""Add FSDP collectives to a graph: host ops on the training thread, the collective on a
comm lane, and the edges FSDP imposes (the issue op starts it, the copy-out waits for
it). Used by ``reshard=on`` (backward all-gathers cloned from the unit's forward one) and
``fsdp=CLASS`` (every FSDP collective of a DDP run, timed by the cost model).

A :class:`CollectiveAdder` collects the additions, then :meth:`CollectiveAdder.write`
puts them into the graph in one splice. Before/after, one backward all-gather of unit
``2`` issued before node ``b`` (the first op of unit 4's backward) and waited for before
node ``c`` (the first op of unit 2's backward)::

    main:  ... a -> b ...            ... a -> [copy_in, c10d::_allgather_base_] -> b ...
                                          ... -> [view, split_with_sizes_copy] -> c
    comm:  x -> y                    x -> gloo:all_gather -> y  (placed by time)
           ISSUE c10d::_allgather_base_ -> gloo:all_gather; HOST_WAIT gloo:all_gather -> view
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from replay.whatif.splice import group_inserts, splice
from tracekit.graph.edit import add_edges, add_nodes, new_coll_ids
from tracekit.graph.fsdp import FSDPCollective
from tracekit.graph.model import EdgeKind, Graph, NodeKind


@dataclass(frozen=True, kw_only=True)
class HostOp:
    """One host op to add: name, kind and duration."""

    name: str
    kind: int
    dur_ns: int


@dataclass(frozen=True, kw_only=True)
class NewCollective:
    """One collective to add on one rank (see :meth:`CollectiveAdder.add`)."""

    rank: int
    step: int
    #: shared by the same collective instance on every rank
    key: tuple
    #: host ops issuing it (the last one issues) and the node they go before
    issue_ops: tuple[HostOp, ...]
    issue_before: int
    #: the collective: name, transfer time, bytes, comm lane, delay of its ISSUE edge
    name: str
    dur_ns: int
    nbytes: int
    comm_lane: int
    issue_delay_ns: int
    #: host ops that wait for it and copy out, the node they go before (-1: nothing
    #: waits on the host) and the delay of the wait edge
    wait_ops: tuple[HostOp, ...] = ()
    wait_before: int = -1
    wait_delay_ns: int = 0


def host_ops(graph: Graph, nodes) -> tuple[HostOp, ...]:
    """The host ops of existing nodes, as templates."""
    return tuple(HostOp(name=graph.node_name(v), kind=int(graph.kind[v]),
                        dur_ns=int(graph.dur_ns[v])) for v in nodes)


def issue_delay(graph: Graph, coll: FSDPCollective) -> int:
    """The delay of the ISSUE edge into ``coll``'s comm node (0 none)."""
    e = np.flatnonzero((graph.dst == coll.comm) & (graph.edge_kind == EdgeKind.ISSUE))
    return int(graph.delay_ns[e[0]]) if len(e) else 0


def wait_delay(graph: Graph, coll: FSDPCollective) -> int:
    """The delay of the wait edge from ``coll``'s comm node into the host (0 none)."""
    e = np.flatnonzero((graph.src == coll.comm) & (graph.edge_kind == EdgeKind.HOST_WAIT))
    return max(int(graph.delay_ns[e[0]]), 0) if len(e) else 0


def _comm_anchor(graph: Graph, lane: int, rank_t: int) -> tuple[str, int]:
    """Where a collective that starts near ``rank_t`` goes on ``lane``: after the last
    node there that started before it, else before the first, else onto the empty lane."""
    on = np.flatnonzero(graph.lane == lane)
    if len(on) == 0:
        return "empty", lane
    on = on[np.argsort(graph.start_ns[on], kind="stable")]
    before = on[graph.start_ns[on] <= rank_t]
    return ("after", int(before[-1])) if len(before) else ("before", int(on[0]))


@dataclass
class CollectiveAdder:
    """Additions to one graph (see module doc)."""

    graph: Graph
    items: list[NewCollective] = field(default_factory=list)

    def add(self, item: NewCollective) -> None:
        self.items.append(item)

    def write(self) -> tuple[Graph, int]:
        """The graph with every addition; returns it and how many nodes were added (they
        are the last ones)."""
        g = self.graph
        if not self.items:
            return g, 0
        keys = sorted({it.key for it in self.items}, key=repr)
        coll = dict(zip(keys, new_coll_ids(g, len(keys)).tolist()))
        cols: dict[str, list] = {k: [] for k in ("lane", "kind", "name", "dur_ns", "start_ns",
                                                 "step", "rank", "bytes", "coll_id")}
        inserts: list[tuple[str, int, list[int]]] = []
        edges: dict[EdgeKind, list[tuple[int, int, int]]] = {EdgeKind.ISSUE: [],
                                                             EdgeKind.HOST_WAIT: []}
        base = g.n_nodes

        def node(lane, kind, name, dur, t, it, nbytes=-1, cid=-1) -> int:
            for k, v in (("lane", lane), ("kind", kind), ("name", name), ("dur_ns", dur),
                         ("start_ns", t), ("step", it.step), ("rank", it.rank),
                         ("bytes", nbytes), ("coll_id", cid)):
                cols[k].append(v)
            return base + len(cols["lane"]) - 1

        for it in self.items:
            main = int(g.lane[it.issue_before])
            t = int(g.start_ns[it.issue_before]) - 1
            issued = [node(main, op.kind, op.name, op.dur_ns, t, it) for op in it.issue_ops]
            c = node(it.comm_lane, int(NodeKind.COMM), it.name, it.dur_ns, t, it, it.nbytes,
                     coll[it.key])
            inserts.append(("before", it.issue_before, issued))
            inserts.append((*_comm_anchor(g, it.comm_lane, t), [c]))
            edges[EdgeKind.ISSUE].append((issued[-1], c, it.issue_delay_ns))
            if it.wait_before >= 0:
                tw = int(g.start_ns[it.wait_before]) - 1
                waits = [node(int(g.lane[it.wait_before]), op.kind, op.name, op.dur_ns, tw, it)
                         for op in it.wait_ops]
                if waits:
                    inserts.append(("before", it.wait_before, waits))
                edges[EdgeKind.HOST_WAIT].append(
                    (c, waits[0] if waits else it.wait_before, it.wait_delay_ns))
        g, ids = add_nodes(g, **{k: np.asarray(v) for k, v in cols.items()})
        assert int(ids[0]) == base
        g = splice(g, group_inserts(inserts))
        for kind, es in edges.items():
            if es:
                g = add_edges(g, [a for a, _, _ in es], [b for _, b, _ in es], kind,
                              delay_ns=[d for _, _, d in es])
        return g, len(ids)
