"""Edges between host threads and CPU communication (gloo) of one rank.

How gloo runs, read from real torch 2.13 traces: ``c10d::allreduce_`` (any ``c10d::*``
collective) on the calling thread enqueues one work item on ProcessGroupGloo's FIFO
queue; a pool of worker threads (``pt_gloo_runloop``, two by default) serves the queue,
each free thread taking the next item, and the ``gloo:*`` event is recorded from the
moment a thread picks the item up until the collective finished (waiting for peers
included). Items are therefore picked up in issue order, the k-th issue runs the k-th
``gloo:*`` event of the rank, and two items can run at once on different threads. The
graph keeps each item on the thread that ran it (its lane) and adds:

- ``ISSUE``: the k-th issue op of the rank -> the k-th gloo work item (both by start).
- ``HOST_WAIT`` (``inferred=True``): nothing records the host blocking in ``work.wait()``
  (DDP's reducer at the end of backward, or user code). A long gap on a host thread that
  ends close to the end of a gloo work item of the same rank that ran during the gap is
  that wait: every work item in flight during the gap -> the first node after the gap.
  "Close" is loose (a quarter of the gap): on a busy CPU the work item's recorded end
  can lag the moment it woke the waiting thread by milliseconds. An explicit wait op
  (``c10d::wait``, ``wait_tensor``) that returned right after a work item ended gets the
  same edge, to the node after it, and keeps only its un-blocked part.
- ``HOST_WAIT`` (``inferred=True``) between host threads of a rank: a gap on one thread
  that ends shortly after a node of another thread ended (the main thread blocked in
  ``loss.backward()`` until the autograd thread finished; the autograd thread idle until
  the main thread called it). The thread "resumes" at its first event of any kind after
  the gap (annotations count: python runs before the next op).

Example (rank 0; µs)::

    main   c10d::allreduce_ [4587, 7324] ... AccumulateGrad [9898, 9985]  (gap)
           as_strided [13766, 13780]
    gloo   gloo:all_reduce [4681, 13690]
    edges  ISSUE c10d::allreduce_ -> gloo:all_reduce
           HOST_WAIT gloo:all_reduce -> as_strided (inferred: the 3.8 ms gap ends
           76 µs after the work item)
"""

from __future__ import annotations

import numpy as np

from tracekit.graph.draft import GraphDraft
from tracekit.graph.model import EdgeKind, NodeKind
from tracekit.graph.select import WAIT_OP

#: a host gap is a wait only if it is at least this long ...
MIN_WAIT_GAP_NS = 50_000
#: ... and at least this many times the lane's median gap between nodes
MIN_WAIT_GAP_FACTOR = 4.0
#: the host must resume within this long (or a fraction of the gap) of the work item's end
WAKE_TOLERANCE_NS = 400_000
WAKE_TOLERANCE_FRACTION = 0.25


