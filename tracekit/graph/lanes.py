"""Lanes: every CPU thread, GPU stream and comm channel of every rank that holds a node.

A lane is ``'gpu'`` for a device stream, ``'comm'`` when every node on it is
communication (a ``pt_gloo_runloop`` thread, a dedicated NCCL stream), else ``'cpu'``.
The rank's main training thread (:func:`tracekit.core.threads.main_lanes`: the one
carrying ``ProfilerStep#N``; without step annotations the host thread with the most
operator time that runs no collective transfer) is marked ``is_main``.

Before: nodes sorted by (rank, lane kind, lane id, start). After::

    lane_of_node = [0, 0, 0, 1, 1, 2, ...]
    lanes = [Lane(id=0, rank=0, kind='cpu', local_id=2394, name='python3 2394', is_main=True),
             Lane(id=1, rank=0, kind='comm', local_id=2398, name='pt_gloo_runloop 2398'), ...]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracekit.core.schema import EventKind
from tracekit.core.threads import main_lanes, split_thread_name
from tracekit.graph.arrays import EventArrays, kind_code
from tracekit.graph.model import Lane, NodeKind
from tracekit.graph.select import segment_ids


def _pretty(name: str, local_id: int, is_gpu: bool) -> str:
    """'python3 2394' for 'thread 2394 (python3)'; GPU lanes and unnamed threads as named."""
    if is_gpu:
        return name or f"stream {local_id}"
    parsed = split_thread_name(name)
    if parsed is not None and parsed[1] is not None:
        return f"{parsed[1]} {parsed[0]}"
    return name or f"thread {local_id}"


def _main_lanes(ev: EventArrays) -> dict[int, int]:
    """``{rank: thread id}`` of every rank's main training thread among ``ev``."""
    K = kind_code
    return main_lanes(rank=ev.rank, lane=ev.lane, is_host=~ev.is_gpu,
                      is_step=ev.kind == K(EventKind.STEP), is_op=ev.kind == K(EventKind.CPU_OP),
                      is_comm=ev.kind == K(EventKind.COMM), ts=ev.ts, end=ev.end)


def make_lanes(ev: EventArrays, index: np.ndarray, kind: np.ndarray,
               events: pd.DataFrame) -> tuple[np.ndarray, list[Lane]]:
    """Lane index of every node (``index`` into ``ev``, sorted by rank, lane) and the lanes."""
    rank, is_gpu, local = ev.rank[index], ev.is_gpu[index], ev.lane[index]
    lane_of = segment_ids([rank, is_gpu.astype(np.int64), local]).astype(np.int32)
    n_lanes = int(lane_of.max()) + 1 if len(lane_of) else 0
    first = np.searchsorted(lane_of, np.arange(n_lanes), side="left")
    count = np.bincount(lane_of, minlength=n_lanes)
    comm_count = np.bincount(lane_of, weights=(kind == NodeKind.COMM), minlength=n_lanes)
    lane_names = events["lane_name"]
    main = _main_lanes(ev)

    lanes: list[Lane] = []
    for i in range(n_lanes):
        node = first[i]
        gpu = bool(is_gpu[node])
        lane_kind = "gpu" if gpu else "cpu"
        if comm_count[i] == count[i]:
            lane_kind = "comm"
        raw = str(lane_names.iat[int(ev.row[index[node]])])
        r, local_id = int(rank[node]), int(local[node])
        lanes.append(Lane(id=i, rank=r, kind=lane_kind, local_id=local_id,
                          name=_pretty(raw, local_id, gpu),
                          is_main=not gpu and main.get(r) == local_id))
    return lane_of, lanes
