"""Kineto JSON bytes -> typed msgspec structs: the reading half of
:mod:`tracekit.core.kineto`.

Before (bytes of a ``.json`` or ``.json.gz`` file)::

    {"traceEvents": [{"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7,
                      "ts": 150.0, "dur": 30.0, "args": {"stream": 7, "correlation": 5}},
                     {"ph": "s", "id": 5, ...}, ...], "distributedInfo": {...}}

After (:func:`decode_trace`)::

    Trace(traceEvents=[Event(name='gemm', cat='kernel', pid=0, tid=7, ts=150.0, dur=30.0,
                             args=Args(correlation=5, stream=7, ...)),
                       _Phase_115(), ...], distributedInfo={...}, ...)

Only the fields tracekit reads are kept. The event phase is a msgspec tag, so flow and
instant events decode to empty structs; nested args (``Input Dims``, ``Input type``,
``Process Group Ranks``) stay raw JSON until a collective needs them. A gzip file is
inflated with ISA-L when the optional ``isal`` package is installed (zlib otherwise),
into one buffer sized from its trailer. A file with an odd field (``"correlation": "5"``)
fails the typed decode and is decoded again leniently (types coerced where possible, events
that still do not fit dropped with a warning); ``ts``/``dur``/``pid``/``tid`` are decoded
as they are, and :mod:`tracekit.core.validate` drops the events whose values are not
usable numbers. JSON with NaN or Infinity (Python's json writes them) is read with
Python's json. Anything else wrong raises :class:`~tracekit.errors.TracekitError` naming
the file.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Union

import msgspec

from tracekit.core.formats import check_foreign
from tracekit.core.warnings import warn
from tracekit.errors import TracekitError
from tracekit.log import get_logger

try:  # optional: ISA-L inflates about twice as fast as zlib
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - depends on the environment
    _inflate = zlib

log = get_logger(__name__)

_NO_RAW = msgspec.Raw(b"")
_RAW_ARGS = ("Process Group Ranks", "Input Dims", "Input type")


class Args(msgspec.Struct, gc=False):
    """The ``args`` of an event that tracekit reads; -1 / None / empty raw when absent."""

    # Precise types keep decoding fast; a trace with an odd type for one of these falls back
    # to _decode_leniently, which coerces (strict=False) and skips events that still fail.
    external_id: int = msgspec.field(default=-1, name="External id")
    correlation: int = -1
    #: ROCm runtime calls record their stream as a pointer string ('0x0'): read as absent
    stream: int | str = -1
    collective_name: str | None = msgspec.field(default=None, name="Collective name")
    in_nelems: int = msgspec.field(default=-1, name="In msg nelems")
    out_nelems: int = msgspec.field(default=-1, name="Out msg nelems")
    group_size: int = msgspec.field(default=-1, name="Group size")
    dtype: str | None = None
    pg_name: str | None = msgspec.field(default=None, name="Process Group Name")
    # nested lists kept as raw JSON: decoded only for the few events that are collectives
    pg_ranks: msgspec.Raw = msgspec.field(default=_NO_RAW, name="Process Group Ranks")
    seq: int = msgspec.field(default=-1, name="Seq")
    input_dims: msgspec.Raw = msgspec.field(default=_NO_RAW, name="Input Dims")
    input_type: msgspec.Raw = msgspec.field(default=_NO_RAW, name="Input type")
    wait_on_stream: int = -1
    wait_on_corr: int = msgspec.field(default=-1, name="wait_on_cuda_event_record_corr_id")


class Event(msgspec.Struct, gc=False, tag_field="ph", tag="X"):
    """A duration event, the only kind that becomes a row. ``pid``, ``tid``, ``ts`` and
    ``dur`` are decoded as they are (a string stays a string, a missing ``dur`` is None):
    :func:`tracekit.core.validate.usable_events` drops what is not a usable number."""

    name: str = ""
    cat: str = ""
    pid: Any = None
    tid: Any = None
    ts: Any = None
    dur: Any = None
    args: Args | None = None


class MetaArgs(msgspec.Struct, gc=False):
    name: Any = None


class MetaEvent(msgspec.Struct, gc=False, tag_field="ph", tag="M"):
    """A metadata event: thread and process names."""

    name: str = ""
    pid: int | str = 0
    tid: int | str = 0
    args: MetaArgs | None = None


#: every other Chrome-trace phase: decoded to an empty struct (its fields are skipped)
OTHER_PHASES = [msgspec.defstruct(f"_Phase_{ord(p)}", [], tag_field="ph", tag=p, gc=False)
                 for p in "BEiICbnestfPONDRcvV()"]
AnyEvent = Union[tuple([Event, MetaEvent, *OTHER_PHASES])]  # noqa: UP007


class Trace(msgspec.Struct, gc=False):
    traceEvents: list[AnyEvent] | None = None  # noqa: N815 - Kineto's key
    distributedInfo: dict[str, Any] | None = None  # noqa: N815
    deviceProperties: list[Any] | None = None  # noqa: N815
    baseTimeNanoseconds: int | None = None  # noqa: N815
    host_name: Any = None


DECODER = msgspec.json.Decoder(Union[Trace, list[AnyEvent]])  # noqa: UP007

NOT_KINETO = (
    "not a Kineto trace: no 'traceEvents' list; expected the JSON written by "
    "torch.profiler's export_chrome_trace"
)

_GZIP_ERRORS = (EOFError, OSError, ValueError, zlib.error, _inflate.error)
_GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(data: bytes, path: Path, *, trust_trailer: bool = True) -> bytes:
    """Inflate a gzip file.

    Fast path: one member (what torch.profiler writes), inflated straight into a buffer of
    the size its trailer announces, so the JSON is written once (no growing buffer: on
    this kind of machine every fresh page costs a slow page fault). Several members,
    trailing junk or a damaged trailer take the member-by-member path
    (``trust_trailer=False`` forces it).
    """
    isize = int.from_bytes(data[-4:], "little") if len(data) >= 18 else 0
    if trust_trailer and 0 < isize <= 64 * len(data):
        try:
            out = _inflate.decompress(data, 31, isize)
        except _GZIP_ERRORS:
            out = None
        if out is not None and len(out) == isize:
            return out
    parts = []
    try:
        while data:
            d = _inflate.decompressobj(31)
            parts.append(d.decompress(data))
            if not d.eof:
                raise EOFError
            data = d.unused_data.lstrip(b"\x00")
            if data and data[:2] != _GZIP_MAGIC:
                break  # trailing junk after a complete member: gzip(1) ignores it too
    except _GZIP_ERRORS:
        raise TracekitError(
            "gzip data is truncated or corrupt; re-copy or re-export the trace",
            path=str(path),
        ) from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TracekitError("no such file; check the path", path=str(path)) from None
    except IsADirectoryError:
        raise TracekitError("is a folder, expected a trace file", path=str(path)) from None
    except OSError as exc:
        raise TracekitError(f"cannot read file ({exc.strerror})", path=str(path)) from None


def read_trace_bytes(path: Path) -> bytes:
    """The file's JSON bytes, inflated when it is gzip (whatever its name says)."""
    data = _read_file(path)
    return _gunzip(data, path) if data[:2] == _GZIP_MAGIC else data


