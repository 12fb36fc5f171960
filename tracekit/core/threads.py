"""Host threads: what Kineto calls them, and which one is a rank's main training thread.

**Thread names.** Kineto names a host thread ``thread <tid> (<name>)``, e.g. ``thread 2394
(python3)``, ``thread 2398 (pt_gloo_runloop)``; a thread without ``thread_name`` metadata
is ``thread <tid>`` (tids can be negative). :func:`split_thread_name` reads both.

**The main training thread** of a rank is the host thread that runs the training loop:

1. the host thread holding the ``ProfilerStep#N`` annotations (the earliest one when
   several do);
2. in a trace without step annotations, the host thread with the most operator
   (``cpu_op``) time among threads that run no collective transfer (gloo worker threads
   are not it); when no such thread has an operator, the host thread with the most event
   time;
3. a rank without host events has none.

Names do not decide it: a process often has several ``pt_main_thread`` or ``python3``
threads (a real 300-rank gloo trace has three ``pt_main_thread`` threads per rank).

Before (one rank's host events)::

    lane  lane_name                       kind     name              dur_ns
    2394  thread 2394 (python3)           step     ProfilerStep#3    9000
    2394  thread 2394 (python3)           cpu_op   aten::addmm       4000
    2398  thread 2398 (pt_gloo_runloop)   comm     gloo:all_reduce   5000
    2401  thread 2401 (python3)           cpu_op   aten::copy_       6000

After: ``main_threads(events) == {0: 2394}``, the step holder. Without the step row it
would be 2401 (more operator time than 2394; 2398 runs a collective transfer).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from tracekit.core.schema import EventKind, LaneKind

#: Kineto's host thread label: ``thread 2394 (python3)`` or just ``thread 2394``
THREAD_NAME = re.compile(r"^thread (-?\d+)(?: \((.*)\))?$")


def split_thread_name(lane_name: str) -> tuple[int, str | None] | None:
    """``'thread 2394 (python3)'`` -> ``(2394, 'python3')``, ``'thread 7'`` -> ``(7, None)``,
    anything else (``'pt_gloo_runloop'``, ``'stream 7'``) -> None."""
    m = THREAD_NAME.match(lane_name)
    if not m:
        return None
    return int(m.group(1)), m.group(2)


def main_lanes(*, rank: np.ndarray, lane: np.ndarray, is_host: np.ndarray,
               is_step: np.ndarray, is_op: np.ndarray, is_comm: np.ndarray,
               ts: np.ndarray, end: np.ndarray) -> dict[int, int]:
    """``{rank: lane}`` of every rank's main training thread (see the module docstring),
    from one entry per event: its rank, lane id, whether it is on a host thread, a
    ``ProfilerStep`` annotation, an operator, a collective transfer, and its times."""
    rank = np.asarray(rank, dtype=np.int64)
    lane = np.asarray(lane, dtype=np.int64)
    is_host = np.asarray(is_host, dtype=bool)
    out: dict[int, int] = {}
    steps = np.flatnonzero(np.asarray(is_step, dtype=bool) & is_host)
    if len(steps):
        steps = steps[np.lexsort((np.asarray(ts)[steps], rank[steps]))]
        first = np.r_[True, rank[steps][1:] != rank[steps][:-1]]
        out = {int(rank[i]): int(lane[i]) for i in steps[first]}
    host = is_host & ~np.isin(rank, list(out))
    if not host.any():
        return out
    frame = pd.DataFrame({"rank": rank[host], "lane": lane[host],
                          "dur": (np.asarray(end) - np.asarray(ts))[host],
                          "op": np.asarray(is_op, dtype=bool)[host],
                          "comm": np.asarray(is_comm, dtype=bool)[host]})
    comm_lane = frame.groupby(["rank", "lane"])["comm"].transform("any").to_numpy()
    candidate = frame["op"].to_numpy() & ~comm_lane
    ranks_with = np.isin(frame["rank"].to_numpy(), frame["rank"].to_numpy()[candidate])
    use = candidate | ~ranks_with  # a rank without such an operator: every host event
    busy = frame[use].groupby(["rank", "lane"])["dur"].sum()
    for r, ln in busy.groupby(level="rank").idxmax().tolist():
        out[int(r)] = int(ln)
    return dict(sorted(out.items()))


def main_threads(events: pd.DataFrame) -> dict[int, int]:
    """``{rank: lane}`` of every rank's main training thread in an event table (columns
    rank, lane_kind, lane, kind, ts_ns, end_ns); see the module docstring."""
    kind = events["kind"].to_numpy().astype(str)
    return main_lanes(
        rank=events["rank"].to_numpy(), lane=events["lane"].to_numpy(),
        is_host=events["lane_kind"].to_numpy().astype(str) == LaneKind.CPU.value,
        is_step=kind == EventKind.STEP.value, is_op=kind == EventKind.CPU_OP.value,
        is_comm=kind == EventKind.COMM.value,
        ts=events["ts_ns"].to_numpy(), end=events["end_ns"].to_numpy(),
    )
