"""Parse one Kineto Chrome-trace file (``.json`` or ``.json.gz``) into an event table.

Before (a file torch.profiler wrote; most keys left out)::

    {"distributedInfo": {"backend": "gloo", "rank": 0, "world_size": 2},
     "baseTimeNanoseconds": 1700000000000000000,
     "traceEvents": [
       {"ph": "M", "name": "thread_name", "pid": 7, "tid": 9, "args": {"name": "pt_gloo_runloop"}},
       {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "pid": 7, "tid": 7,
        "ts": 100.0, "dur": 900.5},
       {"ph": "X", "cat": "cpu_op", "name": "gloo:all_reduce", "pid": 7, "tid": 9,
        "ts": 150.25, "dur": 80.0, "args": {"Input Dims": [[1024]], "Input type": ["float"]}},
       {"ph": "s", "cat": "fwdbwd", ...}]}

After (``parse_trace`` -> one row per ``"X"`` event, columns of
:data:`~tracekit.core.schema.EVENT_COLUMNS`, sorted by ``(lane_kind, lane, ts_ns)``)::

    rank lane_kind lane lane_name        name             kind ts_ns               dur_ns step collective comm_bytes
    0    cpu       7    thread 7         ProfilerStep#3   step 1700000000000100000 900500 3    ""         -1
    0    cpu       9    pt_gloo_runloop  gloo:all_reduce  comm 1700000000000150250 80000  3    all_reduce 4096

What the file says about itself (rank, world size, steps, ...) comes back beside the
table as a :class:`~tracekit.core.trace_meta.TraceMeta` (importable from here too).

Reading and decoding the bytes is :mod:`tracekit.core.kineto_json` (gzip, msgspec
structs, lenient fallback, errors for bad files); this module turns the decoded events
into columns: one list comprehension per field, categoricals from per-name codes, numpy
after that, no cyclic GC while it runs. A 54 MB trace with 216k events takes about half
a second on 2 cores (``benchmarks/ingest.py``).
"""

from __future__ import annotations

import gc
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tracekit.core.collectives import COLLECTIVE_VALUES, comm_fields
from tracekit.core.kineto_json import Args, Event, MetaEvent, Trace, decode_trace
from tracekit.core.nccl_kernels import link_host_collectives, nccl_kernel_columns
from tracekit.core.schema import EVENT_COLUMNS, EventKind, LaneKind
from tracekit.core.trace_meta import TraceMeta
from tracekit.core.validate import UsableEvents, usable_columns
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1
#: timestamps beyond this many µs (about 285 years) are damage, not time
_MAX_ABS_US = 9e15


_GPU_CATS = frozenset(
    {"kernel", "gpu_memcpy", "gpu_memset", "cuda_sync", "gpu_user_annotation", "gpu_op"}
)
_ANNOTATION_CATS = frozenset({"user_annotation", "gpu_user_annotation", "python_function"})
_RUNTIME_CATS = frozenset({"cuda_runtime", "cuda_driver", "runtime", "driver"})
_KIND_BY_CAT = {
    "kernel": EventKind.KERNEL,
    "gpu_memcpy": EventKind.MEMCPY,
    "gpu_memset": EventKind.MEMSET,
    "cuda_sync": EventKind.SYNC,
}
_KIND_NAMES = [k.value for k in EventKind]
_KIND_CODE = {k: np.int8(i) for i, k in enumerate(EventKind)}
_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
_RANK_IN_NAME = re.compile(r"(?:rank|worker)[-_]?(\d+)", re.IGNORECASE)


def rank_from_filename(path: str | Path) -> int | None:
    """``rank-3``, ``rank3``, ``rank_3``, ``worker3`` in a file name -> 3; else None."""
    m = _RANK_IN_NAME.search(Path(path).name)
    if not m or len(m.group(1)) > 9:
        return None
    return int(m.group(1))


def _to_int(values: list, default: int = -1) -> np.ndarray:
    """Mixed None / int / float / numeric-string list -> int64 array, ``default`` for junk
    (including numbers outside int64)."""
    out = np.full(len(values), default, dtype=np.int64)
    for i, v in enumerate(values):
        if v is None or isinstance(v, bool):
            continue
        try:
            x = v if type(v) is int else int(float(v))
        except (TypeError, ValueError, OverflowError):
            continue
        if -_INT64_MAX <= x <= _INT64_MAX:
            out[i] = x
    return out


