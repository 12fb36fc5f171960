"""Edges between host threads and GPU streams of one rank.

- ``LAUNCH``: the runtime call that queued a device op -> the op (same ``correlation``).
- ``STREAM_WAIT``: a ``cuda_sync`` "Stream Wait Event" on stream S (``wait_on_stream`` W,
  ``wait_on_corr`` C): the last op on W launched before the ``cudaEventRecord`` with
  correlation C -> the first op on S launched after the ``cudaStreamWaitEvent``.
- ``HOST_WAIT`` from device work to the host node after a blocking call:
  ``cudaStreamSynchronize`` (the stream of its "Stream Sync" event),
  ``cudaDeviceSynchronize`` / "Context Sync" (every stream of the rank), a memcpy call
  that returned only after its copy ended (the copy). Calls that block without saying on
  what (``cudaEventSynchronize``, a stream sync without its event) are matched to the
  device op that ended last while they blocked, and marked ``inferred``.
- ``STREAM_WAIT`` (``inferred=True``) in traces without ``cuda_sync`` events: a device op
  that started well after both its launch and its stream predecessor, right after an op
  on another stream ended (within :data:`STREAM_WAKE_NS`), waited for that op.

A blocking call's measured duration includes the wait; its node keeps only the
un-blocked part (``end`` is moved back by the time spent before the awaited op ended),
and the wait becomes the HOST_WAIT edge into the next host node, so a replay that moves
the device work moves the host with it.

Example (one rank, times in µs)::

    host   cudaLaunchKernel [0, 5]        cudaStreamSynchronize [6, 120]   aten::add [125, 130]
    gpu                         kernel [7, 117]
    edges  LAUNCH launch -> kernel; HOST_WAIT kernel -> aten::add (delay 8);
           the sync node keeps [6, 9] (its 3 µs of un-blocked cost)
"""

from __future__ import annotations

import re

import numpy as np

from tracekit.core.groups import groups, member_of
from tracekit.core.schema import EventKind
from tracekit.graph.arrays import kind_code
from tracekit.graph.draft import GraphDraft
from tracekit.graph.model import EdgeKind, NodeKind
from tracekit.graph.select import SYNC_CALL
from tracekit.log import get_logger

log = get_logger(__name__)

#: a blocking call "ended right after" a device op when it returned within this much
WAKE_TOLERANCE_NS = 50_000
_KEY = np.int64(1) << np.int64(40)
#: a device op that starts this soon after an op on another stream ended waited for it
STREAM_WAKE_NS = 10_000
_DEVICE_SYNC = re.compile(r"DeviceSynchronize|CtxSynchronize")
_MEMCPY = re.compile(r"Memcpy")


def _key(rank: np.ndarray, value: np.ndarray) -> np.ndarray:
    return rank.astype(np.int64) * _KEY + value.astype(np.int64)


def add_device_edges(d: GraphDraft) -> dict[str, int]:
    """Add LAUNCH, STREAM_WAIT and HOST_WAIT edges for every rank with GPU lanes.

    Returns counts by edge family, for the graph notes.
    """
    counts = {"launch": 0, "stream_wait": 0, "stream_wait_inferred": 0, "host_wait": 0,
              "host_wait_inferred": 0}
    if not d.is_gpu.any():
        return counts
    launch_src, launch_dst = _launch_pairs(d)
    counts["launch"] = d.add_edges(launch_src, launch_dst, EdgeKind.LAUNCH)
    idx = _LaunchIndex(d, launch_src, launch_dst)

    wait_src, wait_dst, sync_sources, ranks_with_waits = _cuda_sync_waits(d, idx)
    counts["stream_wait"] = d.add_edges(wait_src, wait_dst, EdgeKind.STREAM_WAIT)
    launch_end = np.full(d.n, np.iinfo(np.int64).min, dtype=np.int64)
    launch_end[launch_dst] = d.end[launch_src]
    src, dst = _infer_stream_waits(d, launch_end, skip_ranks=ranks_with_waits)
    del launch_end
    counts["stream_wait_inferred"] = d.add_edges(src, dst, EdgeKind.STREAM_WAIT, inferred=True)

    nxt_all = d.next_on_lane_all()
    exact_src, exact_dst, inf_src, inf_dst = _blocking_sync_waits(d, idx, sync_sources,
                                                                  nxt_all)
    mem_src, mem_dst = _blocking_memcpy_waits(d, launch_src, launch_dst, nxt_all)
    counts["host_wait"] = d.add_edges(exact_src + mem_src, exact_dst + mem_dst,
                                      EdgeKind.HOST_WAIT)
    counts["host_wait_inferred"] = d.add_edges(inf_src, inf_dst, EdgeKind.HOST_WAIT,
                                               inferred=True)
    return counts