def decode_trace(path: Path) -> Trace:
    """Read, inflate and decode one trace file (see the module docstring)."""
    data = _read_file(path)
    raw = _gunzip(data, path) if data[:2] == _GZIP_MAGIC else data
    check_foreign(raw[:4096], path)  # rocprofv3, nsys, Perfetto, ...: say so, in one line
    if len(raw) < 256 and not raw.strip():
        raise TracekitError("file is empty; re-export the trace", path=str(path))
    for attempt in (1, 2):
        try:
            doc = DECODER.decode(raw)
        except msgspec.ValidationError as exc:
            doc = _decode_leniently(raw, path, exc)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            if attempt == 1 and raw is not data:
                # a gzip file whose first member is exactly as long as its last one fools
                # _gunzip's fast path into reading one member: read it member by member
                whole = _gunzip(data, path, trust_trailer=False)
                if len(whole) != len(raw):
                    raw = whole
                    continue
            doc = _decode_nonstandard(raw, path, exc)
            if doc is not None:
                break
            hint = "truncated" if "truncated" in str(exc).lower() else "not valid JSON"
            raise TracekitError(
                f"{hint} ({exc}); is this a complete Kineto trace (torch.profiler "
                "export_chrome_trace)?",
                path=str(path),
            ) from None
        break
    if isinstance(doc, list):
        doc = Trace(traceEvents=doc)
    if doc.traceEvents is None:
        raise TracekitError(NOT_KINETO, path=str(path))
    return doc