def _int_column(values: list, default: int = -1) -> np.ndarray:
    """Ints (the usual case, converted in C) or anything else (via :func:`_to_int`)."""
    try:
        return np.fromiter(values, dtype=np.int64, count=len(values))
    except (TypeError, ValueError, OverflowError):
        return _to_int(values, default)


def _times_ns(arr: np.ndarray, base_ns: int) -> np.ndarray:
    """Microsecond timestamps (float64) -> int64 ns, exact for integer µs."""
    whole = np.floor(arr)
    ns = whole.astype(np.int64) * 1000 + np.rint((arr - whole) * 1000.0).astype(np.int64)
    return ns + base_ns if base_ns else ns


def _factorize(values: list) -> tuple[np.ndarray, list]:
    """``['a', 'b', 'a']`` -> ``(array([0, 1, 0]), ['a', 'b'])``: codes in first-seen order.
    A dict beats ``pd.factorize`` on Python strings (no string-dtype inference)."""
    seen: dict = {}
    setdefault = seen.setdefault
    codes = np.fromiter([setdefault(v, len(seen)) for v in values], dtype=np.int32,
                        count=len(values))
    return codes, list(seen)


def parse_trace(path: str | Path) -> tuple[pd.DataFrame, TraceMeta]:
    """Read one Kineto trace into ``(events, meta)``.

    ``events`` has the columns of :data:`~tracekit.core.schema.EVENT_COLUMNS`; ``rank`` is
    filled with ``meta.rank`` (or -1 when the trace does not say: the run loader then
    assigns it). Raises :class:`TracekitError` with a one-line message for a file that is
    missing, truncated, not JSON, not a Kineto trace, or empty.
    """
    path = Path(path)
    with _gc_paused():
        return _parse(path)


