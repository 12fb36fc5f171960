"""The replay engine: every node's start and end under the graph's constraints.

Semantics (see :mod:`tracekit.graph.model`)::

    ready[v] = max( max_{e=(u,v)} end[u] + delay[e] )      # every edge, lane order included
    ready[v] = start_ns[v]   if v has no incoming edge    # a source is released when measured
    start[v] = ready[v], or for a collective (nodes sharing coll_id, >= 2 of them)
               max(ready of every participant)            # all start when the last arrives
    end[v]   = start[v] + dur_ns[v]

LANE_ORDER edges chain the nodes of a lane (each node has at most one lane predecessor
and one lane successor); the engine calls such a maximal chain a *chain*.

Algorithm (pure numpy, O(nodes + edges) work plus a per-round overhead): chains are laid
out contiguously. Each round, every chain advances over its longest prefix whose other
(non lane-order) predecessors are all finished: the prefix is timed in one vectorized
max-plus scan (``start_i = max(ready_i, start_{i-1} + dur_{i-1} + lane_delay_i)``, solved
with a cumulative sum and a running maximum). Edges out of the finished nodes unblock
their targets; a collective whose participants all reached the head of their chains
starts. The number of rounds is the number of times the critical dependency structure
hops between chains (syncs, waits, collectives), not the number of nodes. A round in
which nothing moves means a cycle: the error names nodes on it.

Example: two lanes, a launch and a kernel::

    nodes   0 cpu launch dur 5   1 cpu op dur 10   2 gpu kernel dur 30
    edges   0->1 LANE_ORDER 0    0->2 LAUNCH delay 2
    start   [0, 5, 7]; end [5, 15, 37]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tracekit.errors import TracekitError
from tracekit.graph.checks import cycle_message
from tracekit.graph.model import EdgeKind, Graph
from tracekit.log import get_logger

log = get_logger(__name__)

_NEG = np.int64(-(2**62))


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A replayed schedule (absolute ns, the graph's clock)."""

    start_ns: np.ndarray  #: int64, when each node started running
    end_ns: np.ndarray  #: int64
    #: int64, when each node was ready (equals start except for collective participants
    #: that arrived before the last one: they waited ``start - ready``)
    ready_ns: np.ndarray
    #: number of rounds the engine needed (a measure of dependency depth across lanes)
    rounds: int