def _launch_pairs(d: GraphDraft) -> tuple[np.ndarray, np.ndarray]:
    """``(host, device)`` node pairs of every launch: a host call and each device op with
    the same (rank, correlation). A CUDA / HIP graph launch (``cudaGraphLaunch``,
    ``hipGraphLaunch``) queues every kernel of the graph under its one correlation id, so
    one host node can launch many device nodes, on several streams."""
    rank, corr, is_gpu = d.rank, d.correlation, d.is_gpu
    dev = np.flatnonzero(is_gpu & (corr >= 0))
    host = np.flatnonzero(~is_gpu & (corr >= 0))
    hkey = _key(rank[host], corr[host])
    order = np.argsort(hkey, kind="stable")
    hkey, host_sorted = hkey[order], host[order]
    dkey = _key(rank[dev], corr[dev])
    pos = np.clip(np.searchsorted(hkey, dkey), 0, max(len(hkey) - 1, 0))
    hit = hkey[pos] == dkey if len(hkey) else np.zeros(len(dev), dtype=bool)
    return host_sorted[pos[hit]], dev[hit]


class _LaunchIndex:
    """Lookups for one draft: device ops of each (rank, stream) by launch time."""

    def __init__(self, d: GraphDraft, launch_src: np.ndarray, launch_dst: np.ndarray):
        # launch time of every device node (host start of its launch, else its own start)
        launch_time = d.start.copy()
        launch_time[launch_dst] = d.start[launch_src]
        first, last = d.lane_first_last()
        self.gpu_lanes = [ln for ln in d.lanes if ln.kind in ("gpu", "comm")
                          and d.is_gpu[first[ln.id]]]
        # per lane, running max keeps launch times sorted for searchsorted
        self._lane_launch = {}
        for ln in self.gpu_lanes:
            a, b = first[ln.id], last[ln.id]
            self._lane_launch[(ln.rank, ln.local_id)] = (
                a, np.maximum.accumulate(launch_time[a:b]))
        self._streams_of_rank: dict[int, list[int]] = {}
        for (r, s) in self._lane_launch:
            self._streams_of_rank.setdefault(r, []).append(s)

    def streams(self, r: int) -> list[int]:
        """The GPU streams (and comm channels) of rank ``r``."""
        return self._streams_of_rank.get(r, [])

    def last_launched_before(self, r: int, stream: int, t: int) -> int:
        """The last device op on ``stream`` launched before ``t``; -1 when none."""
        entry = self._lane_launch.get((r, stream))
        if entry is None:
            return -1
        a, times = entry
        i = int(np.searchsorted(times, t, side="left")) - 1
        return a + i if i >= 0 else -1

    def first_launched_after(self, r: int, stream: int, t: int) -> int:
        """The first device op on ``stream`` launched after ``t``; -1 when none."""
        entry = self._lane_launch.get((r, stream))
        if entry is None:
            return -1
        a, times = entry
        i = int(np.searchsorted(times, t, side="right"))
        return a + i if i < len(times) else -1



class _HostCalls:
    """Lookups by (rank, correlation) for the ``cuda_sync`` events of one draft: the host
    time of any host event and the host node (built only for a trace that has such
    events, and dropped with them)."""

    def __init__(self, d: GraphDraft):
        ev = d.ev
        # host time of any host event by (rank, correlation): cudaEventRecord is not a node
        all_host = np.flatnonzero(~ev.is_gpu & (ev.correlation >= 0) & ev.in_graph)
        ck = _key(ev.rank[all_host], ev.correlation[all_host])
        o = np.argsort(ck, kind="stable")
        self._event_key, self._event_ts = ck[o], ev.ts[all_host][o]
        # host node by (rank, correlation)
        host = np.flatnonzero(~d.is_gpu & (d.correlation >= 0))
        hn_key = _key(d.rank[host], d.correlation[host])
        hn_order = np.argsort(hn_key, kind="stable")
        self._node_key, self._node = hn_key[hn_order], host[hn_order]

    def host_time(self, r: int, c: int) -> int | None:
        """When the host event with correlation ``c`` on rank ``r`` started; None unknown."""
        k = np.int64(r) * _KEY + np.int64(c)
        i = int(np.searchsorted(self._event_key, k))
        found = i < len(self._event_key) and self._event_key[i] == k
        return int(self._event_ts[i]) if found else None

    def host_node(self, r: int, c: int) -> int:
        """The host node with correlation ``c`` on rank ``r``; -1 when none."""
        k = np.int64(r) * _KEY + np.int64(c)
        i = int(np.searchsorted(self._node_key, k))
        return int(self._node[i]) if i < len(self._node_key) and self._node_key[i] == k else -1


