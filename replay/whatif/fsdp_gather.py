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

from dataclasses import dataclass

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


class CollectiveAdder:
    """Additions to one graph (see module doc). Host ops placed before the same node go
    there in the order of the calls."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._cols: dict[str, list] = {k: [] for k in (
            "lane", "kind", "name", "dur_ns", "start_ns", "step", "rank", "bytes", "coll_id")}
        self._inserts: list[tuple[str, int, list[int]]] = []
        self._edges: dict[EdgeKind, list[tuple[int, int, int]]] = {EdgeKind.ISSUE: [],
                                                                   EdgeKind.HOST_WAIT: []}
        self._keys: dict[tuple, int] = {}
        self._coll: list[tuple] = []  # per new node: its collective key (or None)
        #: per new collective: the host ops that issued it / that wait and copy out
        self.issued_by: dict[int, list[int]] = {}
        self.copied_by: dict[int, list[int]] = {}

    def _node(self, lane, kind, name, dur, t, rank, step, nbytes=-1, key=None) -> int:
        for k, v in (("lane", lane), ("kind", kind), ("name", name), ("dur_ns", int(dur)),
                     ("start_ns", t), ("step", step), ("rank", rank), ("bytes", nbytes),
                     ("coll_id", -1)):
            self._cols[k].append(v)
        self._coll.append(key)
        return self.graph.n_nodes + len(self._coll) - 1

    def _host(self, ops: tuple[HostOp, ...], before: int, rank: int, step: int) -> list[int]:
        g = self.graph
        t = int(g.start_ns[before]) - 1
        ids = [self._node(int(g.lane[before]), op.kind, op.name, op.dur_ns, t, rank, step)
               for op in ops]
        if ids:
            self._inserts.append(("before", before, ids))
        return ids

    def issue(self, *, rank: int, step: int, key: tuple, ops: tuple[HostOp, ...], before: int,
              name: str, dur_ns: int, nbytes: int, comm_lane: int, issue_delay_ns: int = 0
              ) -> int:
        """Host ``ops`` (the last one issues) before node ``before``, and the collective
        ``name`` on ``comm_lane`` (placed by time); ``key`` names the collective instance
        (the same on every rank). Returns the new collective's id."""
        issued = self._host(ops, before, rank, step)
        t = int(self.graph.start_ns[before]) - 1
        c = self._node(comm_lane, int(NodeKind.COMM), name, dur_ns, t, rank, step, nbytes, key)
        self._inserts.append((*_comm_anchor(self.graph, comm_lane, t), [c]))
        self._edges[EdgeKind.ISSUE].append((issued[-1], c, issue_delay_ns))
        self.issued_by[c] = issued
        return c

    def wait(self, comm: int, *, ops: tuple[HostOp, ...] = (), before: int,
             delay_ns: int = 0, rank: int, step: int) -> None:
        """Host ``ops`` before node ``before``; the first of them (else ``before``) waits
        for collective ``comm``."""
        waits = self._host(ops, before, rank, step)
        self.copied_by.setdefault(comm, []).extend(waits)
        self._edges[EdgeKind.HOST_WAIT].append((comm, waits[0] if waits else before,
                                                delay_ns))

    def write(self) -> tuple[Graph, int]:
        """The graph with every addition; returns it and how many nodes were added (they
        are the last ones)."""
        g = self.graph
        if not self._coll:
            return g, 0
        keys = sorted({k for k in self._coll if k is not None}, key=repr)
        ids = dict(zip(keys, new_coll_ids(g, len(keys)).tolist()))
        self._cols["coll_id"] = [ids[k] if k is not None else -1 for k in self._coll]
        g, new = add_nodes(g, **{k: np.asarray(v) for k, v in self._cols.items()})
        g = splice(g, group_inserts(self._inserts))
        for kind, es in self._edges.items():
            if es:
                g = add_edges(g, [a for a, _, _ in es], [b for _, b, _ in es], kind,
                              delay_ns=[d for _, _, d in es])
        return g, len(new)
