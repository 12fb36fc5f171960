"""Parse one Kineto Chrome-trace file (``.json`` or ``.json.gz``) into an event table.

The file is decoded with msgspec into typed structs that keep only the fields tracekit
uses, then turned into columns in a few vectorized passes (see :mod:`tracekit.core.schema`
for the columns). This is the first thing every command does, so it is written for speed:
one decode, one pass to build columns, numpy for everything after.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from tracekit.core.collectives import comm_fields
from tracekit.core.schema import EVENT_COLUMNS, EventKind, LaneKind, empty_events
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)

Scalar = int | float | str | None


class _Args(msgspec.Struct, gc=False):
    # Precise types keep decoding fast; a trace with an odd type for one of these falls back
    # to _decode_leniently, which coerces (strict=False) and skips events that still fail.
    external_id: int = msgspec.field(default=-1, name="External id")
    correlation: int = -1
    stream: int = -1
    collective_name: str | None = msgspec.field(default=None, name="Collective name")
    in_nelems: int = msgspec.field(default=-1, name="In msg nelems")
    out_nelems: int = msgspec.field(default=-1, name="Out msg nelems")
    group_size: int = msgspec.field(default=-1, name="Group size")
    dtype: str | None = None
    pg_name: str | None = msgspec.field(default=None, name="Process Group Name")
    pg_ranks: Any = msgspec.field(default=None, name="Process Group Ranks")
    seq: int = msgspec.field(default=-1, name="Seq")
    input_dims: Any = msgspec.field(default=None, name="Input Dims")
    input_type: Any = msgspec.field(default=None, name="Input type")
    wait_on_stream: int = -1
    wait_on_corr: int = msgspec.field(default=-1, name="wait_on_cuda_event_record_corr_id")
    name: Any = None  # thread_name / process_name metadata


class _Event(msgspec.Struct, gc=False):
    ph: str = ""
    name: str = ""
    cat: str = ""
    pid: int | str = 0
    tid: int | str = 0
    ts: float | None = None
    dur: float = 0.0
    args: _Args | None = None


class _Trace(msgspec.Struct, gc=False):
    traceEvents: list[_Event] | None = None  # noqa: N815 - Kineto's key
    distributedInfo: dict[str, Any] | None = None  # noqa: N815
    deviceProperties: list[Any] | None = None  # noqa: N815
    baseTimeNanoseconds: int | None = None  # noqa: N815
    schemaVersion: Any = None  # noqa: N815
    host_name: Any = None


_DECODER = msgspec.json.Decoder(_Trace | list[_Event])

_GPU_CATS = frozenset(
    {"kernel", "gpu_memcpy", "gpu_memset", "cuda_sync", "gpu_user_annotation", "gpu_op"}
)
_ANNOTATION_CATS = frozenset({"user_annotation", "gpu_user_annotation", "python_function"})
_RUNTIME_CATS = frozenset({"cuda_runtime", "cuda_driver", "runtime", "driver"})
_KIND_BY_CAT = {
    "kernel": EventKind.KERNEL.value,
    "gpu_memcpy": EventKind.MEMCPY.value,
    "gpu_memset": EventKind.MEMSET.value,
    "cuda_sync": EventKind.SYNC.value,
}
_KIND_NAMES = [k.value for k in EventKind]
_KIND_CODE = {k: np.int8(i) for i, k in enumerate(EventKind)}
_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
_RANK_IN_NAME = re.compile(r"(?:rank|worker)[-_]?(\d+)", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class TraceMeta:
    """What one trace file says about itself, beside its events."""

    path: str
    #: global rank, from ``distributedInfo``, else the file name; None when neither says.
    rank: int | None
    #: where ``rank`` came from: 'distributedInfo', 'filename', 'manifest' or 'none'.
    rank_source: str
    #: world size from ``distributedInfo``, None when absent.
    world_size: int | None
    #: 'nccl', 'gloo', ... or '' when the trace does not say.
    backend: str
    #: ``distributedInfo['pg_config']`` as recorded (list of dicts), or [].
    process_groups: list[dict] = field(default_factory=list)
    #: ``deviceProperties`` as recorded (list of dicts), or [].
    device_properties: list[dict] = field(default_factory=list)
    #: True when timestamps were relative to ``baseTimeNanoseconds`` (newer Kineto).
    relative_timestamps: bool = False
    #: step numbers found (``ProfilerStep#N``), in order; [] when the trace has none.
    steps: list[int] = field(default_factory=list)
    #: number of duration events kept.
    n_events: int = 0
    #: host name when the trace records it, else ''.
    host: str = ""
    #: the NCCL version when recorded, else ''.
    nccl_version: str = ""

    @property
    def has_steps(self) -> bool:
        return bool(self.steps)


def rank_from_filename(path: str | Path) -> int | None:
    """``rank-3``, ``rank3``, ``rank_3``, ``worker3`` in a file name -> 3; else None."""
    m = _RANK_IN_NAME.search(Path(path).name)
    return int(m.group(1)) if m else None


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TracekitError("no such file; check the path", path=str(path)) from None
    except IsADirectoryError:
        raise TracekitError("is a folder, expected a trace file", path=str(path)) from None
    except OSError as exc:
        raise TracekitError(f"cannot read file ({exc.strerror})", path=str(path)) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error):
            raise TracekitError(
                "gzip data is truncated or corrupt; re-copy or re-export the trace",
                path=str(path),
            ) from None
    return raw


def _to_int(values: list, default: int = -1) -> np.ndarray:
    """Mixed None / int / float / numeric-string list -> int64 array, ``default`` for junk."""
    out = np.full(len(values), default, dtype=np.int64)
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) is int:
            out[i] = v
        else:
            try:
                out[i] = int(float(v))
            except (TypeError, ValueError, OverflowError):
                pass
    return out


def _int_column(values: list) -> np.ndarray:
    """Kineto ids (pid / tid) -> int64; strings ('stream 7', 'Spans') map via _to_int."""
    try:
        return np.array(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return _to_int(values, 0)


def _times_ns(values: list, base_ns: int) -> np.ndarray:
    """Microsecond timestamps (int or float) -> int64 ns, exact for integer µs."""
    arr = np.asarray(values, dtype=np.float64)
    whole = np.floor(arr)
    ns = whole.astype(np.int64) * 1000 + np.rint((arr - whole) * 1000.0).astype(np.int64)
    return ns + base_ns if base_ns else ns


def parse_trace(path: str | Path) -> tuple[pd.DataFrame, TraceMeta]:
    """Read one Kineto trace into ``(events, meta)``.

    ``events`` has the columns of :data:`~tracekit.core.schema.EVENT_COLUMNS`; ``rank`` is
    filled with ``meta.rank`` (or -1 when the trace does not say: the run loader then
    assigns it). Raises :class:`TracekitError` with a one-line message for a file that is
    missing, truncated, not JSON, not a Kineto trace, or empty.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 256 and not raw.strip():
        raise TracekitError("file is empty; re-export the trace", path=str(path))
    try:
        doc = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        doc = _decode_leniently(raw, path, exc)
    except msgspec.DecodeError as exc:
        hint = "truncated" if "truncated" in str(exc).lower() else "not valid JSON"
        raise TracekitError(
            f"{hint} ({exc}); is this a complete Kineto trace (torch.profiler "
            "export_chrome_trace)?",
            path=str(path),
        ) from None
    return _build(doc, path)


