"""Choose which events of a run become graph nodes, and what kind each node is.

Node granularity (the rule every other graph module relies on):

- **Device lanes** (GPU streams): every kernel, memcpy, memset and NCCL kernel is a node.
  ``cuda_sync`` events and GPU annotations are not nodes: they only yield edges.
- **Host lanes** (CPU threads): a node is the *outermost op that contains no anchor*, and
  every anchor is a node. Anchors are the host events other work must be ordered against:
  CUDA runtime calls that queue device work or synchronize (launches, memcpy / memset,
  ``cud*Synchronize``, ``cudaStreamWaitEvent``), collective issue ops (``c10d::allreduce_``,
  ``record_param_comms``), gloo work (``gloo:*`` on ``pt_gloo_runloop`` threads) and
  wait ops (``*wait_tensor``, ``c10d::wait``: :data:`tracekit.core.waits.WAIT_OP`; a
  blocking collective such as ``c10d::barrier`` is an issue op here). Annotations
  (``ProfilerStep#N``, ``record_function`` ranges, python frames) are containers, never
  nodes. So on a CPU-only run the nodes of the main thread are the top-level ops
  (``aten::linear``, ``autograd::engine::evaluate_function: AddmmBackward0``, ...) except
  where an op issues a collective, which is split down to the issue op; on a GPU run they
  are the launches and syncs plus the host ops between them that launch nothing. Host
  time that no node covers (python, a parent op's own time around its children) becomes
  the delay of the lane-order edge into the next node (see :mod:`tracekit.graph.delays`).

Before (one host thread, indented by nesting)::

    ProfilerStep#2                              step        container
      DistributedDataParallel.forward           annotation  container
        aten::linear            343 us          cpu_op      node (no anchor inside)
          aten::addmm ...                                   inside a node
      autograd::...: AccumulateGrad   2816 us   cpu_op      contains an anchor: split
        torch::autograd::AccumulateGrad  5 us   cpu_op      node
        c10d::allreduce_        2737 us         cpu_op      anchor -> node (LAUNCH kind)

After: ``select_nodes`` returns the rows ``aten::linear``, ``torch::autograd::AccumulateGrad``,
``c10d::allreduce_`` (plus every other node) with their :class:`NodeKind`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tracekit.core.schema import EventKind
from tracekit.core.waits import WAIT_OP
from tracekit.graph.arrays import EventArrays, kind_code
from tracekit.graph.model import NodeKind

#: host runtime calls that are anchors even when no GPU event carries their correlation
_ANCHOR_RUNTIME = re.compile(r"Synchronize|WaitEvent|Memcpy|Memset", re.IGNORECASE)
#: host calls that synchronize (become SYNC nodes)
SYNC_CALL = re.compile(r"Synchronize|WaitEvent", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class SelectedNodes:
    """Events chosen as nodes (sorted by rank, lane kind, lane, start) and their kinds.

    ``start_ns``/``end_ns`` are the measured times, clipped so that the nodes of one lane
    never overlap (a few ns of rounding between nested ops otherwise break FIFO order).
    """

    index: np.ndarray  #: int64, position in the EventArrays the nodes were chosen from
    kind: np.ndarray  #: int8, NodeKind
    start_ns: np.ndarray  #: int64
    end_ns: np.ndarray  #: int64
    #: number of nodes whose start was clipped to the end of their lane predecessor
    clipped: int


def segment_ids(keys: list[np.ndarray]) -> np.ndarray:
    """Rows already sorted by ``keys`` -> a dense id per distinct key tuple (0, 0, 1, ...)."""
    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
    return np.cumsum(change) - 1


def host_node_mask(ts: np.ndarray, end: np.ndarray, lane_id: np.ndarray,
                   is_container: np.ndarray, is_anchor: np.ndarray,
                   is_op: np.ndarray) -> np.ndarray:
    """Which host events are nodes: the outermost anchor-free ops, and every anchor.

    Inputs are one entry per host event, sorted by ``(lane_id, ts ascending, end
    descending)`` so that a parent precedes its children. Vectorized: nesting comes from
    positions (the events starting inside ``[ts, end)`` of an event are its descendants)
    and a running maximum of the ends of non-split events.
    """
    n = len(ts)
    if n == 0:
        return np.zeros(0, dtype=bool)
    # times are >= 0 here; offsetting by lane * big keeps lanes apart in one sorted key
    big = np.int64(int(end.max()) + 2)
    lane64 = lane_id.astype(np.int64) * big
    key_ts = lane64 + ts
    # position of the last event of the lane that starts before this one ends
    last_inside = np.searchsorted(key_ts, lane64 + end, side="left") - 1
    pos = np.arange(n)
    last_inside = np.maximum(last_inside, pos)
    anchors_before = np.concatenate([[0], np.cumsum(is_anchor)])
    anchors_inside = anchors_before[last_inside + 1] - anchors_before[pos + 1]
    split = is_container | (anchors_inside > 0)  # descend into these
    # inside an unsplit op: an earlier unsplit event of the lane ends after this one starts
    run_max = np.maximum.accumulate(lane64 + np.where(split, 0, end))
    prev_max = np.concatenate([[np.int64(-1)], run_max[:-1]])
    covered = prev_max > key_ts
    return is_op & ~split & ~covered


def select_nodes(ev: EventArrays, *, gpu_ranks: set[int]) -> SelectedNodes:
    """Pick the node events among ``ev`` and give each its :class:`NodeKind`.

    ``gpu_ranks``: ranks whose trace has device lanes; their plain host ops are
    :attr:`NodeKind.HOST` (the device does the compute), on CPU-only ranks they are
    :attr:`NodeKind.COMPUTE`.
    """
    K = kind_code
    kind, rank, lane, ts, end, is_gpu = ev.kind, ev.rank, ev.lane, ev.ts, ev.end, ev.is_gpu
    container_k = [K(EventKind.STEP), K(EventKind.ANNOTATION)]
    host_op_k = [K(EventKind.CPU_OP), K(EventKind.RUNTIME), K(EventKind.LAUNCH),
                 K(EventKind.COMM)]
    device_k = [K(EventKind.KERNEL), K(EventKind.MEMCPY), K(EventKind.MEMSET), K(EventKind.COMM)]

    # ---- host side ----
    h = np.flatnonzero(~is_gpu & np.isin(kind, container_k + host_op_k))
    h = h[np.lexsort((-end[h], ts[h], lane[h], rank[h]))]
    hk = kind[h]
    is_container = np.isin(hk, container_k)
    is_comm = hk == K(EventKind.COMM)
    is_issue = (hk == K(EventKind.CPU_OP)) & ev.has_collective()[h]
    is_launch = hk == K(EventKind.LAUNCH)
    is_runtime_anchor = (hk == K(EventKind.RUNTIME)) & ev.name_matches(_ANCHOR_RUNTIME, h)
    is_wait = (hk == K(EventKind.CPU_OP)) & ev.name_matches(WAIT_OP, h)
    is_anchor = is_comm | is_issue | is_launch | is_runtime_anchor | is_wait
    lane_id = segment_ids([rank[h], lane[h]])
    t0 = ts[h].min() if len(h) else 0
    mask = host_node_mask(ts[h] - t0, end[h] - t0, lane_id, is_container, is_anchor,
                          ~is_container)
    host = h[mask]
    host_kind = np.full(len(host), NodeKind.HOST, dtype=np.int8)
    m_sync = ev.name_matches(SYNC_CALL, host) & (is_launch | is_runtime_anchor)[mask]
    m_sync |= is_wait[mask]
    host_kind[~np.isin(rank[host], sorted(gpu_ranks))] = NodeKind.COMPUTE
    host_kind[(is_launch | is_issue | is_runtime_anchor)[mask]] = NodeKind.LAUNCH
    host_kind[m_sync] = NodeKind.SYNC
    host_kind[is_comm[mask]] = NodeKind.COMM

    # ---- device side ----
    d = np.flatnonzero(is_gpu & np.isin(kind, device_k))
    dev_kind = np.full(len(d), NodeKind.COMPUTE, dtype=np.int8)
    dev_kind[np.isin(kind[d], [K(EventKind.MEMCPY), K(EventKind.MEMSET)])] = NodeKind.MEMCPY
    dev_kind[kind[d] == K(EventKind.COMM)] = NodeKind.COMM

    sel = np.concatenate([host, d])
    kinds = np.concatenate([host_kind, dev_kind])
    order = np.lexsort((end[sel], ts[sel], lane[sel], is_gpu[sel], rank[sel]))
    sel, kinds = sel[order], kinds[order]
    start = ts[sel].copy()
    stop = end[sel].copy()
    # FIFO lanes: clip a node that starts before its lane predecessor ended
    clipped = 0
    if len(sel) > 1:
        seg = segment_ids([rank[sel], is_gpu[sel].astype(np.int64), lane[sel]])
        base = start.min()
        rel_stop = stop - base
        big = np.int64(int(rel_stop.max()) + 2)
        run = np.maximum.accumulate(seg * big + rel_stop)
        prev_end = np.full(len(sel), np.iinfo(np.int64).min, dtype=np.int64)
        same = np.flatnonzero(seg[1:] == seg[:-1]) + 1
        prev_end[same] = run[same - 1] - seg[same] * big + base
        bad = start < prev_end
        clipped = int(bad.sum())
        start[bad] = prev_end[bad]
        stop = np.maximum(stop, start)
    return SelectedNodes(index=sel, kind=kinds, start_ns=start, end_ns=stop, clipped=clipped)


