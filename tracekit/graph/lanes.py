"""Lanes: every CPU thread, GPU stream and comm channel of every rank that holds a node.

A lane is ``'gpu'`` for a device stream, ``'comm'`` when every node on it is
communication (a ``pt_gloo_runloop`` thread, a dedicated NCCL stream), else ``'cpu'``.
The rank's main thread (the one carrying ``ProfilerStep#N``) is marked ``is_main``; when
a trace has no step annotations, it is the host lane with the most nodes.

Before: nodes sorted by (rank, lane kind, lane id, start). After::

    lane_of_node = [0, 0, 0, 1, 1, 2, ...]
    lanes = [Lane(id=0, rank=0, kind='cpu', local_id=2394, name='python3 2394', is_main=True),
             Lane(id=1, rank=0, kind='comm', local_id=2398, name='pt_gloo_runloop 2398'), ...]
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from tracekit.core.schema import EventKind
from tracekit.graph.arrays import EventArrays, kind_code
from tracekit.graph.model import Lane, NodeKind
from tracekit.graph.select import segment_ids

_THREAD_NAME = re.compile(r"^thread (\d+) \((.*)\)$")


def _pretty(name: str, local_id: int, is_gpu: bool) -> str:
    if is_gpu:
        return name or f"stream {local_id}"
    m = _THREAD_NAME.match(name)
    if m:
        return f"{m.group(2)} {m.group(1)}"
    return name or f"thread {local_id}"


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
    steps = np.flatnonzero(ev.kind == kind_code(EventKind.STEP))
    step_lanes = {(int(ev.rank[i]), int(ev.lane[i])) for i in steps if not ev.is_gpu[i]}

    lanes: list[Lane] = []
    for i in range(n_lanes):
        node = first[i]
        gpu = bool(is_gpu[node])
        lane_kind = "gpu" if gpu else "cpu"
        if comm_count[i] == count[i]:
            lane_kind = "comm"
        raw = str(lane_names.iat[int(ev.row[index[node]])])
        lanes.append(Lane(id=i, rank=int(rank[node]), kind=lane_kind, local_id=int(local[node]),
                          name=_pretty(raw, int(local[node]), gpu),
                          is_main=(int(rank[node]), int(local[node])) in step_lanes and not gpu))
    # ranks without step annotations: the busiest host lane is the main one
    with_main = {ln.rank for ln in lanes if ln.is_main}
    for r in sorted({ln.rank for ln in lanes} - with_main):
        host = [ln for ln in lanes if ln.rank == r and ln.kind == "cpu"]
        if not host:
            host = [ln for ln in lanes if ln.rank == r]
        best = max(host, key=lambda ln: count[ln.id])
        lanes[best.id] = Lane(id=best.id, rank=best.rank, kind=best.kind,
                              local_id=best.local_id, name=best.name, is_main=True)
    return lane_of, lanes
