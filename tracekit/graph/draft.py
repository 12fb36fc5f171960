"""A graph under assembly: the chosen nodes (as arrays) and the edges found so far.

The edge modules (:mod:`~tracekit.graph.device`, :mod:`~tracekit.graph.host`,
:mod:`~tracekit.graph.collectives`) read a :class:`GraphDraft` and append edges to it;
:mod:`~tracekit.graph.build` turns the finished draft into a :class:`~tracekit.graph.model.Graph`.

Node ``i`` of the draft is node ``i`` of the final graph: nodes are sorted by
``(rank, lane kind, lane, start)``, so the nodes of one lane are consecutive ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from tracekit.graph.arrays import EventArrays
from tracekit.graph.model import EdgeKind, Lane


@dataclass(kw_only=True)
class GraphDraft:
    """Mutable during assembly only; never escapes :func:`tracekit.graph.build.build_graph`."""

    ev: EventArrays
    #: per node: position in ``ev``
    index: np.ndarray
    kind: np.ndarray  #: int8 NodeKind
    lane: np.ndarray  #: int32 lane index
    lanes: list[Lane]
    #: measured start / end; end is shortened for blocking calls (see device/host modules)
    start: np.ndarray
    end: np.ndarray
    #: per node: waiting inside a comm node (filled by collective matching)
    wait: np.ndarray
    coll_id: np.ndarray
    notes: list[str] = field(default_factory=list)
    _src: list[np.ndarray] = field(default_factory=list)
    _dst: list[np.ndarray] = field(default_factory=list)
    _kind: list[np.ndarray] = field(default_factory=list)
    _inferred: list[np.ndarray] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.index)

    # per-node views of event columns, gathered once (``index`` never changes after the
    # draft is made; edge modules read these inside loops over lanes, ranks and nodes)
    @cached_property
    def rank(self) -> np.ndarray:
        # int64: searchsorted against an int32 array would copy it on every call
        return self.ev.rank[self.index].astype(np.int64)

    @cached_property
    def is_gpu(self) -> np.ndarray:
        return self.ev.is_gpu[self.index]

    @cached_property
    def correlation(self) -> np.ndarray:
        return self.ev.correlation[self.index]

    def lane_first_last(self) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last node id of every lane (nodes of a lane are consecutive)."""
        n_lanes = len(self.lanes)
        first = np.searchsorted(self.lane, np.arange(n_lanes), side="left")
        last = np.searchsorted(self.lane, np.arange(n_lanes), side="right")
        return first, last

    def next_on_lane(self, v: np.ndarray) -> np.ndarray:
        """The node after each ``v`` on its lane, -1 for a lane's last node."""
        v = np.asarray(v, dtype=np.int64)
        nxt = v + 1
        ok = nxt < self.n
        ok[ok] = self.lane[nxt[ok]] == self.lane[v[ok]]
        return np.where(ok, nxt, -1)

    def next_on_lane_all(self) -> np.ndarray:
        """:meth:`next_on_lane` of every node (``i + 1``, or -1 for a lane's last node)."""
        nxt = np.arange(1, self.n + 1, dtype=np.int64)
        if self.n:
            nxt[:-1][self.lane[1:] != self.lane[:-1]] = -1
            nxt[-1] = -1
        return nxt

    @property
    def id_dtype(self) -> type:
        """The dtype of the edges' node ids: int32 while the node ids fit (half the
        memory of a large world's edge lists), else int64."""
        return np.int32 if self.n < 2**31 - 1 else np.int64

    def add_edges(self, src, dst, kind: EdgeKind, *, inferred: bool = False) -> int:
        """Append edges (skipping self-loops and exact duplicates later, at build)."""
        src = np.asarray(src, dtype=np.int64).ravel()
        dst = np.asarray(dst, dtype=np.int64).ravel()
        keep = (src != dst) & (src >= 0) & (dst >= 0)
        src, dst = src[keep].astype(self.id_dtype), dst[keep].astype(self.id_dtype)
        self._src.append(src)
        self._dst.append(dst)
        self._kind.append(np.full(len(src), int(kind), dtype=np.int8))
        self._inferred.append(np.full(len(src), inferred, dtype=bool))
        return len(src)

    def edges_of(self, kind: EdgeKind) -> tuple[np.ndarray, np.ndarray]:
        """``(src, dst)`` of the edges of one kind so far, unsorted, duplicates kept (cheap:
        no sort of every edge, as :meth:`edges` does)."""
        parts = [(s, d) for s, d, k in zip(self._src, self._dst, self._kind)
                 if len(k) and k[0] == int(kind)]
        if not parts:
            e = np.zeros(0, dtype=self.id_dtype)
            return e, e.copy()
        return (np.concatenate([s for s, _ in parts]), np.concatenate([d for _, d in parts]))

    def edges(self, *, release: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray]:
        """All edges so far, duplicates (same src, dst, kind) removed, sorted by (dst, src).
        ``release``: forget the edge lists (the draft is done; frees their memory)."""
        if not self._src:
            e = np.zeros(0, dtype=self.id_dtype)
            return e, e.copy(), np.zeros(0, np.int8), np.zeros(0, bool)
        src = np.concatenate(self._src)
        dst = np.concatenate(self._dst)
        kind = np.concatenate(self._kind)
        inferred = np.concatenate(self._inferred)
        if release:
            self._src, self._dst, self._kind, self._inferred = [], [], [], []
        order = np.lexsort((kind, src, dst))
        src, dst, kind, inferred = src[order], dst[order], kind[order], inferred[order]
        del order
        dup = np.zeros(len(src), dtype=bool)
        if len(src) > 1:
            dup[1:] = (src[1:] == src[:-1]) & (dst[1:] == dst[:-1]) & (kind[1:] == kind[:-1])
        keep = ~dup
        return src[keep], dst[keep], kind[keep], inferred[keep]
