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

from tracekit.core.schema import EventKind, LaneKind

#: the name of a step annotation is this prefix and the step number
STEP_PREFIX = "ProfilerStep#"

#: columns of :func:`step_windows`
WINDOW_COLUMNS = ["rank", "step", "start_ns", "end_ns", "annotated"]


def step_number(name: str) -> int:
    """``'ProfilerStep#12'`` -> 12."""
    return int(str(name).rpartition("#")[2])


def step_windows(events: pd.DataFrame, *, device_tail: bool = False) -> pd.DataFrame:
    """One row per (rank, step) of ``events`` (columns rank, lane_kind, kind, name, ts_ns,
    end_ns, step), sorted by rank then start: ``rank, step, start_ns, end_ns`` and
    ``annotated`` (False when the window is the span of the step's events). See the module
    docstring for the rule."""
    if not len(events):
        return _frame([], [], [], [], [])
    rank = events["rank"].to_numpy().astype(np.int64)
    kind = events["kind"].to_numpy().astype(str)
    ts = events["ts_ns"].to_numpy().astype(np.int64)
    end = events["end_ns"].to_numpy().astype(np.int64)
    step = events["step"].to_numpy().astype(np.int64)

    st = np.flatnonzero(kind == EventKind.STEP.value)
    st = st[np.argsort(ts[st], kind="stable")]
    numbers = np.array([step_number(n) for n in events["name"].to_numpy()[st]],
                       dtype=np.int64)
    ann = pd.DataFrame({"rank": rank[st], "step": numbers, "start_ns": ts[st],
                        "end_ns": end[st]})
    ann = ann.drop_duplicates(["rank", "step"], keep="first")  # the earliest one counts
    if device_tail and len(ann):
        gpu = events["lane_kind"].to_numpy().astype(str) == LaneKind.GPU.value
        tail = pd.DataFrame({"rank": rank[gpu], "step": step[gpu], "tail": end[gpu]})
        tail = tail.groupby(["rank", "step"], as_index=False)["tail"].max()
        ann = ann.merge(tail, on=["rank", "step"], how="left")
        ann["end_ns"] = np.maximum(ann["end_ns"].to_numpy(),
                                   ann["tail"].fillna(-1).to_numpy().astype(np.int64))
    spans = pd.DataFrame({"rank": rank, "step": step, "start_ns": ts, "end_ns": end})
    spans = spans[spans["step"] >= 0].groupby(["rank", "step"], as_index=False).agg(
        start_ns=("start_ns", "min"), end_ns=("end_ns", "max"))
    have = pd.MultiIndex.from_frame(ann[["rank", "step"]])
    spans = spans[~pd.MultiIndex.from_frame(spans[["rank", "step"]]).isin(have)]
    out = pd.concat([ann[["rank", "step", "start_ns", "end_ns"]].assign(annotated=True),
                     spans.assign(annotated=False)], ignore_index=True)
    out = out.sort_values(["rank", "start_ns"], kind="stable").reset_index(drop=True)
    return _frame(out["rank"], out["step"], out["start_ns"], out["end_ns"], out["annotated"])


def _frame(rank, step, start, end, annotated) -> pd.DataFrame:
    return pd.DataFrame({
        "rank": np.asarray(rank, dtype=np.int64), "step": np.asarray(step, dtype=np.int64),
        "start_ns": np.asarray(start, dtype=np.int64), "end_ns": np.asarray(end, dtype=np.int64),
        "annotated": np.asarray(annotated, dtype=bool),
    }, columns=WINDOW_COLUMNS)
