"""An independent recomputation of ``tracekit summary``'s breakdown, for tests.

Plain Python over the event table (sort-and-merge of intervals, no numpy, none of
``tracekit.analysis.breakdown``'s code), following the definitions in
``tracekit summary --help``:

- step window: the ``ProfilerStep#N`` event (the earliest one with that number); on a GPU
  rank extended to the end of the last GPU event of step N; no step events: the whole
  trace, step 0;
- compute: GPU rank: kernels, memcpys, memsets on GPU lanes; CPU rank: operators on the
  main thread (the lane of the step events; without steps, the host thread with the most
  operator time that runs no collective) minus the time inside wait-only operators;
- comm: ``kind == 'comm'`` events, any lane;
- everything clipped to the window; exposed = comm not under compute, overlap = comm
  under compute, idle = window under neither.

``expected_rows(run)`` returns ``{(rank, step): {field: ns}}``, to compare with
``summarize(run).steps``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tracekit.core.waits import waits_for_comm

Interval = tuple[int, int]

FIELDS = ("start_ns", "end_ns", "step_ns", "compute_ns", "comm_ns", "exposed_comm_ns",
          "overlap_ns", "idle_ns")


def merge(intervals) -> list[Interval]:
    """Sorted, disjoint, non-touching intervals covering the same points."""
    out: list[list[int]] = []
    for s, e in sorted((int(s), int(e)) for s, e in intervals if e > s):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def length(merged: list[Interval]) -> int:
    return sum(e - s for s, e in merged)


def clip(intervals, lo: int, hi: int) -> list[Interval]:
    return [(max(s, lo), min(e, hi)) for s, e in intervals if min(e, hi) > max(s, lo)]


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Both merged; their intersection (two-pointer walk)."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if e > s:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return merge(out)


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Both merged; the points of ``a`` not in ``b``."""
    out = []
    for s, e in a:
        cur = s
        for bs, be in b:
            if be <= cur or bs >= e:
                continue
            if bs > cur:
                out.append((cur, bs))
            cur = max(cur, be)
        if cur < e:
            out.append((cur, e))
    return merge(out)


def _rows(ev) -> list[dict]:
    cols = ["kind", "lane", "lane_kind", "name", "ts_ns", "end_ns", "dur_ns", "step"]
    return [dict(zip(cols, r)) for r in zip(*(ev[c].astype(object).tolist() for c in cols))]


def expected_rank(ev) -> dict[int, dict[str, int]]:
    """One rank's event table -> ``{step: {field: ns}}``."""
    rows = _rows(ev)
    for r in rows:
        r["kind"], r["lane_kind"], r["name"] = str(r["kind"]), str(r["lane_kind"]), str(r["name"])
    if not rows:
        return {}
    gpu = any(r["lane_kind"] == "gpu" for r in rows)
    steps = [r for r in rows if r["kind"] == "step"]
    comm = [(r["ts_ns"], r["end_ns"]) for r in rows if r["kind"] == "comm"]
    if gpu:
        compute = [(r["ts_ns"], r["end_ns"]) for r in rows
                   if r["lane_kind"] == "gpu" and r["kind"] in ("kernel", "memcpy", "memset")]
        waits: list[Interval] = []
    else:
        main = _main_lane(rows, steps)
        on_main = [r for r in rows if r["lane"] == main and r["lane_kind"] != "gpu"]
        compute = [(r["ts_ns"], r["end_ns"]) for r in on_main if r["kind"] == "cpu_op"]
        waits = [(r["ts_ns"], r["end_ns"]) for r in on_main
                 if r["kind"] == "cpu_op" and waits_for_comm([r["name"]])[0]]

    windows: dict[int, Interval] = {}
    if not steps:
        windows[0] = (min(r["ts_ns"] for r in rows), max(r["end_ns"] for r in rows))
    for r in sorted(steps, key=lambda r: r["ts_ns"]):
        n = int(r["name"].rpartition("#")[2])
        if n in windows:
            continue
        lo, hi = r["ts_ns"], r["end_ns"]
        if gpu:
            hi = max([hi, *(g["end_ns"] for g in rows
                            if g["lane_kind"] == "gpu" and g["step"] == n)])
        windows[n] = (lo, hi)

    out = {}
    for n, (lo, hi) in windows.items():
        c = subtract(merge(clip(compute, lo, hi)), merge(clip(waits, lo, hi)))
        m = merge(clip(comm, lo, hi))
        both = intersect(c, m)
        out[n] = {
            "start_ns": lo, "end_ns": hi, "step_ns": hi - lo,
            "compute_ns": length(c), "comm_ns": length(m),
            "exposed_comm_ns": length(m) - length(both), "overlap_ns": length(both),
            "idle_ns": (hi - lo) - length(merge(c + m)),
        }
    return out


def _main_lane(rows: list[dict], steps: list[dict]):
    if steps:
        return steps[0]["lane"]
    comm_lanes = {r["lane"] for r in rows if r["kind"] == "comm" and r["lane_kind"] == "cpu"}
    busy: dict = {}
    for r in rows:
        if r["lane_kind"] == "cpu" and r["kind"] == "cpu_op" and r["lane"] not in comm_lanes:
            busy[r["lane"]] = busy.get(r["lane"], 0) + r["dur_ns"]
    if not busy:  # no operator off the comm threads: the busiest host thread at all
        for r in rows:
            if r["lane_kind"] == "cpu":
                busy[r["lane"]] = busy.get(r["lane"], 0) + r["dur_ns"]
    return max(busy, key=busy.get) if busy else None


def expected_rows(run) -> dict[tuple[int, int], dict[str, int]]:
    """``{(rank, step): {field: ns}}`` for every rank of ``run``."""
    return {(rank, step): fields for rank in run.ranks
            for step, fields in expected_rank(run.rank_events(rank)).items()}


def summarized_rows(steps) -> dict[tuple[int, int], dict[str, int]]:
    """``summarize(run).steps`` in the same shape."""
    return {(int(r["rank"]), int(r["step"])): {f: int(r[f]) for f in FIELDS}
            for r in steps.to_dict("records")}


# --- brute force, for property tests of interval code -------------------------------------

#: lists of (start, end) pairs on a 64-slot grid (some empty or reversed)
interval_lists = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=12)


def grid(pairs) -> np.ndarray:
    """The slots of 0..63 that any ``[start, end)`` of ``pairs`` covers."""
    cover = np.zeros(64, dtype=bool)
    for s, e in pairs:
        cover[s:e] = True
    return cover


def as_arrays(pairs) -> tuple[np.ndarray, np.ndarray]:
    """``[(s, e), ...]`` -> (starts, ends) int64 arrays."""
    return (np.array([p[0] for p in pairs], dtype=np.int64),
            np.array([p[1] for p in pairs], dtype=np.int64))
