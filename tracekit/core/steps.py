"""The step window: the stretch of time one training step occupies on one rank.

Rule (per rank and step number N >= 0):

- the window is the rank's ``ProfilerStep#N`` annotation on the host, ``[start, end)``;
  when a rank repeats a step number, its earliest annotation counts (as the parser
  assigns steps to events: :func:`tracekit.core.kineto.parse_trace`);
- with ``device_tail=True`` it is extended to the end of the rank's last GPU event of
  step N: a step's kernels often finish after its host window closed (GPU events carry
  the step of the launch that queued them). The per-step breakdown and the timeline use
  this; the replay's measured step time is the host window;
- a step without an annotation on the rank spans its events, first start to last end.
  A trace without any ``ProfilerStep`` is all step 0, so it is one window, the whole
  trace.

Before (one GPU rank, ns)::

    kind    lane      name             ts_ns  end_ns  step
    step    cpu 7     ProfilerStep#3     100    1000     3
    cpu_op  cpu 7     aten::mm           150     250     3
    kernel  stream 7  gemm               900    1600     3
    step    cpu 7     ProfilerStep#4    1100    1500     4

After :func:`step_windows` (``device_tail=True``; without it step 3 ends at 1000)::

    rank  step  start_ns  end_ns  annotated
    0     3        100     1600   True
    0     4       1100     1500   True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracekit.core.columns import equals
from tracekit.core.groups import member_of
from tracekit.core.schema import EventKind, LaneKind

#: the name of a step annotation is this prefix and the step number
STEP_PREFIX = "ProfilerStep#"

#: columns of :func:`step_windows`
WINDOW_COLUMNS = ["rank", "step", "start_ns", "end_ns", "annotated"]


def step_number(name: str) -> int:
    """``'ProfilerStep#12'`` -> 12."""
    return int(str(name).rpartition("#")[2])


#: a table longer than this is windowed a chunk of whole ranks at a time
_CHUNK_ROWS = 500_000


def step_windows(events: pd.DataFrame, *, device_tail: bool = False) -> pd.DataFrame:
    """One row per (rank, step) of ``events`` (columns rank, lane_kind, kind, name, ts_ns,
    end_ns, step), sorted by rank then start: ``rank, step, start_ns, end_ns`` and
    ``annotated`` (False when the window is the span of the step's events). See the module
    docstring for the rule. A long table sorted by rank is done a chunk of whole ranks at
    a time (windows never span ranks), so the scratch memory stays small."""
    if not len(events):
        return _frame([], [], [], [], [])
    chunks = _rank_chunks(events["rank"].to_numpy())
    if len(chunks) > 1:
        parts = [_windows(events.iloc[lo:hi], device_tail) for lo, hi in chunks]
        return pd.concat(parts, ignore_index=True)
    return _windows(events, device_tail)


def _rank_chunks(rank: np.ndarray) -> list[tuple[int, int]]:
    if len(rank) <= _CHUNK_ROWS or not bool((rank[1:] >= rank[:-1]).all()):
        return [(0, len(rank))]
    cut = np.flatnonzero(np.concatenate([[True], rank[1:] != rank[:-1]]))
    out, lo = [], 0
    for c in cut[1:].tolist():
        if c - lo >= _CHUNK_ROWS:
            out.append((lo, c))
            lo = c
    return out + [(lo, len(rank))]


def _first_per_pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each ``(a, b)`` pair, in position order
    (what ``drop_duplicates(keep="first")`` keeps)."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    o = np.lexsort((b, a))  # stable: within a pair, positions stay in order
    new = np.ones(len(o), dtype=bool)
    new[1:] = (a[o][1:] != a[o][:-1]) | (b[o][1:] != b[o][:-1])
    return np.sort(o[new])


def _windows(events: pd.DataFrame, device_tail: bool) -> pd.DataFrame:
    rank = events["rank"].to_numpy()
    ts = events["ts_ns"].to_numpy()
    end = events["end_ns"].to_numpy()
    step = events["step"].to_numpy()

    st = np.flatnonzero(equals(events["kind"], EventKind.STEP.value))
    st = st[np.argsort(ts[st], kind="stable")]
    name = events["name"]
    if isinstance(name.dtype, pd.CategoricalDtype):  # one number per distinct name
        codes = name.cat.codes.to_numpy()[st]
        u_codes, inv = np.unique(codes, return_inverse=True)
        cats = name.cat.categories
        per_code = np.array([step_number(cats[c] if c >= 0 else np.nan)
                             for c in u_codes.tolist()], dtype=np.int64)
        numbers = per_code[inv.ravel()] if len(st) else np.zeros(0, dtype=np.int64)
    else:
        numbers = np.array([step_number(n) for n in name.iloc[st].tolist()], dtype=np.int64)
    first = _first_per_pair(rank[st], numbers)  # the earliest one counts
    a_rank, a_step = rank[st][first].astype(np.int64), numbers[first]
    a_start, a_end = ts[st][first], end[st][first]
    # one integer key per (rank, step) of the events that have a step
    with_step = np.flatnonzero(step >= 0)
    r0, s_max = (int(rank.min()), int(step.max())) if len(with_step) else (0, 0)
    width = s_max + 1
    key = (rank[with_step].astype(np.int64) - r0) * width + step[with_step]
    ann_key = (a_rank - r0) * width + a_step
    if device_tail and len(a_rank):
        gpu = equals(events["lane_kind"], LaneKind.GPU.value)[with_step]
        g_key, g_end = key[gpu], end[with_step][gpu]
        u_key, inv = np.unique(g_key, return_inverse=True)
        tail = np.full(len(u_key), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(tail, inv.ravel(), g_end)
        pos = np.minimum(np.searchsorted(u_key, ann_key), max(len(u_key) - 1, 0))
        found = (u_key[pos] == ann_key) if len(u_key) else np.zeros(len(ann_key), dtype=bool)
        got = np.where(found, tail[pos] if len(u_key) else -1, -1)
        a_end = np.maximum(a_end, got)
    out_rank, out_step, out_start, out_end = a_rank, a_step, a_start, a_end
    annotated = np.ones(len(a_rank), dtype=bool)
    # spans only for the steps without an annotation (usually none)
    loose = with_step[~member_of(key, ann_key)] if len(ann_key) else with_step
    if len(loose):
        spans = pd.DataFrame({"rank": rank[loose], "step": step[loose],
                              "start_ns": ts[loose], "end_ns": end[loose]})
        spans = spans.groupby(["rank", "step"], as_index=False).agg(
            start_ns=("start_ns", "min"), end_ns=("end_ns", "max"))
        have = pd.MultiIndex.from_arrays([a_rank, a_step])
        spans = spans[~pd.MultiIndex.from_frame(spans[["rank", "step"]]).isin(have)]
        out_rank = np.concatenate([a_rank, spans["rank"].to_numpy(dtype=np.int64)])
        out_step = np.concatenate([a_step, spans["step"].to_numpy(dtype=np.int64)])
        out_start = np.concatenate([a_start, spans["start_ns"].to_numpy(dtype=np.int64)])
        out_end = np.concatenate([a_end, spans["end_ns"].to_numpy(dtype=np.int64)])
        annotated = np.concatenate([annotated, np.zeros(len(spans), dtype=bool)])
    o = np.lexsort((out_start, out_rank))  # stable, like sort_values(kind="stable")
    return _frame(out_rank[o], out_step[o], out_start[o], out_end[o], annotated[o])


def _frame(rank, step, start, end, annotated) -> pd.DataFrame:
    return pd.DataFrame({
        "rank": np.asarray(rank, dtype=np.int64), "step": np.asarray(step, dtype=np.int64),
        "start_ns": np.asarray(start, dtype=np.int64), "end_ns": np.asarray(end, dtype=np.int64),
        "annotated": np.asarray(annotated, dtype=bool),
    }, columns=WINDOW_COLUMNS)
