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


def _csr(keys: np.ndarray, n: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Stable order of ``keys`` (None when already sorted) and row pointers (n + 1)."""
    order = None
    if len(keys) > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
        order = np.argsort(keys, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=ptr[1:])
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
    src = np.asarray(graph.src, dtype=np.int64)
    dst = np.asarray(graph.dst, dtype=np.int64)
    if len(src) and (src.min() < 0 or dst.min() < 0 or src.max() >= n or dst.max() >= n):
        raise TracekitError("an edge points to a node that does not exist; run "
                            "replay.checks.check_graph to find it")
    is_lane = np.asarray(graph.edge_kind) == EdgeKind.LANE_ORDER
    node_at, is_head = _chains(n, src[is_lane], dst[is_lane])
    identity = node_at is None  # chains are already contiguous id ranges (built graphs)
    if identity:
        node_at = np.arange(n, dtype=np.int64)

        def take(a: np.ndarray) -> np.ndarray:
            return np.asarray(a, dtype=np.int64)

        def pos(v: np.ndarray) -> np.ndarray:
            return v
    else:
        pos_of = np.empty(n, dtype=np.int64)
        pos_of[node_at] = np.arange(n)

        def take(a: np.ndarray) -> np.ndarray:
            return np.asarray(a, dtype=np.int64)[node_at]

        def pos(v: np.ndarray) -> np.ndarray:
            return pos_of[v]

    t0 = int(np.min(graph.start_ns))
    dur = take(graph.dur_ns)
    release = take(graph.start_ns) - t0
    delay = np.asarray(graph.delay_ns, dtype=np.int64)
    lane_delay = np.zeros(n, dtype=np.int64)
    lane_delay[pos(dst[is_lane])] = delay[is_lane]

    # non-lane edges in position space, CSR by target and by source
    other = ~is_lane
    osrc = pos(src[other])
    odst = pos(dst[other])
    odelay = delay[other]
    in_order, in_ptr = _csr(odst, n)
    in_src = osrc if in_order is None else osrc[in_order]
    in_delay = odelay if in_order is None else odelay[in_order]
    out_order, out_ptr = _csr(osrc, n)
    out_dst = odst if out_order is None else odst[out_order]
    del osrc, odst, odelay, in_order, out_order, other

    # collectives: groups of >= 2 participants get one virtual predecessor (the group)
    coll = take(graph.coll_id)
    member = np.flatnonzero(coll >= 0)
    gid = np.full(n, -1, dtype=np.int64)
    gsize = np.zeros(0, dtype=np.int64)
    if len(member):
        _, inv, gsize = np.unique(coll[member], return_inverse=True, return_counts=True)
        multi = gsize[inv] > 1
        gid[member[multi]] = inv[multi]
    del coll
    is_member = gid >= 0
    rem = np.diff(in_ptr) + is_member

    chain_start = np.flatnonzero(is_head)
    chain_end = np.concatenate([chain_start[1:], [n]])

    def chain_of(p: np.ndarray) -> np.ndarray:
        return np.searchsorted(chain_start, p, side="right") - 1

    mp = np.flatnonzero(is_member)
    if len(mp):
        key = gid[mp] * (len(chain_start) + 1) + chain_of(mp)
        uk, kc = np.unique(key, return_counts=True)
        if (kc > 1).any():
            g = int(uk[kc > 1][0] // (len(chain_start) + 1))
            v = int(node_at[mp[gid[mp] == g][0]])
            raise TracekitError(f"collective {int(graph.coll_id[v])} has two participants on "
                                "one lane; a lane runs one node at a time, so it would wait "
                                "for itself: give each participant its own lane")

    t_loop = time.perf_counter()
    start = np.zeros(n, dtype=np.int64)
    end = np.full(n, _NEG, dtype=np.int64)
    ready = np.full(n, _NEG, dtype=np.int64)  # only collective participants
    ptr = chain_start.copy()
    last_end = np.full(len(chain_start), _NEG, dtype=np.int64)
    cand = np.flatnonzero(rem > 0)  # positions that may block their chain
    cand_lo = np.searchsorted(cand, chain_start)
    cand_hi = np.searchsorted(cand, chain_end)
    cp = cand_lo.copy()
    arrived = np.zeros(n, dtype=bool)
    waiting = np.zeros(0, dtype=np.int64)  # arrived participants of unstarted collectives
    garrived = np.zeros(len(gsize), dtype=np.int64)
    n_done = 0
    rounds = 0

    def finish(pos: np.ndarray) -> None:
        """Unblock the non-lane successors of finished positions."""
        lo, hi = out_ptr[pos], out_ptr[pos + 1]
        if int((hi - lo).sum()):
            tgt = out_dst[_ranges(lo, hi)]
            np.subtract.at(rem, tgt, 1)

    while n_done < n:
        rounds += 1
        progressed = False
        active = np.flatnonzero(ptr < chain_end)
        # ---- find each active chain's first blocked candidate ----
        block = chain_end[active].copy()
        look = np.flatnonzero(cp[active] < cand_hi[active])
        width = 8
        while len(look):
            c = active[look]
            offs = np.arange(width)
            idx = cp[c][:, None] + offs[None, :]
            valid = idx < cand_hi[c][:, None]
            pos = cand[np.minimum(idx, len(cand) - 1)]
            blocked = valid & (rem[pos] > 0)
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
        # ---- time the free prefixes ----
        go = block > ptr[active]
        if go.any():
            progressed = True
            ch = active[go]
            lo, hi = ptr[ch], block[go]
            lens = hi - lo
            pos = _ranges(lo, hi)
            f = np.cumsum(lens) - lens  # index of each range's first node in pos
            # ready from non-lane edges (-inf when none: the lane decides)
            r = np.full(len(pos), _NEG, dtype=np.int64)
            elo = in_ptr[pos]
            cnt = in_ptr[pos + 1] - elo
            has_in = cnt > 0
            if has_in.any():
                eidx = _ranges(elo[has_in], elo[has_in] + cnt[has_in])
                vals = end[in_src[eidx]] + in_delay[eidx]
                c_in = cnt[has_in]
                r[has_in] = np.maximum.reduceat(vals, np.cumsum(c_in) - c_in)
            # a chain head without other edges is a source: released at its measured start
            fh = f[is_head[pos[f]] & ~has_in[f]]
            r[fh] = release[pos[fh]]
            # max-plus scan: s_i = C_i + max(base, max_{j<=i}(r_j - C_j)), C_i = sum of
            # dur + lane delay from the range's first node to i
            w = dur[pos - 1] + lane_delay[pos]
            w[f] = 0
            csum = np.cumsum(w)
            C = csum - np.repeat(csum[f], lens)
            V = r - C
            base = np.where(lo > chain_start[ch], last_end[ch] + lane_delay[lo], _NEG)
            V[f] = np.maximum(V[f], base)
            vfirst = np.repeat(V[f], lens)
            rel = np.maximum(V, vfirst) - vfirst
            span = np.maximum.reduceat(rel, f) + 1
            off = np.repeat(np.cumsum(span) - span, lens)
            s = np.maximum.accumulate(rel + off) - off + vfirst + C
            e = s + dur[pos]
            start[pos] = s
            end[pos] = e
            n_done += len(pos)
            ptr[ch] = hi
            last_end[ch] = e[f + lens - 1]
            finish(pos)
        # ---- collectives whose participants all arrived ----
        heads_c = np.flatnonzero(ptr < chain_end)
        hp = ptr[heads_c]
        newly = hp[is_member[hp] & (rem[hp] == 1) & ~arrived[hp]]
        if len(newly):
            arrived[newly] = True
            waiting = np.concatenate([waiting, newly])
            np.add.at(garrived, gid[newly], 1)
            full = np.unique(gid[newly])
            full = full[garrived[full] == gsize[full]]
            if len(full):
                progressed = True
                go_now = np.isin(gid[waiting], full)
                sel = waiting[go_now]
                waiting = waiting[~go_now]
                cidx = chain_of(sel)
                lane_ready = np.where(sel > chain_start[cidx],
                                      last_end[cidx] + lane_delay[sel], _NEG)
                elo, ehi = in_ptr[sel], in_ptr[sel + 1]
                r = np.full(len(sel), _NEG, dtype=np.int64)
                has_in = ehi > elo
                if has_in.any():
                    eidx = _ranges(elo[has_in], ehi[has_in])
                    vals = end[in_src[eidx]] + in_delay[eidx]
                    starts = np.concatenate([[0], np.cumsum((ehi - elo)[has_in])[:-1]])
                    r[has_in] = np.maximum.reduceat(vals, starts)
                srcn = ~has_in & (sel == chain_start[cidx])
                r[srcn] = release[sel[srcn]]
                rd = np.maximum(r, lane_ready)
                gu, ginv = np.unique(gid[sel], return_inverse=True)
                gstart = np.full(len(gu), _NEG, dtype=np.int64)
                np.maximum.at(gstart, ginv, rd)
                s = gstart[ginv]
                ready[sel] = rd
                start[sel] = s
                end[sel] = s + dur[sel]
                rem[sel] = 0
                n_done += len(sel)
                ptr[cidx] = sel + 1
                last_end[cidx] = end[sel]
                finish(sel)
        if not progressed:
            undone = np.zeros(n, dtype=bool)
            undone[node_at[end == _NEG]] = True
            raise TracekitError(cycle_message(graph, undone))
    log.debug("replayed %d nodes in %d rounds: setup %.2fs, rounds %.2fs", n, rounds,
              t_loop - t_setup, time.perf_counter() - t_loop)
    np.copyto(ready, start, where=ready == _NEG)
    for arr in (start, end, ready):  # in place: fresh 80 MB arrays cost page faults
        arr += t0
    if identity:
        out_start, out_end, out_ready = start, end, ready
    else:
        out_start = np.empty(n, dtype=np.int64)
        out_end = np.empty(n, dtype=np.int64)
        out_ready = np.empty(n, dtype=np.int64)
        out_start[node_at] = start
        out_end[node_at] = end
        out_ready[node_at] = ready
    return Schedule(start_ns=out_start, end_ns=out_end, ready_ns=out_ready, rounds=rounds)