def add_host_edges(d: GraphDraft) -> dict[str, int]:
    """Add ISSUE edges (gloo ranks) and inferred HOST_WAIT edges (every rank)."""
    counts = {"issue": 0, "host_wait_inferred": 0, "thread_wait_inferred": 0, "unissued": 0}
    rank, is_gpu = d.rank, d.is_gpu
    is_cpu_comm = (d.kind == NodeKind.COMM) & ~is_gpu
    comm_lane = np.array([ln.kind == "comm" for ln in d.lanes], dtype=bool)
    on_host_lane = ~is_gpu & ~comm_lane[d.lane]
    is_issue = on_host_lane & (d.kind == NodeKind.LAUNCH) & d.ev.has_collective()[d.index]
    first, last = d.lane_first_last()
    resume = _ResumeTimes(d)
    issue_src, issue_dst = [], []
    wait_src, wait_dst, thread_src, thread_dst = [], [], [], []
    is_wait = on_host_lane & d.ev.name_matches(WAIT_OP, d.index)
    lanes_of: dict[int, list[int]] = {}
    for ln in d.lanes:
        if ln.kind == "cpu" and not is_gpu[first[ln.id]]:
            lanes_of.setdefault(ln.rank, []).append(ln.id)
    # node ids are sorted by rank: each rank's nodes are one range
    cut = np.flatnonzero(np.concatenate([[True], rank[1:] != rank[:-1], [True]])) if len(
        rank) else np.zeros(1, dtype=np.int64)
    for lo, hi in zip(cut[:-1].tolist(), cut[1:].tolist()):
        r = int(rank[lo])
        work = lo + np.flatnonzero(is_cpu_comm[lo:hi])
        work = work[np.argsort(d.start[work], kind="stable")]
        issues = lo + np.flatnonzero(is_issue[lo:hi])
        issues = issues[np.argsort(d.start[issues], kind="stable")]
        # FIFO: the k-th issue feeds the k-th work item; an issue must start before its item
        j = 0
        for w in work:
            if j < len(issues) and d.start[issues[j]] <= d.start[w]:
                issue_src.append(int(issues[j]))
                issue_dst.append(int(w))
                j += 1
            else:
                counts["unissued"] += 1
        host_lanes = lanes_of.get(r, [])
        for lane in host_lanes:
            a, b = first[lane], last[lane]
            if b - a < 2:
                continue
            resumed = resume.after(lane, d.end[a:b - 1])
            src, dst = _comm_gap_waits(d, a, b, work, resumed)
            wait_src.extend(src)
            wait_dst.extend(dst)
            others = [np.arange(first[x], last[x]) for x in host_lanes if x != lane]
            if others:
                src, dst = _thread_gap_waits(d, a, b, np.concatenate(others), resumed)
                thread_src.extend(src)
                thread_dst.extend(dst)
        # explicit wait ops that returned right after a work item ended
        if len(work):
            ends = d.end[work]
            o = np.argsort(ends, kind="stable")
            work_by_end, ends = work[o], ends[o]
            waits = lo + np.flatnonzero(is_wait[lo:hi])
            nxt = d.next_on_lane(waits)
            for v, n in zip(waits, nxt):
                i = int(np.searchsorted(ends, d.end[v], side="right")) - 1
                if n < 0 or i < 0 or ends[i] <= d.start[v]:
                    continue
                if d.end[v] - ends[i] <= max(WAKE_TOLERANCE_NS, (d.end[v] - d.start[v]) // 20):
                    d.end[v] = max(d.start[v], d.end[v] - (ends[i] - d.start[v]))
                    wait_src.append(int(work_by_end[i]))
                    wait_dst.append(int(n))
    counts["issue"] = d.add_edges(issue_src, issue_dst, EdgeKind.ISSUE)
    counts["host_wait_inferred"] = d.add_edges(wait_src, wait_dst, EdgeKind.HOST_WAIT,
                                               inferred=True)
    counts["thread_wait_inferred"] = d.add_edges(thread_src, thread_dst, EdgeKind.HOST_WAIT,
                                                 inferred=True)
    return counts


class _ResumeTimes:
    """When a host thread became active again after a node: the first event of any kind
    (annotations included) that starts after it, on the same thread.

    Keeps the host events' start times grouped by (rank, thread) and, per thread, where
    its run of them lies (not a rank and a thread column per event: those are most of a
    large world's scratch memory here)."""

    def __init__(self, d: GraphDraft) -> None:
        ev = d.ev
        host = np.flatnonzero(~ev.is_gpu & ev.in_graph)
        key_rank, key_lane = ev.rank[host], ev.lane[host]
        order = None
        if not _sorted_by(key_rank, key_lane, ev.ts[host]):  # a table as loaded is sorted
            order = np.lexsort((ev.ts[host], key_lane, key_rank))
            key_rank, key_lane = key_rank[order], key_lane[order]
        cut = (np.flatnonzero((key_rank[1:] != key_rank[:-1]) | (key_lane[1:] != key_lane[:-1]))
               + 1 if len(host) else np.zeros(0, dtype=np.int64))
        starts = np.concatenate([[0], cut]).astype(np.int64) if len(host) else cut
        ends = np.append(starts[1:], len(host))
        self._runs = {(int(key_rank[a]), int(key_lane[a])): (int(a), int(b))
                      for a, b in zip(starts.tolist(), ends.tolist())}
        del key_rank, key_lane
        self._ts = ev.ts[host] if order is None else ev.ts[host[order]]
        self._lanes = d.lanes

    def after(self, lane: int, t: np.ndarray) -> np.ndarray:
        ln = self._lanes[lane]
        lo, hi = self._runs.get((ln.rank, ln.local_id), (0, 0))
        ts = self._ts[lo:hi]
        i = np.searchsorted(ts, t, side="right")
        out = np.full(len(t), np.iinfo(np.int64).max, dtype=np.int64)
        ok = i < len(ts)
        out[ok] = ts[i[ok]]
        return out


def _sorted_by(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    """Whether rows are sorted by (a, b, c) (comparisons only: no difference arrays)."""
    if len(a) < 2:
        return True
    a0, a1, b0, b1, c0, c1 = a[:-1], a[1:], b[:-1], b[1:], c[:-1], c[1:]
    return bool(((a1 > a0) | ((a1 == a0) & ((b1 > b0) | ((b1 == b0) & (c1 >= c0))))).all())


def _long_gaps(d: GraphDraft, a: int, b: int, resumed: np.ndarray):
    """Gaps between the nodes ``a..b-1`` of one lane: (start, resume time, length, is long)."""
    gap_start, gap_end = d.end[a:b - 1], d.start[a + 1:b]
    resumed = np.minimum(resumed, gap_end)
    gap = gap_end - gap_start
    median_gap = float(np.median(np.maximum(gap, 0))) if len(gap) else 0.0
    long_enough = gap >= max(MIN_WAIT_GAP_NS, MIN_WAIT_GAP_FACTOR * median_gap)
    return gap_start, resumed, gap, long_enough


def _comm_gap_waits(d: GraphDraft, a: int, b: int, work: np.ndarray,
                    resumed: np.ndarray) -> tuple[list[int], list[int]]:
    """Gaps of one host lane that are waits for gloo work: the thread resumed close to the
    end of a work item that ran during the gap (its recorded end can be late or early by a
    few ms when the 2 threads fight for a core: tolerance ``max(WAKE_TOLERANCE_NS,
    gap * WAKE_TOLERANCE_FRACTION)``). The node after the gap then waits for every work
    item in flight during the gap (DDP waits for all outstanding buckets)."""
    if len(work) == 0:
        return [], []
    gap_start, resumed, gap, long_enough = _long_gaps(d, a, b, resumed)
    ws, we = d.start[work], d.end[work]
    src, dst = [], []
    for i in np.flatnonzero(long_enough):
        tol = max(WAKE_TOLERANCE_NS, int(gap[i] * WAKE_TOLERANCE_FRACTION))
        in_flight = (ws < resumed[i]) & (we > gap_start[i]) & (we <= resumed[i] + tol)
        if not in_flight.any() or np.min(np.abs(we[in_flight] - resumed[i])) > tol:
            continue
        for w in work[in_flight]:
            src.append(int(w))
            dst.append(a + int(i) + 1)
    return src, dst


def _thread_gap_waits(d: GraphDraft, a: int, b: int, sources: np.ndarray,
                      resumed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaps of one host lane that end right after a node of another host thread ended: the
    latest such node -> the node after the gap."""
    gap_start, resumed, gap, long_enough = _long_gaps(d, a, b, resumed)
    ends = d.end[sources]
    o = np.argsort(ends, kind="stable")
    by_end, ends = sources[o], ends[o]
    i = np.searchsorted(ends, resumed, side="right") - 1
    ok = long_enough & (i >= 0)
    i = np.where(ok, i, 0)
    ended = ends[i] if len(ends) else np.zeros(len(i), dtype=np.int64)
    ok &= ended > gap_start
    ok &= (resumed - ended) <= np.maximum(WAKE_TOLERANCE_NS, gap // 20)
    pos = np.flatnonzero(ok)
    return by_end[i[pos]], a + pos + 1