def _cuda_sync_waits(d: GraphDraft, idx: _LaunchIndex):
    """What the ``cuda_sync`` events say: ``(wait_src, wait_dst, sync_sources,
    ranks_with_waits)``, the STREAM_WAIT edges of "Stream Wait Event"s, the device nodes
    each blocking host sync node waited for, and the ranks with stream-wait events."""
    ev = d.ev
    syncs = np.flatnonzero(ev.is_gpu & (ev.kind == kind_code(EventKind.SYNC)))
    wait_src, wait_dst = [], []
    sync_sources: dict[int, list[int]] = {}  # host sync node -> device nodes it waited for
    calls = _HostCalls(d) if len(syncs) else None
    for i in syncs:
        r, s = int(ev.rank[i]), int(ev.lane[i])
        name = ev.names[ev.name[i]]
        call_t = calls.host_time(r, int(ev.correlation[i]))
        if call_t is None:
            call_t = int(ev.ts[i])
        if ev.wait_on_stream[i] >= 0 and "Wait" in name:
            rec_t = (calls.host_time(r, int(ev.wait_on_corr[i])) if ev.wait_on_corr[i] >= 0
                     else None)
            src = idx.last_launched_before(r, int(ev.wait_on_stream[i]),
                                           rec_t if rec_t is not None else call_t)
            dst = idx.first_launched_after(r, s, call_t)
            if src >= 0 and dst >= 0 and d.lane[src] != d.lane[dst]:
                wait_src.append(src)
                wait_dst.append(dst)
            continue
        node = calls.host_node(r, int(ev.correlation[i]))
        if node < 0:
            continue
        streams = [s] if (0 <= s < 2**31 - 1 and "Context" not in name) else idx.streams(r)
        srcs = [idx.last_launched_before(r, st, int(d.start[node])) for st in streams]
        sync_sources.setdefault(node, []).extend(x for x in srcs if x >= 0)
    ranks_with_waits = {int(ev.rank[i]) for i in syncs if ev.wait_on_stream[i] >= 0}
    return wait_src, wait_dst, sync_sources, ranks_with_waits


def _blocking_sync_waits(d: GraphDraft, idx: _LaunchIndex, sync_sources: dict[int, list[int]],
                         nxt_all: np.ndarray):
    """HOST_WAIT edges of blocking sync calls, exact and inferred: ``(exact_src,
    exact_dst, inferred_src, inferred_dst)``, from each call's awaited device nodes to
    the host node after it; each call is shortened to its un-blocked part."""
    ev = d.ev
    rank, is_gpu = d.rank, d.is_gpu
    gpu_ranks = {ln.rank for ln in idx.gpu_lanes}
    is_sync_node = (d.kind == NodeKind.SYNC) & ~is_gpu & member_of(rank, gpu_ranks)
    names = ev.name_matches(SYNC_CALL, d.index)
    device_wide = ev.name_matches(_DEVICE_SYNC, d.index)
    calls = np.flatnonzero(is_sync_node & names)
    calls = calls[nxt_all[calls] >= 0]
    known = (np.isin(calls, np.fromiter(sync_sources, dtype=np.int64, count=len(sync_sources)))
             if sync_sources else np.zeros(len(calls), dtype=bool))
    told = known | device_wide[calls]
    exact_src, exact_dst = [], []
    for v in calls[told]:  # the calls whose trace says what they waited for (few)
        r, nxt = int(rank[v]), int(nxt_all[v])
        srcs = sync_sources.get(int(v))
        if srcs is None:
            srcs = [idx.last_launched_before(r, st, int(d.start[v])) for st in idx.streams(r)]
            srcs = [x for x in srcs if x >= 0]
        if srcs:
            _shorten(d, int(v), srcs)
            exact_src.extend(srcs)
            exact_dst.extend([nxt] * len(srcs))
    blind = calls[~told]
    src = _ended_while_blocked(d, blind)
    hit = src >= 0
    blind, src = blind[hit], src[hit]
    _shorten_all(d, blind, d.end[src])
    return exact_src, exact_dst, src.tolist(), nxt_all[blind].tolist()