@contextmanager
def _gc_paused():
    """No cyclic garbage collection while a trace is turned into columns: the hundreds of
    thousands of objects made here hold no cycles, and full collections over them cost
    about a tenth of the parse."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(path: Path) -> tuple[pd.DataFrame, TraceMeta]:
    return _build(decode_trace(path), path)


def _thread_names(metas: list[MetaEvent]) -> dict[tuple[int, int], str]:
    """``thread_name`` metadata -> ``{(pid, tid): name}``.

    Kineto sometimes names one thread twice, once generically after the process
    (``thread 6201 (python3)``) and once after what it is (``thread 6201 (pt_gloo_runloop)``):
    the specific name wins.
    """
    process = {}
    named: dict[tuple[int, int], list[str]] = {}
    for e in metas:
        label = e.args.name if e.args is not None else None
        if not isinstance(label, str):
            continue
        key = (int(_to_int([e.pid], 0)[0]), int(_to_int([e.tid], 0)[0]))
        if e.name == "process_name":
            process[key[0]] = label
        elif e.name == "thread_name":
            named.setdefault(key, []).append(label)
    out = {}
    for key, labels in named.items():
        generic = f"({process.get(key[0], '')})"
        specific = [lb for lb in labels if not lb.endswith(generic)]
        out[key] = (specific or labels)[-1]
    return out


def _split(evs: list) -> tuple[list[Event], list[MetaEvent]]:
    """The duration events and the metadata events, in order, in one pass over every
    event (the few metadata events are collected on the way: ``append`` returns None)."""
    metas: list[MetaEvent] = []
    keep_meta = metas.append
    xs = [e for e in evs if e.__class__ is Event or (e.__class__ is MetaEvent and keep_meta(e))]
    return xs, metas


def _valid_int(v: Any, low: int, high: int) -> int | None:
    """``v`` when it is a true int within ``[low, high]``, else None."""
    return v if type(v) is int and low <= v <= high else None


def _build(doc: Trace, path: Path) -> tuple[pd.DataFrame, TraceMeta]:
    dinfo = doc.distributedInfo if isinstance(doc.distributedInfo, dict) else {}
    base_ns = _valid_int(doc.baseTimeNanoseconds, 0, 2**62) or 0

    props = doc.deviceProperties if isinstance(doc.deviceProperties, list) else []
    host = doc.host_name if isinstance(doc.host_name, str) else ""
    xs, metas = _split(doc.traceEvents)
    usable = usable_columns(xs, path, base_ns)
    del doc, xs
    if not usable.events:
        raise TracekitError(
            "trace has no duration events ('ph': 'X'); was the profiler stopped before "
            "any step ran? Profile at least one active step",
            path=str(path),
        )

    rank = _valid_int(dinfo.get("rank"), 0, _INT32_MAX)
    rank_source = "distributedInfo"
    if rank is None:
        rank = rank_from_filename(path)
        rank_source = "filename" if rank is not None else "none"

    events = _columns(usable, base_ns, _thread_names(metas), rank if rank is not None else -1,
                      path)
    link_host_collectives(events)  # Generic NCCL kernels, sizes from record_param_comms
    steps = _assign_steps(events)
    if not steps:
        log.info("%s: no ProfilerStep#N annotations; the whole trace is one window (step 0)",
                 path.name)
    pg_config = dinfo.get("pg_config")
    meta = TraceMeta(
        path=str(path),
        rank=rank,
        rank_source=rank_source,
        world_size=_valid_int(dinfo.get("world_size"), 1, _INT32_MAX),
        backend=str(dinfo.get("backend", "") or ""),
        process_groups=[g for g in pg_config if isinstance(g, dict)]
        if isinstance(pg_config, list) else [],
        device_properties=props,
        relative_timestamps=bool(base_ns),
        steps=steps,
        n_events=len(events),
        host=host,
        nccl_version=str(dinfo.get("nccl_version", "") or ""),
    )
    return events, meta


_NO_ARGS = Args()


def _lookup(uniques: list[str], codes: np.ndarray, group: frozenset) -> np.ndarray:
    """Per-event ``value in group``, decided once per distinct value."""
    table = np.fromiter((u in group for u in uniques), dtype=bool, count=len(uniques))
    return table[codes] if len(uniques) else np.zeros(len(codes), dtype=bool)


def _drop_damaged(usable: UsableEvents, path: Path) -> UsableEvents:
    """Events whose time is not a number of µs a clock could show are damage: skip them."""
    bad = ~(np.abs(usable.ts_us) < _MAX_ABS_US) | ~(np.abs(usable.dur_us) < _MAX_ABS_US)
    if not bad.any():
        return usable
    log.warning("%s: skipped %d events with impossible timestamps", path, int(bad.sum()))
    return usable.take(np.flatnonzero(~bad))


def _lane_names(is_gpu: np.ndarray, pids: np.ndarray, lane: np.ndarray,
                thread_names: dict[tuple[int, int], str]) -> pd.Categorical:
    """Per-event lane label: ``stream N`` on the GPU, the thread's name (or ``thread N``)
    on the host. Computed once per distinct ``(pid, lane)``."""
    u_pid, pid_inv = np.unique(pids, return_inverse=True)
    u_lane, lane_inv = np.unique(lane, return_inverse=True)
    n_lane = len(u_lane)
    # key: (0 for a GPU stream, else 1 + the pid's index) * n_lane + the lane's index
    key = (np.where(is_gpu, 0, pid_inv.ravel() + 1).astype(np.int64) * n_lane
           + lane_inv.ravel())
    u_key, key_inv = np.unique(key, return_inverse=True)
    labels = []
    for k in u_key.tolist():
        p, ln = divmod(k, n_lane)
        lane_id = int(u_lane[ln])
        if p == 0:
            labels.append(f"stream {lane_id}")
        else:
            labels.append(thread_names.get((int(u_pid[p - 1]), lane_id), f"thread {lane_id}"))
    label_codes, label_uniques = _factorize(labels)
    return pd.Categorical.from_codes(label_codes[key_inv.ravel()], label_uniques)


def _step_numbers(name_uniques: list[str]) -> np.ndarray:
    """Per distinct name: N for ``ProfilerStep#N`` (N within int32), else -1."""
    out = np.full(len(name_uniques), -1, dtype=np.int64)
    for code, nm in enumerate(name_uniques):
        if nm.startswith("ProfilerStep#"):
            m = _STEP_RE.match(nm)
            if m and len(m.group(1)) <= 9:
                out[code] = int(m.group(1))
    return out


def _sparse_categorical(index: np.ndarray, values: list[str], n: int) -> tuple[np.ndarray, list]:
    """Strings for the rows at ``index`` ('' elsewhere) -> (codes, categories)."""
    codes, uniques = _factorize([""] + values)
    return _sparse_int(index, codes[1:], n, fill=0).astype(np.int32), uniques


def _sparse_int(index: np.ndarray, values: np.ndarray, n: int, fill: int = -1) -> np.ndarray:
    full = np.full(n, fill, dtype=np.int64)
    full[index] = values
    return full


