"""Write a (predicted) timeline as a Chrome / Perfetto JSON trace.

The file opens in https://ui.perfetto.dev or chrome://tracing next to the original Kineto
traces, and parses back with :func:`tracekit.core.kineto.parse_trace` (same events, times
within 1 us): one ``ph: "X"`` event per row, ``pid`` = rank, ``tid`` = lane, process and
thread names as metadata, and ``args`` carrying the graph node id, bytes, step and whether
the op is on the critical path. Consecutive critical-path ops of a step are linked with
flow arrows (``ph: "s"`` / ``"f"``).

Before (one predicted row)::

    rank lane_kind lane name             ts_ns          dur_ns  node critical comm_bytes
    0    cpu       2398 gloo:all_reduce  1700000000123  6090000 812  True     526336

After::

    {"ph":"X","name":"gloo:all_reduce","cat":"comm","pid":0,"tid":2398,
     "ts":123.0,"dur":6090.0,"args":{"node":812,"critical":true,"bytes":526336,"step":2}}

Times are microseconds relative to ``baseTimeNanoseconds`` (as newer Kineto writes them),
so nanosecond precision survives the float conversion.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pandas as pd

from tracekit.core.atomic import atomic_write
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)

#: GPU-side Kineto categories the parser recognizes; other rows on a GPU lane get 'kernel'
_GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset", "cuda_sync", "gpu_user_annotation"}
#: lane kinds that are not host threads get their own tid range so tids never collide
_TID_BASE = {"cpu": 0, "gpu": 0, "comm": 1 << 40}
_COMM_ARGS = (
    ("collective", "Collective name", ""),
    ("in_nelems", "In msg nelems", -1),
    ("out_nelems", "Out msg nelems", -1),
    ("group_size", "Group size", -1),
    ("dtype", "dtype", ""),
    ("pg_name", "Process Group Name", ""),
    ("seq", "Seq", -1),
)


def _tids(lane_kind: np.ndarray, lane: np.ndarray) -> np.ndarray:
    base = np.array([_TID_BASE.get(k, 2 << 40) for k in lane_kind], dtype=np.int64)
    return base + lane.astype(np.int64)


def chrome_trace(timeline: pd.DataFrame, *, name: str = "tracekit predicted timeline") -> dict:
    """The trace document (a dict ready for JSON) for an event table or replayed timeline."""
    if not len(timeline):
        raise TracekitError("the timeline is empty: nothing to export; check the replay's "
                            "steps and ranks")
    ts = timeline["ts_ns"].to_numpy().astype(np.int64)
    base = int(ts.min()) // 1000 * 1000
    rel_us = np.round((ts - base) / 1000.0, 3)
    dur_us = np.round(timeline["dur_ns"].to_numpy().astype(np.int64) / 1000.0, 3)
    rank = timeline["rank"].to_numpy().astype(np.int64)
    lane = timeline["lane"].to_numpy().astype(np.int64)
    lane_kind = timeline["lane_kind"].astype(str).to_numpy()
    tid = _tids(lane_kind, lane)
    names = timeline["name"].astype(str).to_numpy()
    cats = timeline["cat"].astype(str).to_numpy() if "cat" in timeline else np.full(len(ts), "")
    kinds = timeline["kind"].astype(str).to_numpy()
    step = timeline["step"].to_numpy()
    nbytes = timeline["comm_bytes"].to_numpy() if "comm_bytes" in timeline else None
    node = timeline["node"].to_numpy() if "node" in timeline else None
    crit = timeline["critical"].to_numpy().astype(bool) if "critical" in timeline else None
    measured = timeline["measured_ts_ns"].to_numpy() if "measured_ts_ns" in timeline else None
    corr = timeline["correlation"].to_numpy() if "correlation" in timeline else None
    comm_cols = {col: timeline[col].astype(object).to_numpy() if col in timeline else None
                 for col, _, _ in _COMM_ARGS}

    events: list[dict] = []
    for i in range(len(ts)):
        is_gpu = lane_kind[i] == "gpu"
        cat = cats[i] or kinds[i]
        if is_gpu and cat not in _GPU_CATS:
            cat = "kernel"
        args: dict = {"step": int(step[i]), "kind": kinds[i]}
        if node is not None:
            args["node"] = int(node[i])
        if crit is not None:
            args["critical"] = bool(crit[i])
        if nbytes is not None and nbytes[i] >= 0:
            args["bytes"] = int(nbytes[i])
        if measured is not None and measured[i] >= 0:
            args["measured start (us)"] = round((int(measured[i]) - base) / 1000.0, 3)
        if is_gpu:
            args["stream"] = int(lane[i])
        if corr is not None and corr[i] >= 0:
            args["correlation"] = int(corr[i])
        for col, key, missing in _COMM_ARGS:
            vals = comm_cols[col]
            if vals is not None and vals[i] != missing and vals[i] == vals[i]:
                v = vals[i]
                args[key] = int(v) if isinstance(v, (int, np.integer)) else str(v)
        events.append({"ph": "X", "name": names[i], "cat": cat, "pid": int(rank[i]),
                       "tid": int(tid[i]), "ts": float(rel_us[i]), "dur": float(dur_us[i]),
                       "args": args})

    events.extend(_metadata(timeline, rank, tid, lane_kind, name))
    if crit is not None and crit.any():
        events.extend(_critical_flows(rank, tid, rel_us, dur_us, step, crit))
    return {
        "schemaVersion": 1,
        "baseTimeNanoseconds": base,
        "displayTimeUnit": "ms",
        "traceName": name,
        "traceEvents": events,
    }


def _metadata(timeline: pd.DataFrame, rank, tid, lane_kind, name: str) -> list[dict]:
    lanes = pd.DataFrame({"rank": rank, "tid": tid, "lk": lane_kind,
                          "lane_name": timeline["lane_name"].astype(str).to_numpy()})
    lanes = lanes.drop_duplicates(["rank", "tid"]).sort_values(["rank", "lk", "tid"])
    out = []
    for r in sorted(set(rank.tolist())):
        out.append({"ph": "M", "name": "process_name", "pid": r, "tid": 0,
                    "args": {"name": f"rank {r} ({name})"}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": r, "tid": 0,
                    "args": {"sort_index": r}})
    for i, (r, t, lk, ln) in enumerate(lanes.itertuples(index=False)):
        label = ln if lk == "cpu" else f"{lk} {ln}" if not ln.startswith(lk) else ln
        out.append({"ph": "M", "name": "thread_name", "pid": r, "tid": t,
                    "args": {"name": label}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": r, "tid": t,
                    "args": {"sort_index": i}})
    return out


def _critical_flows(rank, tid, rel_us, dur_us, step, crit) -> list[dict]:
    """Flow arrows from each critical-path op to the next one of the same step."""
    idx = np.flatnonzero(crit)
    idx = idx[np.lexsort((rel_us[idx], step[idx]))]
    out = []
    for flow_id, (a, b) in enumerate(zip(idx[:-1], idx[1:])):
        if step[a] != step[b]:
            continue
        out.append({"ph": "s", "id": flow_id, "name": "critical path", "cat": "critical_path",
                    "pid": int(rank[a]), "tid": int(tid[a]),
                    "ts": float(rel_us[a] + dur_us[a] / 2)})
        out.append({"ph": "f", "bp": "e", "id": flow_id, "name": "critical path",
                    "cat": "critical_path", "pid": int(rank[b]), "tid": int(tid[b]),
                    "ts": float(rel_us[b] + dur_us[b] / 2)})
    return out


def write_chrome_trace(timeline: pd.DataFrame, path: str | Path, *,
                       name: str = "tracekit predicted timeline") -> Path:
    """Write ``timeline`` (a replayed timeline or any event table) as a Chrome/Perfetto
    JSON trace at ``path`` (gzip-compressed when the name ends in ``.gz``); return the path.
    """
    path = Path(path)
    doc = chrome_trace(timeline, name=name)
    data = msgspec.json.encode(doc)
    if path.name.endswith(".gz"):
        import gzip

        data = gzip.compress(data, compresslevel=6)
    atomic_write(path, data, what="the trace", fix="choose another path", parents=True)
    log.info("wrote %s (%d events, %.1f MB)", path, len(timeline), len(data) / 1e6)
    return path
