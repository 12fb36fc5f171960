"""Rows of a timeline (one per rank and lane), which events become bars, and step spans.

A lane runs nested ops (``aten::linear`` inside ``DistributedDataParallel.forward`` inside
``ProfilerStep#3``); a timeline row shows the outermost op that occupies the lane at each
moment. Step and annotation rows are never bars: steps become boundary lines, annotations
only decide colors (see :mod:`tracekit.views.classify`).

Before (one rank, main thread)::

    name                                                 ts_ns  end_ns  kind
    ProfilerStep#3                                         0     900    step
    DistributedDataParallel.forward                       10     300    annotation
    aten::linear                                          12     100    cpu_op
    aten::addmm                                           20      90    cpu_op
    autograd::engine::evaluate_function: AddmmBackward0  310     500    cpu_op

After :func:`bar_mask`: ``aten::linear`` and ``evaluate_function: AddmmBackward0`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tracekit.core.schema import EventKind
from tracekit.core.steps import step_windows
from tracekit.core.threads import main_threads, split_thread_name
from tracekit.errors import TracekitError
from tracekit.views.classify import outermost_mask_sorted

_NOT_BARS = (EventKind.STEP.value, EventKind.ANNOTATION.value)
_LANE_KIND_ORDER = {"cpu": 0, "gpu": 1, "comm": 2}
#: columns :func:`tracekit.core.threads.main_threads` reads
_MAIN_COLUMNS = ["rank", "lane_kind", "lane", "kind", "ts_ns", "end_ns"]


@dataclass(frozen=True, kw_only=True)
class Row:
    """One timeline row: one lane of one rank."""

    rank: int
    lane_kind: str
    lane: int
    #: y-axis label, e.g. 'r0 python3', 'r1 stream 7', 'r0 pt_gloo_runloop 2398'
    label: str


def lane_key_frame(events: pd.DataFrame) -> pd.DataFrame:
    """``(rank, lane_kind, lane)`` of every row as plain columns (lane_kind as str)."""
    return pd.DataFrame({
        "rank": events["rank"].to_numpy().astype(np.int64),
        "lane_kind": events["lane_kind"].astype(str).to_numpy(),
        "lane": events["lane"].to_numpy().astype(np.int64),
    })


def bar_mask(events: pd.DataFrame) -> np.ndarray:
    """True for the rows drawn as bars: outermost non-step, non-annotation ops per lane."""
    n = len(events)
    if n == 0:
        return np.zeros(0, dtype=bool)
    kind = events["kind"].astype(str).to_numpy()
    cand = np.flatnonzero(~np.isin(kind, _NOT_BARS))
    keys = lane_key_frame(events).iloc[cand]
    gid = pd.factorize(pd.MultiIndex.from_frame(keys))[0]
    ts = events["ts_ns"].to_numpy()[cand]
    end = events["end_ns"].to_numpy()[cand]
    order = np.lexsort((-(end - ts), ts, gid))
    top = outermost_mask_sorted(ts[order], end[order], gid[order])
    out = np.zeros(n, dtype=bool)
    out[cand[order[top]]] = True
    return out


def _short_lane_name(lane_kind: str, lane: int, lane_name: str) -> tuple[str, bool]:
    """('python3', True) for 'thread 2394 (python3)'; ('stream 7', False) for GPU lanes.

    The flag says whether the name is a thread name that may repeat within a rank.
    """
    parsed = split_thread_name(lane_name)
    if lane_kind == "cpu" and parsed is not None:
        return (parsed[1] or f"thread {lane}"), parsed[1] is not None
    return (lane_name or f"{lane_kind} {lane}"), False


def lane_rows(tables: Iterable[pd.DataFrame]) -> list[Row]:
    """The rows for every lane with at least one bar in any of ``tables``, in display order.

    Order: by rank; within a rank CPU threads (the main training thread first, as
    :func:`tracekit.core.threads.main_threads` finds it in ``tables``: the one holding
    ``ProfilerStep`` when they have step rows, else the busiest operator thread), then GPU
    streams, then comm lanes, then anything else; by lane id within a kind.
    """
    frames, events = [], []
    for t in tables:
        if t is None or not len(t):
            continue
        f = lane_key_frame(t)
        f["lane_name"] = t["lane_name"].astype(str).to_numpy()
        frames.append(f.drop_duplicates(["rank", "lane_kind", "lane"]))
        events.append(pd.DataFrame({c: t[c].to_numpy() for c in _MAIN_COLUMNS}))
    if not frames:
        return []
    lanes = pd.concat(frames).drop_duplicates(["rank", "lane_kind", "lane"])
    main = main_threads(pd.concat(events, ignore_index=True))
    rows: list[tuple] = []
    for rank, lk, lane, lname in lanes.itertuples(index=False):
        short, is_thread = _short_lane_name(lk, lane, lname)
        is_main = lk == "cpu" and main.get(int(rank)) == int(lane)
        rows.append((rank, _LANE_KIND_ORDER.get(lk, 9), not is_main, lane, lk, short, is_thread))
    rows.sort()
    counts: dict[tuple[int, str], int] = {}
    for r in rows:
        counts[(r[0], r[5])] = counts.get((r[0], r[5]), 0) + 1
    out = []
    for rank, _, _, lane, lk, short, is_thread in rows:
        label = f"{short} {lane}" if is_thread and counts[(rank, short)] > 1 else short
        out.append(Row(rank=int(rank), lane_kind=lk, lane=int(lane), label=f"r{rank} {label}"))
    return out


def row_index(events: pd.DataFrame, rows: Sequence[Row]) -> np.ndarray:
    """Index into ``rows`` of every event (-1 for lanes not in ``rows``)."""
    lookup = pd.Series(
        np.arange(len(rows)),
        index=pd.MultiIndex.from_tuples([(r.rank, r.lane_kind, r.lane) for r in rows]),
        dtype=np.int64,
    ) if rows else pd.Series([], dtype=np.int64)
    if not len(events):
        return np.zeros(0, dtype=np.int64)
    keys = pd.MultiIndex.from_frame(lane_key_frame(events))
    got = lookup.reindex(keys).to_numpy()
    return np.where(np.isnan(got), -1, got).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class StepSpan:
    """Where one step lies on one timeline's clock (ns), over every rank drawn."""

    step: int
    #: the step's boundary: the earliest rank's step window start (its ``ProfilerStep#N``)
    start_ns: int
    #: the latest rank's step window end (device work can outlast the host window)
    end_ns: int