def _decode_leniently(raw: bytes, path: Path, first_error: Exception) -> _Trace:
    """Typed decode failed on one odd field: decode generically, keep the events that fit."""
    try:
        generic = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise TracekitError(f"not valid JSON ({exc})", path=str(path)) from None
    if isinstance(generic, list):
        generic = {"traceEvents": generic}
    if not isinstance(generic, dict) or not isinstance(generic.get("traceEvents"), list):
        raise TracekitError(
            "not a Kineto trace: no 'traceEvents' list; expected the JSON written by "
            "torch.profiler's export_chrome_trace",
            path=str(path),
        )
    events, dropped = [], 0
    for ev in generic["traceEvents"]:
        try:
            events.append(msgspec.convert(ev, _Event, strict=False))
        except (msgspec.ValidationError, TypeError):
            dropped += 1
    if dropped:
        log.warning("%s: skipped %d malformed events (%s)", path, dropped, first_error)
    head = {k: v for k, v in generic.items() if k != "traceEvents"}
    try:
        meta = msgspec.convert(head, _Trace, strict=False)
    except msgspec.ValidationError:
        meta = _Trace()
    return _Trace(
        traceEvents=events,
        distributedInfo=meta.distributedInfo,
        deviceProperties=meta.deviceProperties,
        baseTimeNanoseconds=meta.baseTimeNanoseconds,
        host_name=meta.host_name,
    )


