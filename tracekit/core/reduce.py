"""The compact per-rank table: the events ``summary``, ``replay`` and ``graph`` read.

A GPU trace spends about 40% of its rows on host ops nested inside other host ops
(``aten::empty`` inside ``aten::linear`` inside ``autograd::...``) that launch nothing and
wait for nothing. The dataflow graph makes the outermost such op one node and never looks
inside it (:mod:`tracekit.graph.select`), and the summary takes unions of op intervals,
which such a nested op does not change. :func:`reduce_events` drops exactly those rows,
so that a 256-rank run's table takes 40% less memory; every number ``summary``,
``replay`` and ``graph`` print stays the same (``tests/test_reduce.py`` checks this on
every recorded run and trace in the tests). Views (``timeline``, ``report``) keep every
row: their hover text lists nested ops.

A host event is dropped when all of these hold:

- its rank has ``ProfilerStep`` annotations (without them the main thread is the one with
  the most operator time, nested ops included);
- it is a ``cpu_op`` or a runtime call, and not an *anchor* (:data:`ANCHOR_RUNTIME` calls,
  launches, collective issue ops, wait ops, collective transfers), and carries no
  correlation id (a ``cudaEventRecord`` is looked up by it);
- no anchor lies inside it;
- an earlier ``cpu_op`` of its thread that contains no anchor (and is no anchor) started
  at or before it and ends at or after its end: it is inside that op.

Before (one thread, µs)::

    aten::linear [0, 50)        cpu_op, no anchor inside     kept (a graph node)
      aten::t [1, 3)            inside aten::linear          dropped
      aten::addmm [4, 40)       launches a kernel            kept (it holds an anchor)
        cudaLaunchKernel [30, 38)                            kept (an anchor)
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from tracekit.core.columns import equals, isin, matches
from tracekit.core.groups import member_of
from tracekit.core.schema import EventKind, LaneKind
from tracekit.core.waits import WAIT_OP

#: host runtime calls that are anchors even when no GPU event carries their correlation
ANCHOR_RUNTIME = re.compile(r"Synchronize|WaitEvent|Memcpy|Memset", re.IGNORECASE)

_HOST_KINDS = [k.value for k in (EventKind.CPU_OP, EventKind.RUNTIME, EventKind.LAUNCH,
                                 EventKind.COMM, EventKind.STEP, EventKind.ANNOTATION)]
_CONTAINERS = [EventKind.STEP.value, EventKind.ANNOTATION.value]


def droppable(events: pd.DataFrame) -> np.ndarray:
    """Per row: True where :func:`reduce_events` may leave it out (see module doc)."""
    n = len(events)
    out = np.zeros(n, dtype=bool)
    kind = events["kind"]
    is_step = equals(kind, EventKind.STEP.value)
    ranks_with_steps = np.unique(events["rank"].to_numpy()[is_step])
    host = ~equals(events["lane_kind"], LaneKind.GPU.value) & isin(kind, _HOST_KINDS)
    host &= member_of(events["rank"].to_numpy(), ranks_with_steps)
    h = np.flatnonzero(host)
    if len(h) == 0:
        return out
    ts, end = events["ts_ns"].to_numpy()[h], events["end_ns"].to_numpy()[h]
    rank, lane = events["rank"].to_numpy()[h], events["lane"].to_numpy()[h]
    o = np.lexsort((-end, ts, lane, rank))
    h, ts, end, rank, lane = h[o], ts[o], end[o], rank[o], lane[o]
    hk = kind.iloc[h]
    is_op = equals(hk, EventKind.CPU_OP.value)
    is_runtime = equals(hk, EventKind.RUNTIME.value)
    has_coll = ~equals(events["collective"].iloc[h], "")
    anchor = (equals(hk, EventKind.COMM.value) | equals(hk, EventKind.LAUNCH.value)
              | (is_op & has_coll)
              | (is_runtime & matches(events["name"].iloc[h], lambda s: bool(
                  ANCHOR_RUNTIME.search(s))))
              | (is_op & matches(events["name"].iloc[h], lambda s: bool(WAIT_OP.search(s)))))
    container = isin(hk, _CONTAINERS)
    seg = np.concatenate([[0], np.cumsum((rank[1:] != rank[:-1]) | (lane[1:] != lane[:-1]))])
    t0 = int(ts.min())
    big = np.int64(int(end.max()) - t0 + 2)
    key_ts = seg * big + (ts - t0)
    key_end = seg * big + (end - t0)
    # anchors inside each event: those starting in [its start, its end) after it
    last_inside = np.maximum(np.searchsorted(key_ts, key_end, side="left") - 1,
                             np.arange(len(h)))
    before = np.concatenate([[0], np.cumsum(anchor)])
    unsplit = ~container & (before[last_inside + 1] - before[np.arange(len(h)) + 1] == 0)
    cover = unsplit & is_op & ~anchor
    run = np.maximum.accumulate(np.where(cover, key_end, seg * big - 1))
    prev = np.concatenate([[np.int64(-1)], run[:-1]])
    inside = (prev > key_ts) & (prev >= key_end) & (prev >= seg * big)
    corr = events["correlation"].to_numpy()[h]
    drop = (is_op | is_runtime) & ~anchor & unsplit & inside & (corr < 0)
    out[h[drop]] = True
    return out


def nested_counts(events: pd.DataFrame, drop: np.ndarray) -> np.ndarray:
    """Per row (int16, at most 32767): how many rows ``drop`` marks start inside it on its
    thread (same rank and lane, start in ``[ts_ns, end_ns)``), 0 for dropped rows: what a
    row of the compact table stands for besides itself (the ``nested_events`` column; the
    profiler records each of them, :mod:`replay.profiler_overhead`)::

        aten::linear [0, 50)    kept     nested_events 2
          aten::t [1, 3)        dropped
          aten::addmm [4, 40)   dropped
    """
    out = np.zeros(len(events), dtype=np.int16)
    if not drop.any():
        return out
    _, rank = np.unique(events["rank"].to_numpy(), return_inverse=True)
    lanes, lane = np.unique(events["lane"].to_numpy(), return_inverse=True)
    group = rank.reshape(-1).astype(np.int64) * len(lanes) + lane.reshape(-1)
    ts, end = events["ts_ns"].to_numpy(), events["end_ns"].to_numpy()
    t0 = int(ts.min())
    span = np.int64(int(end.max()) - t0 + 2)
    inner = np.sort(group[drop] * span + (ts[drop] - t0))
    keep = np.flatnonzero(~drop & ~equals(events["lane_kind"], LaneKind.GPU.value))
    base = group[keep] * span - t0
    inside = (np.searchsorted(inner, base + end[keep], side="left")
              - np.searchsorted(inner, base + ts[keep], side="left"))
    out[keep] = np.minimum(inside, np.iinfo(np.int16).max)
    return out


def with_nested_counts(events: pd.DataFrame, drop: np.ndarray) -> pd.DataFrame:
    """``events`` with its ``nested_events`` column filled (:func:`nested_counts`)."""
    events["nested_events"] = nested_counts(events, drop)
    return events


def reduce_events(events: pd.DataFrame, drop: np.ndarray | None = None) -> pd.DataFrame:
    """``events`` without the rows :func:`droppable` marks (the same table when none);
    ``drop``: that mask when already computed."""
    drop = droppable(events) if drop is None else drop
    if not drop.any():
        return events
    keep = np.flatnonzero(~drop)
    columns = {}
    for col in events.columns:
        series = events[col]
        if isinstance(series.dtype, pd.CategoricalDtype):
            columns[col] = pd.Categorical.from_codes(series.cat.codes.to_numpy()[keep],
                                                     series.cat.categories, validate=False)
        else:
            columns[col] = series.to_numpy()[keep]
    return pd.DataFrame(columns, copy=False)