def step_spans(events: pd.DataFrame) -> list[StepSpan]:
    """One :class:`StepSpan` per step number >= 0 present in ``events``, by start: the
    earliest start and latest end of the ranks' step windows
    (:func:`tracekit.core.steps.step_windows` with the device tail, as the summary counts
    a step)."""
    if not len(events):
        return []
    win = step_windows(events, device_tail=True)
    if not len(win):
        return []
    per = win.groupby("step").agg(start_ns=("start_ns", "min"), end_ns=("end_ns", "max"))
    spans = [StepSpan(step=int(s), start_ns=int(r.start_ns), end_ns=int(r.end_ns))
             for s, r in per.iterrows()]
    return sorted(spans, key=lambda sp: sp.start_ns)


def select_window(events: pd.DataFrame, *, step: int | None, ranks: Sequence[int] | None,
                  what: str = "run") -> pd.DataFrame:
    """The rows of ``events`` for the requested step (all steps when None) and ranks.

    Raises :class:`TracekitError` naming the steps / ranks present when a requested one is
    missing. Rows outside every step (``step == -1``) are dropped when steps exist.
    """
    out = events
    if ranks is not None:
        present = sorted(int(r) for r in pd.unique(events["rank"]))
        missing = [r for r in ranks if r not in present]
        if missing:
            raise TracekitError(
                f"rank {missing[0]} is not in the {what}; ranks present: "
                f"{', '.join(map(str, present))}; pass --ranks with those"
            )
        out = out[out["rank"].isin(list(ranks))]
    steps_present = sorted(int(s) for s in pd.unique(out["step"]) if s >= 0)
    if step is not None:
        if step not in steps_present:
            raise TracekitError(
                f"step {step} is not in the {what}; steps present: "
                f"{', '.join(map(str, steps_present)) or 'none'}; pass --step with one of those"
            )
        out = out[out["step"] == step]
    elif steps_present:
        out = out[out["step"] >= 0]
    return out