def _build(doc: _Trace | list[_Event], path: Path) -> tuple[pd.DataFrame, TraceMeta]:
    if isinstance(doc, list):
        doc = _Trace(traceEvents=doc)
    if doc.traceEvents is None:
        raise TracekitError(
            "not a Kineto trace: no 'traceEvents' list; expected the JSON written by "
            "torch.profiler's export_chrome_trace",
            path=str(path),
        )
    dinfo = doc.distributedInfo if isinstance(doc.distributedInfo, dict) else {}
    base_ns = int(doc.baseTimeNanoseconds or 0)

    thread_names: dict[tuple[Any, Any], str] = {}
    xs: list[_Event] = []
    append = xs.append
    for e in doc.traceEvents:
        ph = e.ph
        if ph == "X":
            if e.ts is not None and type(e.pid) is not str:
                append(e)
        elif ph == "M" and e.name == "thread_name" and e.args is not None:
            thread_names[(e.pid, e.tid)] = str(e.args.name)
    if not xs:
        raise TracekitError(
            "trace has no duration events ('ph': 'X'); was the profiler stopped before "
            "any step ran? Profile at least one active step",
            path=str(path),
        )

    rank = dinfo.get("rank")
    rank_source = "distributedInfo"
    if not isinstance(rank, int):
        rank = rank_from_filename(path)
        rank_source = "filename" if rank is not None else "none"

    events = _columns(xs, base_ns, thread_names, rank if rank is not None else -1)
    steps = _assign_steps(events)
    if not steps:
        log.info("%s: no ProfilerStep#N annotations; the whole trace is one window (step 0)",
                 path.name)
    host = doc.host_name if isinstance(doc.host_name, str) else ""
    meta = TraceMeta(
        path=str(path),
        rank=rank,
        rank_source=rank_source,
        world_size=dinfo.get("world_size") if isinstance(dinfo.get("world_size"), int) else None,
        backend=str(dinfo.get("backend", "") or ""),
        process_groups=list(dinfo.get("pg_config") or []),
        device_properties=list(doc.deviceProperties or []),
        relative_timestamps=bool(base_ns),
        steps=steps,
        n_events=len(events),
        host=host,
        nccl_version=str(dinfo.get("nccl_version", "") or ""),
    )
    return events, meta