def _columns(usable: UsableEvents, base_ns: int, thread_names: dict, rank: int,
             path: Path) -> pd.DataFrame:
    """Duration events -> the event table (see :data:`EVENT_COLUMNS`), sorted by
    ``(lane_kind, lane, ts_ns)``. Times and ids as the checks read them
    (:mod:`tracekit.core.validate`), one list comprehension per other field, numpy after
    that."""
    usable = _drop_damaged(usable, path)
    xs, ts_us, dur_us = usable.events, usable.ts_us, usable.dur_us
    if not xs:
        raise TracekitError("no event has a usable timestamp; re-export the trace",
                            path=str(path))
    n = len(xs)
    no_args = _NO_ARGS
    args = [e.args or no_args for e in xs]
    name_codes, name_uniques = _factorize([e.name for e in xs])
    cat_codes, cat_uniques = _factorize([e.cat for e in xs])
    pids = usable.pid if usable.pid is not None else _int_column([e.pid for e in xs], 0)
    tids = usable.tid if usable.tid is not None else _int_column([e.tid for e in xs], 0)
    stream = _int_column([a.stream for a in args])
    corr = _int_column([a.correlation for a in args])
    ext = _int_column([a.external_id for a in args])
    ts_ns = _times_ns(ts_us, base_ns)
    dur_ns = np.maximum(_times_ns(dur_us, 0), 0)

    is_runtime = _lookup(cat_uniques, cat_codes, _RUNTIME_CATS)
    is_gpu = _lookup(cat_uniques, cat_codes, _GPU_CATS) | ((stream >= 0) & ~is_runtime)
    lane = np.where(is_gpu & (stream >= 0), stream, tids)

    K = _KIND_CODE
    kind_of_cat = np.full(len(cat_uniques), K[EventKind.CPU_OP], dtype=np.int8)
    for code, cat in enumerate(cat_uniques):
        if cat in _KIND_BY_CAT:
            kind_of_cat[code] = K[_KIND_BY_CAT[cat]]
        if cat in _ANNOTATION_CATS:
            kind_of_cat[code] = K[EventKind.ANNOTATION]
        if cat in _RUNTIME_CATS:
            kind_of_cat[code] = K[EventKind.RUNTIME]
    kind = kind_of_cat[cat_codes] if n else np.zeros(0, dtype=np.int8)
    # a runtime call whose correlation id reappears on a GPU event launched that event
    gpu_corr = corr[is_gpu & (corr >= 0)]
    if len(gpu_corr):
        kind[is_runtime & (corr >= 0) & np.isin(corr, gpu_corr)] = K[EventKind.LAUNCH]
    kind[is_gpu & (kind == K[EventKind.CPU_OP])] = K[EventKind.KERNEL]
    is_step = (_step_numbers(name_uniques)[name_codes] >= 0) & ~is_gpu
    kind[is_step] = K[EventKind.STEP]

    is_kernel = _lookup(cat_uniques, cat_codes, frozenset(["kernel"]))
    comm = comm_fields(name_codes, name_uniques, is_kernel, is_step, args)
    kind[comm.index[comm.is_comm]] = K[EventKind.COMM]

    sync_idx = np.flatnonzero(kind == K[EventKind.SYNC])
    sync_args = [args[i] for i in sync_idx]
    wait_stream = _sparse_int(sync_idx, _int_column([a.wait_on_stream for a in sync_args]), n)
    wait_corr = _sparse_int(sync_idx, _int_column([a.wait_on_corr for a in sync_args]), n)
    dtype_codes, dtype_cats = _sparse_categorical(comm.index, comm.dtype, n)
    pg_name_codes, pg_name_cats = _sparse_categorical(comm.index, comm.pg_name, n)
    pg_ranks_codes, pg_ranks_cats = _sparse_categorical(comm.index, comm.pg_ranks, n)
    coll_codes = np.zeros(n, dtype=np.int8)
    coll_codes[comm.index] = comm.collective
    lane_names = _lane_names(is_gpu, pids, lane, thread_names)

    o = np.lexsort((ts_ns, lane, is_gpu))

    def cat(codes: np.ndarray, categories: list) -> pd.Categorical:
        return pd.Categorical.from_codes(codes[o], categories)

    ts_sorted = ts_ns[o]
    dur_sorted = dur_ns[o]
    columns = {
        "rank": np.full(n, rank, dtype=np.int32),
        "lane_kind": cat(is_gpu.astype(np.int8), [LaneKind.CPU.value, LaneKind.GPU.value]),
        "lane": lane[o],
        "lane_name": pd.Categorical.from_codes(lane_names.codes[o], lane_names.categories),
        "pid": pids[o],
        "name": cat(name_codes, name_uniques),
        "cat": cat(cat_codes, cat_uniques),
        "kind": cat(kind, _KIND_NAMES),
        "ts_ns": ts_sorted,
        "end_ns": ts_sorted + dur_sorted,
        "dur_ns": dur_sorted,
        "step": np.full(n, -1, dtype=np.int32),
        "correlation": corr[o],
        "external_id": ext[o],
        "collective": cat(coll_codes, COLLECTIVE_VALUES),
        "comm_bytes": _sparse_int(comm.index, comm.comm_bytes, n)[o],
        "in_nelems": _sparse_int(comm.index, comm.in_nelems, n)[o],
        "out_nelems": _sparse_int(comm.index, comm.out_nelems, n)[o],
        "dtype": cat(dtype_codes, dtype_cats),
        "group_size": _sparse_int(comm.index, comm.group_size, n)[o].astype(np.int32),
        "pg_name": cat(pg_name_codes, pg_name_cats),
        "pg_ranks": cat(pg_ranks_codes, pg_ranks_cats),
        "seq": _sparse_int(comm.index, comm.seq, n)[o],
        "wait_on_stream": wait_stream[o],
        "wait_on_corr": wait_corr[o],
        **nccl_kernel_columns(name_codes[o], name_uniques, is_kernel[o]),
        "nested_events": np.zeros(n, dtype=np.int16),  # filled by tracekit.core.reduce
    }
    assert list(columns) == list(EVENT_COLUMNS)
    return pd.DataFrame(columns, copy=False)