def schedule(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Replay ``graph``: ``(start_ns, end_ns)`` of every node. See :func:`schedule_full`."""
    s = schedule_full(graph)
    return s.start_ns, s.end_ns


def _chains(n: int, lsrc: np.ndarray, ldst: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Order nodes so that every lane-order chain is contiguous.

    Returns ``(node_at, is_head)``: ``node_at[p]`` is the node at position ``p`` (None
    when that is ``p`` itself: lane-order edges are all ``(i, i + 1)``, as in built
    graphs); ``is_head[p]`` is True where a chain starts.
    """
    if len(ldst) == 0:
        return None, np.ones(n, dtype=bool)
    if bool(np.all(ldst == lsrc + 1)) and bool(np.all(lsrc[1:] > lsrc[:-1])):
        is_head = np.ones(n, dtype=bool)  # edges (i, i + 1), each node once: ids are chains
        is_head[ldst] = False
        return None, is_head
    prev = np.full(n, -1, dtype=np.int64)
    if len(ldst):
        counts_in = np.bincount(ldst, minlength=n)
        counts_out = np.bincount(lsrc, minlength=n)
        if counts_in.max() > 1 or counts_out.max() > 1:
            bad = int(np.flatnonzero((counts_in > 1) | (counts_out > 1))[0])
            raise TracekitError(
                f"node {bad} has more than one lane-order predecessor or successor; a lane "
                "runs its nodes one at a time: give each node at most one LANE_ORDER in and out")
        prev[ldst] = lsrc
    if len(ldst) == 0 or bool(np.all(ldst == lsrc + 1)):
        return None, prev < 0
    # general case: list ranking by pointer jumping (log2 of the longest chain rounds)
    head = np.where(prev < 0, np.arange(n), prev)
    dist = (prev >= 0).astype(np.int64)
    for _ in range(64):
        nxt = head[head]
        if np.array_equal(nxt, head):
            break
        dist = dist + dist[head] * (head != nxt)
        head = nxt
    # heads are nodes without predecessor; nodes whose pointer never reaches one are a cycle
    cyc = prev[head] >= 0
    if cyc.any():
        nodes = np.flatnonzero(cyc)[:5].tolist()
        raise TracekitError(f"lane-order edges form a cycle through nodes {nodes}; a lane must "
                            "be a chain: check the edges added by the what-if")
    node_at = np.lexsort((dist, head))
    is_head = prev[node_at] < 0
    return node_at.astype(np.int64), is_head


def _ids(a: np.ndarray) -> np.ndarray:
    """Node ids as an int32 or int64 array (as given when it is one: no copy)."""
    a = np.asarray(a)
    return a if a.dtype in (np.int32, np.int64) else a.astype(np.int64)


def _index_dtype(size: int) -> type:
    """int32 for indices and counts up to ``size`` while they fit, else int64 (halves the
    engine's per-node index arrays; every value stays exact)."""
    return np.int32 if size < 2**31 - 1 else np.int64


def _value_dtype(values: np.ndarray, narrow: type = np.int32) -> type:
    """``narrow`` (int32 by default) when every value fits in it, else int64: the dtype
    that holds ``values`` exactly in less memory where it can (sums are taken in int64)."""
    info = np.iinfo(narrow)
    if len(values) == 0 or (int(values.min()) >= info.min and int(values.max()) <= info.max):
        return narrow
    return np.int64


def _csr(keys: np.ndarray, n: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Stable order of ``keys`` (None when already sorted) and row pointers (n + 1;
    int32 while the keys fit)."""
    order = None
    if len(keys) > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
        order = np.argsort(keys, kind="stable")
    ptr = np.zeros(n + 1, dtype=_index_dtype(len(keys)))
    np.cumsum(np.bincount(keys, minlength=n), out=ptr[1:], dtype=ptr.dtype)
    return order, ptr


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(lo[i], hi[i])`` for every i (all hi >= lo)."""
    lens = hi - lo
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    keep = lens > 0
    lo, lens = lo[keep], lens[keep]
    offs = np.cumsum(lens) - lens
    out = np.ones(total, dtype=np.int64)
    out[0] = lo[0]
    out[offs[1:]] = lo[1:] - (lo[:-1] + lens[:-1] - 1)
    return np.cumsum(out)


def schedule_full(graph: Graph) -> Schedule:
    """Replay ``graph`` and return the full :class:`Schedule`.

    Raises :class:`TracekitError` on a cycle (naming nodes on it) or on malformed lanes.
    """
    t_setup = time.perf_counter()
    n = graph.n_nodes
    if n == 0:
        e = np.zeros(0, dtype=np.int64)
        return Schedule(start_ns=e, end_ns=e.copy(), ready_ns=e.copy(), rounds=0)
    lay = _lay_out(graph)
    t_loop = time.perf_counter()
    st = _State.initial(lay)
    while st.n_done < n:
        st.rounds += 1
        moved = _advance_chains(lay, st)
        started = _start_collectives(lay, st)
        if not (moved or started):
            undone = np.zeros(n, dtype=bool)
            undone[lay.node_ids(np.flatnonzero(st.end == _NEG))] = True
            raise TracekitError(cycle_message(graph, undone))
    log.debug("replayed %d nodes in %d rounds: setup %.2fs, rounds %.2fs", n, st.rounds,
              t_loop - t_setup, time.perf_counter() - t_loop)
    t0, node_at, members = lay.t0, lay.node_at, lay.members
    del lay  # the layout's arrays go before the schedule's ready times are laid out
    return _schedule_by_node(st, t0, node_at, members)


@dataclass(frozen=True, kw_only=True)
class _Layout:
    """A graph laid out for the engine, in *position* space: nodes reordered so that every
    lane-order chain is a contiguous range of positions (positions are node ids when
    ``identity``). Per-position arrays are indexed by position, not node id."""

    n: int
    node_at: np.ndarray | None  #: node id at each position (None: ``identity``)
    identity: bool  #: positions are node ids (built graphs)
    is_head: np.ndarray  #: a chain starts at this position
    chain_start: np.ndarray  #: first position of each chain
    chain_end: np.ndarray  #: one past the last position of each chain
    t0: int  #: the earliest measured start: times are relative to it while replaying
    dur: np.ndarray
    measured_start: np.ndarray  #: a source is released at its measured start (minus t0)
    lane_delay: np.ndarray  #: delay of the lane-order edge into each position (0: none)
    #: non-lane edges, CSR by target (sources and delays) and by source (targets)
    #: (the per-node row pointers are int32 while the edges fit: a 10M-node graph's
    #: engine state is the largest thing a replay holds; the per-edge arrays stay int64,
    #: which the rounds index and add fastest)
    in_ptr: np.ndarray
    in_src: np.ndarray
    in_delay: np.ndarray
    out_ptr: np.ndarray
    out_dst: np.ndarray
    #: the positions of collective participants (collectives of >= 2), ascending, and
    #: each one's group (per member, not per position: members are few)
    members: np.ndarray
    member_gid: np.ndarray
    gsize: np.ndarray  #: participants of each group
    is_member: np.ndarray  #: the position is in ``members``

    def chain_of(self, p: np.ndarray) -> np.ndarray:
        """The chain each position belongs to."""
        return np.searchsorted(self.chain_start, p, side="right") - 1

    def node_ids(self, p: np.ndarray) -> np.ndarray:
        """The node id at each position of ``p``."""
        return p if self.node_at is None else self.node_at[p]

    def release(self, p: np.ndarray) -> np.ndarray:
        """When the positions ``p`` are released as sources: measured start - t0."""
        return self.measured_start[p] - self.t0


@dataclass(kw_only=True)
class _State:
    """The engine's progress through a :class:`_Layout` (position space, times relative
    to ``t0``); updated in place round by round."""

    start: np.ndarray
    end: np.ndarray  #: _NEG until the position is timed
    #: when each collective participant (``lay.members``) was ready (_NEG until timed);
    #: every other node is ready when it starts
    member_ready: np.ndarray
    ptr: np.ndarray  #: per chain, the first position not yet timed
    last_end: np.ndarray  #: per chain, the end of its last timed position
    #: per position, unfinished non-lane predecessors (+1 for a collective participant:
    #: its group, which starts when every participant arrived)
    rem: np.ndarray
    cand: np.ndarray  #: positions that may block their chain (rem > 0 at the start)
    cand_hi: np.ndarray  #: per chain, one past its last candidate in ``cand``
    cp: np.ndarray  #: per chain, its first candidate not known to be free
    arrived: np.ndarray  #: collective participants at the head of their chain
    waiting: np.ndarray  #: arrived participants of collectives not yet started
    waiting_mi: np.ndarray  #: the index in ``lay.members`` of each of ``waiting``
    garrived: np.ndarray  #: per group, participants arrived
    n_done: int = 0
    rounds: int = 0

    @classmethod
    def initial(cls, lay: _Layout) -> _State:
        """Nothing timed yet: every chain at its head."""
        n = lay.n
        rem = np.diff(lay.in_ptr) + lay.is_member
        rem = rem.astype(_value_dtype(rem, np.int16), copy=False)
        cand = np.flatnonzero(rem > 0)
        return cls(
            start=np.zeros(n, dtype=np.int64),
            end=np.full(n, _NEG, dtype=np.int64),
            member_ready=np.full(len(lay.members), _NEG, dtype=np.int64),
            ptr=lay.chain_start.copy(),
            last_end=np.full(len(lay.chain_start), _NEG, dtype=np.int64),
            rem=rem,
            cand=cand,
            cand_hi=np.searchsorted(cand, lay.chain_end),
            cp=np.searchsorted(cand, lay.chain_start),
            arrived=np.zeros(n, dtype=bool),
            waiting=np.zeros(0, dtype=np.int64),
            waiting_mi=np.zeros(0, dtype=np.int64),
            garrived=np.zeros(len(lay.gsize), dtype=np.int64),
        )


def _lay_out(graph: Graph) -> _Layout:
    """Order ``graph``'s nodes by chain, and index its edges and collectives by position.

    Raises :class:`TracekitError` on dangling edges, lanes that are not chains, or two
    participants of one collective on one lane.
    """
    n = graph.n_nodes
    src, dst = _ids(graph.src), _ids(graph.dst)  # int32 or int64, never copied
    if len(src) and (src.min() < 0 or dst.min() < 0 or src.max() >= n or dst.max() >= n):
        raise TracekitError("an edge points to a node that does not exist; run "
                            "replay.checks.check_graph to find it")
    is_lane = np.asarray(graph.edge_kind) == EdgeKind.LANE_ORDER
    ldst = dst[is_lane]
    node_at, is_head = _chains(n, src[is_lane], ldst)
    identity = node_at is None  # chains are already contiguous id ranges (built graphs)
    pos_of = None
    if not identity:
        pos_of = np.empty(n, dtype=np.int64)
        pos_of[node_at] = np.arange(n)

    def take(a: np.ndarray) -> np.ndarray:
        """A per-node array in position order."""
        a = np.asarray(a, dtype=np.int64)
        return a if identity else a[node_at]

    def pos(v: np.ndarray) -> np.ndarray:
        """Positions of node ids."""
        return v if identity else pos_of[v]

    delay = np.asarray(graph.delay_ns, dtype=np.int64)
    lane_delay = np.zeros(n, dtype=_value_dtype(delay[is_lane]))
    lane_delay[pos(ldst)] = delay[is_lane]
    del ldst
    other = ~is_lane
    odelay = delay[other]
    in_ptr, in_src, in_delay, out_ptr, out_dst = _edges_by_position(
        n, pos(src[other]).astype(np.int64), pos(dst[other]).astype(np.int64), odelay)
    coll = _ids(graph.coll_id)  # int32 in a built graph: no copy
    members, member_gid, gsize = _collective_groups(coll if identity else coll[node_at])
    is_member = np.zeros(n, dtype=bool)
    is_member[members] = True
    chain_start = np.flatnonzero(is_head)
    t0 = int(np.min(graph.start_ns))
    lay = _Layout(
        n=n, node_at=node_at, identity=identity, is_head=is_head, chain_start=chain_start,
        chain_end=np.concatenate([chain_start[1:], [n]]),
        t0=t0, dur=take(graph.dur_ns), measured_start=take(graph.start_ns),
        lane_delay=lane_delay,
        in_ptr=in_ptr, in_src=in_src, in_delay=in_delay, out_ptr=out_ptr, out_dst=out_dst,
        members=members, member_gid=member_gid, gsize=gsize, is_member=is_member)
    _check_one_participant_per_chain(graph, lay)
    return lay


def _edges_by_position(n: int, osrc: np.ndarray, odst: np.ndarray, odelay: np.ndarray):
    """Non-lane edges (in position space) as CSR by target and by source:
    ``(in_ptr, in_src, in_delay, out_ptr, out_dst)``."""
    in_order, in_ptr = _csr(odst, n)
    in_src = osrc if in_order is None else osrc[in_order]
    in_delay = odelay if in_order is None else odelay[in_order]
    out_order, out_ptr = _csr(osrc, n)
    out_dst = odst if out_order is None else odst[out_order]
    return in_ptr, in_src, in_delay, out_ptr, out_dst


def _collective_groups(coll: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(members, member_gid, gsize)``: collectives of >= 2 participants get one virtual
    predecessor, their group; ``members`` are the positions in such a group (ascending),
    ``member_gid`` each one's group, ``gsize`` each group's number of participants
    (groups of one included, never referenced)."""
    member = np.flatnonzero(coll >= 0)
    gsize = np.zeros(0, dtype=np.int64)
    if not len(member):
        return member, np.zeros(0, dtype=np.int64), gsize
    _, inv, gsize = np.unique(coll[member], return_inverse=True, return_counts=True)
    inv = inv.ravel()
    multi = gsize[inv] > 1
    return member[multi], inv[multi], gsize


def _check_one_participant_per_chain(graph: Graph, lay: _Layout) -> None:
    """Raise when a collective has two participants on one chain (it would wait for
    itself)."""
    mp = lay.members
    if not len(mp):
        return
    n_chains = len(lay.chain_start)
    key = lay.member_gid.astype(np.int64) * (n_chains + 1) + lay.chain_of(mp)
    uk, kc = np.unique(key, return_counts=True)
    if (kc > 1).any():
        g = int(uk[kc > 1][0] // (n_chains + 1))
        v = int(lay.node_ids(mp[lay.member_gid == g][:1])[0])
        raise TracekitError(f"collective {int(graph.coll_id[v])} has two participants on "
                            "one lane; a lane runs one node at a time, so it would wait "
                            "for itself: give each participant its own lane")


def _unblock_successors(lay: _Layout, st: _State, pos: np.ndarray) -> None:
    """Unblock the non-lane successors of finished positions."""
    lo, hi = lay.out_ptr[pos], lay.out_ptr[pos + 1]
    if int((hi - lo).sum()):
        tgt = lay.out_dst[_ranges(lo, hi)]
        np.subtract.at(st.rem, tgt, st.rem.dtype.type(1))  # a typed 1: numpy's fast path


def _ready_from_edges(lay: _Layout, st: _State,
                      pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ready, has_in)`` of positions whose non-lane predecessors all finished: the
    latest predecessor end plus edge delay (_NEG where there is no such edge)."""
    r = np.full(len(pos), _NEG, dtype=np.int64)
    elo = lay.in_ptr[pos]
    cnt = lay.in_ptr[pos + 1] - elo
    has_in = cnt > 0
    if has_in.any():
        eidx = _ranges(elo[has_in], elo[has_in] + cnt[has_in])
        vals = st.end[lay.in_src[eidx]] + lay.in_delay[eidx]
        c_in = cnt[has_in]
        r[has_in] = np.maximum.reduceat(vals, np.cumsum(c_in) - c_in)
    return r, has_in


def _first_blocked(lay: _Layout, st: _State, active: np.ndarray) -> np.ndarray:
    """Per active chain, its first position still waiting on a predecessor (the chain's
    end when none is). Searches the chain's candidates in doubling windows and moves
    ``st.cp`` past the free ones."""
    cand, cand_hi, cp = st.cand, st.cand_hi, st.cp
    block = lay.chain_end[active].copy()
    look = np.flatnonzero(cp[active] < cand_hi[active])
    width = 8
    while len(look):
        c = active[look]
        offs = np.arange(width)
        idx = cp[c][:, None] + offs[None, :]
        valid = idx < cand_hi[c][:, None]
        pos = cand[np.minimum(idx, len(cand) - 1)]
        blocked = valid & (st.rem[pos] > 0)
        hit = blocked.any(axis=1)
        first = blocked.argmax(axis=1)
        hc = look[hit]
        cp[active[hc]] = cp[active[hc]] + first[hit]
        block[hc] = cand[cp[active[hc]]]
        miss = ~hit
        # all candidates in the window are free: skip them
        cp[c[miss]] = np.minimum(cp[c[miss]] + width, cand_hi[c[miss]])
        still = cp[c[miss]] < cand_hi[c[miss]]
        look = look[miss][still]
        width *= 2
    return block


def _advance_chains(lay: _Layout, st: _State) -> bool:
    """Time every chain's longest free prefix (its nodes' other predecessors all
    finished); False when no chain could move."""
    active = np.flatnonzero(st.ptr < lay.chain_end)
    block = _first_blocked(lay, st, active)
    go = block > st.ptr[active]
    if not go.any():
        return False
    ch = active[go]
    _time_prefixes(lay, st, ch, st.ptr[ch], block[go])
    return True


def _time_prefixes(lay: _Layout, st: _State, ch: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray) -> None:
    """Time positions ``lo[i]..hi[i]`` of chains ``ch[i]`` in one vectorized max-plus scan
    and mark them finished."""
    lens = hi - lo
    pos = _ranges(lo, hi)
    f = np.cumsum(lens) - lens  # index of each range's first node in pos
    # ready from non-lane edges (-inf when none: the lane decides)
    r, has_in = _ready_from_edges(lay, st, pos)
    # a chain head without other edges is a source: released at its measured start
    fh = f[lay.is_head[pos[f]] & ~has_in[f]]
    r[fh] = lay.release(pos[fh])
    # max-plus scan: s_i = C_i + max(base, max_{j<=i}(r_j - C_j)), C_i = sum of
    # dur + lane delay from the range's first node to i
    w = lay.dur[pos - 1] + lay.lane_delay[pos]
    w[f] = 0
    csum = np.cumsum(w)
    C = csum - np.repeat(csum[f], lens)
    V = r - C
    base = np.where(lo > lay.chain_start[ch], st.last_end[ch] + lay.lane_delay[lo], _NEG)
    V[f] = np.maximum(V[f], base)
    vfirst = np.repeat(V[f], lens)
    rel = np.maximum(V, vfirst) - vfirst
    span = np.maximum.reduceat(rel, f) + 1
    off = np.repeat(np.cumsum(span) - span, lens)
    s = np.maximum.accumulate(rel + off) - off + vfirst + C
    e = s + lay.dur[pos]
    st.start[pos] = s
    st.end[pos] = e
    st.n_done += len(pos)
    st.ptr[ch] = hi
    st.last_end[ch] = e[f + lens - 1]
    _unblock_successors(lay, st, pos)


def _start_collectives(lay: _Layout, st: _State) -> bool:
    """Mark collective participants that reached the head of their chain (all other
    predecessors finished) as arrived, and start every collective whose participants all
    arrived; False when none started."""
    heads_c = np.flatnonzero(st.ptr < lay.chain_end)
    hp = st.ptr[heads_c]
    newly = hp[lay.is_member[hp] & (st.rem[hp] == 1) & ~st.arrived[hp]]
    if not len(newly):
        return False
    st.arrived[newly] = True
    mi_new = np.searchsorted(lay.members, newly)
    g_new = lay.member_gid[mi_new]
    st.waiting = np.concatenate([st.waiting, newly])
    st.waiting_mi = np.concatenate([st.waiting_mi, mi_new])
    np.add.at(st.garrived, g_new, 1)
    full = np.unique(g_new)
    full = full[st.garrived[full] == lay.gsize[full]]
    if not len(full):
        return False
    go_now = np.isin(lay.member_gid[st.waiting_mi], full)
    sel, sel_mi = st.waiting[go_now], st.waiting_mi[go_now]
    st.waiting, st.waiting_mi = st.waiting[~go_now], st.waiting_mi[~go_now]
    _time_participants(lay, st, sel, sel_mi)
    return True


def _time_participants(lay: _Layout, st: _State, sel: np.ndarray, sel_mi: np.ndarray) -> None:
    """Start the participants ``sel`` (``lay.members[sel_mi]``) of full collectives
    together, at the latest ready time in their group, and mark them finished."""
    cidx = lay.chain_of(sel)
    lane_ready = np.where(sel > lay.chain_start[cidx],
                          st.last_end[cidx] + lay.lane_delay[sel], _NEG)
    r, has_in = _ready_from_edges(lay, st, sel)
    srcn = ~has_in & (sel == lay.chain_start[cidx])
    r[srcn] = lay.release(sel[srcn])
    rd = np.maximum(r, lane_ready)
    gu, ginv = np.unique(lay.member_gid[sel_mi], return_inverse=True)
    gstart = np.full(len(gu), _NEG, dtype=np.int64)
    np.maximum.at(gstart, ginv, rd)
    s = gstart[ginv]
    st.member_ready[sel_mi] = rd
    st.start[sel] = s
    st.end[sel] = s + lay.dur[sel]
    st.rem[sel] = 0
    st.n_done += len(sel)
    st.ptr[cidx] = sel + 1
    st.last_end[cidx] = st.end[sel]
    _unblock_successors(lay, st, sel)


def _schedule_by_node(st: _State, t0: int, node_at: np.ndarray | None,
                      members: np.ndarray) -> Schedule:
    """The finished state as a :class:`Schedule`: absolute times, indexed by node id
    (``node_at`` and ``members`` as in the :class:`_Layout`)."""
    start, end = st.start, st.end
    ready = start.copy()
    ready[members] = np.where(st.member_ready == _NEG, start[members], st.member_ready)
    for arr in (start, end, ready):  # in place: fresh 80 MB arrays cost page faults
        arr += t0
    if node_at is None:
        out_start, out_end, out_ready = start, end, ready
    else:
        n = len(node_at)
        out_start = np.empty(n, dtype=np.int64)
        out_end = np.empty(n, dtype=np.int64)
        out_ready = np.empty(n, dtype=np.int64)
        out_start[node_at] = start
        out_end[node_at] = end
        out_ready[node_at] = ready
    return Schedule(start_ns=out_start, end_ns=out_end, ready_ns=out_ready, rounds=st.rounds)