def _blocking_memcpy_waits(d: GraphDraft, launch_src: np.ndarray, launch_dst: np.ndarray,
                           nxt_all: np.ndarray) -> tuple[list[int], list[int]]:
    """HOST_WAIT edges of memcpy calls that returned after their copy ended (blocking
    copies): copy -> the host node after the call, which is shortened to its un-blocked
    part."""
    src, dst = [], []
    mem = np.flatnonzero(~d.is_gpu & (d.kind == NodeKind.LAUNCH)
                         & d.ev.name_matches(_MEMCPY, d.index))
    if len(mem):
        src_of = np.full(d.n, -1, dtype=np.int64)
        src_of[launch_src] = launch_dst
        copy = src_of[mem]
        ok = copy >= 0
        mem, copy = mem[ok], copy[ok]
        blocking = (d.end[copy] <= d.end[mem]) & (d.end[copy] > d.start[mem])
        for v, c in zip(mem[blocking], copy[blocking]):
            nxt = int(nxt_all[v])
            if nxt >= 0:
                _shorten(d, int(v), [int(c)])
                src.append(int(c))
                dst.append(nxt)
    return src, dst


def _infer_stream_waits(d: GraphDraft, launch_end: np.ndarray, *,
                        skip_ranks: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Waits between streams in traces without ``cuda_sync`` events: a device op that
    started later than both its launch and its stream predecessor allow, within
    :data:`STREAM_WAKE_NS` of an op on another stream of its rank ending, waited for that
    op (``cudaStreamWaitEvent`` on an event recorded after it)."""
    dev = np.flatnonzero(d.is_gpu & ~member_of(d.rank, skip_ranks))
    if len(dev) == 0:
        return dev, dev
    prev_end = np.full(d.n, np.iinfo(np.int64).min, dtype=np.int64)
    same = np.flatnonzero(d.lane[1:] == d.lane[:-1]) + 1
    prev_end[same] = d.end[same - 1]
    explained = np.maximum(prev_end[dev], launch_end[dev])
    late = dev[d.start[dev] - explained > STREAM_WAKE_NS]
    src, dst = [], []
    by_rank = {r: dev[p] for r, p in groups(d.rank[dev])}
    for r, where in groups(d.rank[late]):
        nodes = by_rank[r]
        o = np.argsort(d.end[nodes], kind="stable")
        nodes, ends = nodes[o], d.end[nodes][o]
        mine = late[where]
        i = np.searchsorted(ends, d.start[mine], side="right") - 1
        ok = i >= 0
        u = np.where(ok, nodes[np.maximum(i, 0)], -1)
        ok &= d.lane[np.maximum(u, 0)] != d.lane[mine]
        ok &= d.start[mine] - d.end[np.maximum(u, 0)] <= STREAM_WAKE_NS
        src.extend(u[ok].tolist())
        dst.extend(mine[ok].tolist())
    return np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)


def _ended_while_blocked(d: GraphDraft, calls: np.ndarray) -> np.ndarray:
    """Per blocking host call, the device node of its rank that ended last inside the call
    ``[start, end]``, if the call returned right after it (within
    :data:`WAKE_TOLERANCE_NS` or a tenth of the call); -1 otherwise. One sort of the
    device nodes by (rank, end), one search per rank."""
    out = np.full(len(calls), -1, dtype=np.int64)
    dev = np.flatnonzero(d.is_gpu)
    if len(calls) == 0 or len(dev) == 0:
        return out
    dev = dev[np.lexsort((d.end[dev], d.rank[dev]))]
    dev_rank, dev_end = d.rank[dev], d.end[dev]
    for r, mine in groups(d.rank[calls]):
        lo, hi = np.searchsorted(dev_rank, [r, r + 1])
        if lo == hi:
            continue
        start, end = d.start[calls[mine]], d.end[calls[mine]]
        i = np.searchsorted(dev_end[lo:hi], end, side="right") - 1
        ok = i >= 0
        ended = dev_end[lo:hi][np.maximum(i, 0)]
        ok &= ended > start
        ok &= end - ended <= np.maximum(WAKE_TOLERANCE_NS, (end - start) // 10)
        out[mine[ok]] = dev[lo + i[ok]]
    return out


def _shorten_all(d: GraphDraft, calls: np.ndarray, blocked_until: np.ndarray) -> None:
    """:func:`_shorten` for many calls with one source each."""
    start, end = d.start[calls], d.end[calls]
    blocked = np.minimum(np.maximum(blocked_until - start, 0), end - start)
    d.end[calls] = end - blocked


def _shorten(d: GraphDraft, v: int, srcs: list[int]) -> None:
    """Drop the blocked part of host call ``v``: the time before its last source ended."""
    blocked_until = int(max(d.end[s] for s in srcs))
    blocked = min(max(blocked_until - int(d.start[v]), 0), int(d.end[v] - d.start[v]))
    d.end[v] = d.end[v] - blocked