def _assign_steps(events: pd.DataFrame) -> list[int]:
    """Fill ``events.step`` in place; return the step numbers found.

    Host events get the step whose ``ProfilerStep#N`` window contains their start. GPU
    events get the step of the launch that queued them (by correlation), so a kernel that
    runs after its step's host window closed still counts for that step; GPU events
    without a launch fall back to their start time. Without any step every event is step 0.
    """
    is_step = (events["kind"] == EventKind.STEP.value).to_numpy()
    if not is_step.any():
        events["step"] = np.zeros(len(events), dtype=np.int32)
        return []
    step_rows = events.loc[is_step, ["name", "ts_ns", "end_ns"]]
    nums = np.array([int(_STEP_RE.match(str(nm)).group(1)) for nm in step_rows["name"]],
                    dtype=np.int64)
    starts = step_rows["ts_ns"].to_numpy()
    ends = step_rows["end_ns"].to_numpy()
    order = np.argsort(starts, kind="stable")
    nums, starts, ends = nums[order], starts[order], ends[order]
    # keep one window per step number (the earliest), in time order
    _, first = np.unique(nums, return_index=True)
    keep = np.sort(first)
    nums, starts, ends = nums[keep], starts[keep], ends[keep]

    ts = events["ts_ns"].to_numpy()
    idx = np.searchsorted(starts, ts, side="right") - 1
    valid = idx >= 0
    inside = np.zeros(len(ts), dtype=bool)
    inside[valid] = ts[valid] < ends[idx[valid]]
    step = np.where(inside, nums[np.clip(idx, 0, None)], -1).astype(np.int32)

    is_gpu = (events["lane_kind"] == LaneKind.GPU.value).to_numpy()
    corr = events["correlation"].to_numpy()
    launch = (~is_gpu) & (corr >= 0)
    if launch.any() and is_gpu.any():
        lc, ls = corr[launch], step[launch]
        o = np.argsort(lc, kind="stable")
        lc, ls = lc[o], ls[o]
        gpu_idx = np.flatnonzero(is_gpu & (corr >= 0))
        pos = np.searchsorted(lc, corr[gpu_idx])
        pos_ok = pos < len(lc)
        hit = np.zeros(len(gpu_idx), dtype=bool)
        hit[pos_ok] = lc[pos[pos_ok]] == corr[gpu_idx[pos_ok]]
        step[gpu_idx[hit]] = ls[pos[hit]]
    events["step"] = step
    return [int(s) for s in nums]