def _decode_nonstandard(raw: bytes, path: Path, exc: Exception) -> Trace | None:
    """JSON with NaN, Infinity or numbers beyond float64 (Python's json writes them):
    decoded by Python's json, the odd numbers become NaN / inf for the event checks to
    drop. None when that fails too."""
    if "out of range" not in str(exc) and b"NaN" not in raw and b"Infinity" not in raw:
        return None
    try:
        generic = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return _decode_leniently(raw, path, exc, generic=generic)


def _decode_leniently(raw: bytes, path: Path, first_error: Exception,
                      generic: Any = None) -> Trace:
    """Typed decode failed on one odd field: decode generically, keep the events that fit."""
    nonstandard = generic is not None
    try:
        generic = generic if nonstandard else msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise TracekitError(f"not valid JSON ({exc})", path=str(path)) from None
    if isinstance(generic, list):
        generic = {"traceEvents": generic}
    if not isinstance(generic, dict) or not isinstance(generic.get("traceEvents"), list):
        raise TracekitError(NOT_KINETO, path=str(path))
    if generic["traceEvents"] and not any(isinstance(ev, dict) and "ph" in ev
                                          for ev in generic["traceEvents"]):
        raise TracekitError(NOT_KINETO.replace(
            "no 'traceEvents' list", "no event in 'traceEvents' has a 'ph' phase"), path=str(path))
    wanted = [_with_raw_args(ev) for ev in generic["traceEvents"]
              if isinstance(ev, dict) and ev.get("ph") in ("X", "M")]
    events, dropped = [], 0
    try:  # usually one coercion ("ts": "12" -> 12.0) fixes every event at once
        events = msgspec.convert(wanted, list[AnyEvent], strict=False)
    except (msgspec.ValidationError, TypeError):
        for ev in wanted:
            try:
                events.append(msgspec.convert(ev, AnyEvent, strict=False))
            except (msgspec.ValidationError, TypeError):
                dropped += 1
    if dropped:
        warn(f"{path}: {dropped} events dropped (fields of the wrong type, e.g. {first_error})")
    elif not nonstandard:
        warn(f"{path}: some fields have unexpected types (first: {first_error}); read "
             "leniently")
    header = {}
    for key in ("distributedInfo", "deviceProperties", "baseTimeNanoseconds", "host_name"):
        try:
            one = msgspec.convert({key: generic.get(key)}, Trace, strict=False)
            header[key] = getattr(one, key)
        except msgspec.ValidationError:
            warn(f"{path}: ignored malformed {key!r}")
    return Trace(traceEvents=events, **header)


def _with_raw_args(ev: dict) -> dict:
    """The args :class:`Args` keeps as raw JSON, turned back into raw JSON."""
    args = ev.get("args")
    if isinstance(args, dict) and any(k in args for k in _RAW_ARGS):
        args = {k: msgspec.Raw(msgspec.json.encode(v)) if k in _RAW_ARGS else v
                for k, v in args.items()}
        ev = {**ev, "args": args}
    return ev