def _columns(xs: list[_Event], base_ns: int, thread_names: dict, rank: int) -> pd.DataFrame:
    n = len(xs)
    no_args = _Args()
    args = [e.args or no_args for e in xs]
    names = [e.name for e in xs]
    cats = [e.cat for e in xs]
    tids_raw = [e.tid for e in xs]
    pids_raw = [e.pid for e in xs]
    ts_ns = _times_ns([e.ts for e in xs], base_ns)
    dur_ns = _times_ns([e.dur for e in xs], 0)
    np.maximum(dur_ns, 0, out=dur_ns)
    stream = np.array([a.stream for a in args], dtype=np.int64)
    corr = np.array([a.correlation for a in args], dtype=np.int64)
    ext = np.array([a.external_id for a in args], dtype=np.int64)

    cat_codes, cat_uniques = pd.factorize(np.asarray(cats, dtype=object))
    cat_uniques = [str(c) for c in cat_uniques]

    def cats_in(group: frozenset) -> np.ndarray:
        codes = [i for i, c in enumerate(cat_uniques) if c in group]
        return np.isin(cat_codes, codes)

    is_runtime = cats_in(_RUNTIME_CATS)
    is_gpu = cats_in(_GPU_CATS) | ((stream >= 0) & ~is_runtime)
    tids = _int_column(tids_raw)
    pids = _int_column(pids_raw)
    lane = np.where(is_gpu & (stream >= 0), stream, tids)

    K = _KIND_CODE
    kind = np.full(n, K[EventKind.CPU_OP], dtype=np.int8)
    for cat, k in _KIND_BY_CAT.items():
        kind[cats_in(frozenset([cat]))] = K[EventKind(k)]
    kind[cats_in(_ANNOTATION_CATS)] = K[EventKind.ANNOTATION]
    kind[is_runtime] = K[EventKind.RUNTIME]
    # a runtime call whose correlation id reappears on a GPU event launched that event
    gpu_corr = corr[is_gpu & (corr >= 0)]
    kind[is_runtime & (corr >= 0) & np.isin(corr, gpu_corr)] = K[EventKind.LAUNCH]
    kind[is_gpu & (kind == K[EventKind.CPU_OP])] = K[EventKind.KERNEL]

    name_codes, name_uniques = pd.factorize(np.asarray(names, dtype=object))
    name_uniques = [str(u) for u in name_uniques]
    step_codes = [i for i, nm in enumerate(name_uniques) if nm.startswith("ProfilerStep#")]
    is_step = np.zeros(n, dtype=bool)
    if step_codes:
        is_step = np.isin(name_codes, step_codes) & ~is_gpu
        kind[is_step] = K[EventKind.STEP]

    # lane names: one lookup per distinct (pid, tid), not per event
    cpu_lane_names = {}
    for key in set(zip(pids_raw, tids_raw)):
        cpu_lane_names[key] = thread_names.get(key, f"thread {key[1]}")
    lane_names = np.empty(n, dtype=object)
    gpu_idx = np.flatnonzero(is_gpu)
    if len(gpu_idx):
        lane_names[gpu_idx] = ["stream " + str(x) for x in lane[gpu_idx]]
    cpu_idx = np.flatnonzero(~is_gpu)
    lane_names[cpu_idx] = [cpu_lane_names[(pids_raw[i], tids_raw[i])] for i in cpu_idx]

    is_kernel = cats_in(frozenset(["kernel"]))
    comm = comm_fields(name_codes, name_uniques, is_kernel, is_step, args)
    kind[comm.index[comm.is_comm]] = K[EventKind.COMM]

    def sparse_cat(values: list[str]) -> pd.Categorical:
        codes, uniques = pd.factorize(np.asarray([""] + values, dtype=object))
        full = np.zeros(n, dtype=codes.dtype)
        full[comm.index] = codes[1:]
        return pd.Categorical.from_codes(full, [str(u) for u in uniques])

    def sparse_int(values: np.ndarray) -> np.ndarray:
        full = np.full(n, -1, dtype=np.int64)
        full[comm.index] = values
        return full

    df = pd.DataFrame(
        {
            "rank": np.full(n, rank, dtype=np.int32),
            "lane_kind": pd.Categorical.from_codes(is_gpu.astype(np.int8),
                                                   [LaneKind.CPU.value, LaneKind.GPU.value]),
            "lane": lane.astype(np.int64),
            "lane_name": pd.Categorical(lane_names),
            "pid": pids,
            "name": pd.Categorical.from_codes(name_codes, name_uniques),
            "cat": pd.Categorical.from_codes(cat_codes, cat_uniques),
            "kind": pd.Categorical.from_codes(kind, _KIND_NAMES),
            "ts_ns": ts_ns,
            "end_ns": ts_ns + dur_ns,
            "dur_ns": dur_ns,
            "step": np.full(n, -1, dtype=np.int32),
            "correlation": corr,
            "external_id": ext,
            "collective": sparse_cat(comm.collective),
            "comm_bytes": sparse_int(comm.comm_bytes),
            "in_nelems": sparse_int(comm.in_nelems),
            "out_nelems": sparse_int(comm.out_nelems),
            "dtype": sparse_cat(comm.dtype),
            "group_size": sparse_int(comm.group_size).astype(np.int32),
            "pg_name": sparse_cat(comm.pg_name),
            "pg_ranks": sparse_cat(comm.pg_ranks),
            "seq": sparse_int(comm.seq),
            "wait_on_stream": np.array([a.wait_on_stream for a in args], dtype=np.int64),
            "wait_on_corr": np.array([a.wait_on_corr for a in args], dtype=np.int64),
        }
    )
    assert list(df.columns) == list(EVENT_COLUMNS)
    order = np.lexsort((ts_ns, lane, is_gpu))
    df = df.take(order)
    df.reset_index(drop=True, inplace=True)
    return df


def _assign_steps(events: pd.DataFrame) -> list[int]:
    """Fill ``events.step`` in place; return the step numbers found.

    Host events get the step whose ``ProfilerStep#N`` window contains their start. GPU
    events get the step of the launch that queued them (by correlation), so a kernel that
    runs after its step's host window closed still counts for that step; GPU events
    without a launch fall back to their start time.
    """
    is_step = (events["kind"] == EventKind.STEP.value).to_numpy()
    if not is_step.any():
        events["step"] = np.int32(0)
        return []
    step_rows = events.loc[is_step, ["name", "ts_ns", "end_ns"]]
    nums = step_rows["name"].astype(str).str.extract(_STEP_RE)[0].astype(np.int64).to_numpy()
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


def empty_trace_events() -> pd.DataFrame:
    """Re-export of :func:`tracekit.core.schema.empty_events` for callers of this module."""
    return empty_events()
