"""Edge delays: the measured time between a predecessor's end and a node's start.

For every node ``v`` the *binding* predecessor is the one that ended last (lane
predecessor or any edge source); the measured gap from its end to ``v``'s start becomes
that edge's delay (host overhead between ops, launch latency, wake-up after a wait). The
other incoming edges get the *nominal* delay of their kind, the median of the binding
delays of the same kind (per lane for lane order, per rank for the others), capped so
that they never bind in the measured schedule. Replaying the measured durations thus
reproduces every measured start; a what-if that moves a non-binding predecessor later
makes it bind with a realistic gap instead of none.

Example (ns)::

    v starts 1_000; preds: lane prev ended 400, launch ended 950 (binding)
    -> launch delay 50; lane delay min(nominal lane gap, 600)

A negative delay means ``v`` started before that predecessor ended (a gloo work item is
picked up while ``c10d::allreduce_`` is still returning): kept, so the replay reproduces
it; the engine handles it like any other delay.
"""

from __future__ import annotations

import numpy as np

from tracekit.graph.model import EdgeKind


def group_median(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` per group id (0..n_groups-1); 0 for empty groups."""
    out = np.zeros(n_groups, dtype=np.int64)
    if len(values) == 0:
        return out
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    first = np.searchsorted(g, np.arange(n_groups), side="left")
    last = np.searchsorted(g, np.arange(n_groups), side="right")
    has = last > first
    lo = (first + last - 1) // 2
    hi = (first + last) // 2
    out[has] = (v[lo[has]] + v[hi[has]]) // 2
    return out


def calibrate_delays(*, src: np.ndarray, dst: np.ndarray, kind: np.ndarray,
                     target_start: np.ndarray, source_end: np.ndarray,
                     lane: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Delays for edges sorted by ``dst`` (see module doc). Returns ``(delay_ns, binding)``.

    ``target_start[v]``: measured start of ``v`` (a comm node: when it arrived);
    ``source_end[u]``: measured end of ``u`` (a blocking call: end of its un-blocked part).
    """
    m = len(src)
    delay = np.zeros(m, dtype=np.int64)
    binding = np.zeros(m, dtype=bool)
    if m == 0:
        return delay, binding
    val = source_end[src]
    slack = target_start[dst] - val
    seg_start = np.flatnonzero(np.concatenate([[True], dst[1:] != dst[:-1]]))
    seg_max = np.maximum.reduceat(val, seg_start)
    seg_len = np.diff(np.concatenate([seg_start, [m]]))
    is_max = val == np.repeat(seg_max, seg_len)
    # first edge reaching the maximum in each segment binds; a wait for something outside
    # the trace (UNRECORDED, beside the LAUNCH edge from the same call) takes the gap, so
    # the launch latency of other ops is not learned from it
    pos = np.arange(m)
    cand = np.where(is_max, pos, m)
    cand = np.where(is_max & (kind == EdgeKind.UNRECORDED), pos - m, cand)
    first_max = np.minimum.reduceat(cand, seg_start)
    first_max = np.where(first_max < 0, first_max + m, first_max)
    binding[first_max] = True

    lane_edge = kind == EdgeKind.LANE_ORDER
    n_lanes = int(lane.max()) + 1 if len(lane) else 0
    n_ranks = int(rank.max()) + 1 if len(rank) else 0
    # nominal: lane order per lane, other kinds per (rank, kind)
    group = np.where(lane_edge, lane[dst].astype(np.int64),
                     n_lanes + rank[dst].astype(np.int64) * 16 + kind.astype(np.int64))
    n_groups = n_lanes + max(n_ranks, 1) * 16
    sample = binding & (slack >= 0)
    nominal = group_median(group[sample], slack[sample], n_groups)
    delay[binding] = slack[binding]
    nb = ~binding
    delay[nb] = np.minimum(nominal[group[nb]], slack[nb])
    return delay, binding
