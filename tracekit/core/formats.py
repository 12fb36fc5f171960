"""Recognize profiler outputs that are not Kineto traces, and say how to get one.

tracekit reads Kineto Chrome-trace JSON (what ``torch.profiler`` exports). Other tools'
files reach it too: a rocprofv3 JSON (``{"rocprofiler-sdk-tool": [...]}``), an rocpd
or Nsight Systems SQLite database, an Nsight Systems report (``.nsys-rep``), a Perfetto
protobuf trace (``.pftrace``), a JAX / TensorFlow XSpace (``.xplane.pb``). Each gets a
one-line :class:`~tracekit.errors.TracekitError` that names the format, the tool that
wrote it, and how to record a Kineto trace of the same job instead.

:func:`check_foreign` looks at the first bytes of a file (and, for SQLite, at its table
names): it costs nothing for a JSON file.

Example::

    >>> check_foreign(b"SQLite format 3\\x00...", Path("report.sqlite"))  # doctest: +SKIP
    TracekitError: report.sqlite: an Nsight Systems SQLite export (nsys export --type
    sqlite), not a Kineto trace; ...
"""

from __future__ import annotations

from pathlib import Path

from tracekit.errors import TracekitError

#: how to get a Kineto trace, the second half of every message
KINETO_HINT = ("record the job with torch.profiler and export_chrome_trace (or "
               "'tracekit profile -- <command>'), and pass that .json / .json.gz")
_ROCM_HINT = ("on ROCm, torch.profiler records HIP kernels too (ProfilerActivity.CUDA): "
              + KINETO_HINT)
_NSYS_HINT = ("Nsight Systems does not write Kineto traces: " + KINETO_HINT)

_SQLITE_MAGIC = b"SQLite format 3\x00"
#: names of files other tools write, by how the name ends
_BY_SUFFIX = {
    ".nsys-rep": ("an Nsight Systems report (.nsys-rep)", _NSYS_HINT),
    ".qdrep": ("an Nsight Systems report (.qdrep)", _NSYS_HINT),
    ".pftrace": ("a Perfetto protobuf trace (.pftrace)",
                 "tracekit reads Kineto JSON, not Perfetto protobuf: " + KINETO_HINT),
    ".perfetto-trace": ("a Perfetto protobuf trace",
                        "tracekit reads Kineto JSON, not Perfetto protobuf: " + KINETO_HINT),
    ".xplane.pb": ("a JAX / TensorFlow profiler XSpace (.xplane.pb)",
                   "tracekit reads PyTorch (Kineto) traces: " + KINETO_HINT),
    ".rpd": ("an rocprofiler / rpd_tracer SQLite database (.rpd)", _ROCM_HINT),
}


def _error(path: Path, what: str, hint: str) -> TracekitError:
    return TracekitError(f"{what}, not a Kineto trace; {hint}", path=str(path))


def _sqlite_kind(path: Path) -> tuple[str, str]:
    """Which tool wrote a SQLite file, from its table names."""
    import sqlite3  # only for a SQLite file: a JSON trace never loads it

    tables: set[str] = set()
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {r[0] for r in db.execute("select name from sqlite_master")}
    except sqlite3.Error:
        pass
    lowered = {t.lower() for t in tables}
    if any(t.startswith(("cupti_activity", "nvtx_", "target_info")) for t in lowered) or \
            "stringids" in lowered:
        return "an Nsight Systems SQLite export (nsys export --type sqlite)", _NSYS_HINT
    if any(t.startswith("rocpd") for t in lowered) or {"op", "api", "string"} <= lowered:
        return "an rocpd / rocprofv3 SQLite database (rocprofv3 --output-format rocpd)", \
            _ROCM_HINT
    return "a SQLite database", KINETO_HINT


def _looks_like_protobuf(head: bytes) -> bool:
    """A Perfetto trace starts with a TracePacket: field 1, length-delimited (0x0a)."""
    return len(head) > 2 and head[0] == 0x0A and not head[:64].isascii()


def check_foreign(head: bytes, path: Path) -> None:
    """Raise a one-line :class:`TracekitError` when ``head`` (the first bytes of the
    file's content, inflated if it was gzip) or the file's name shows another tool's
    format. Returns quietly for anything that may be Kineto JSON."""
    name = path.name.lower().removesuffix(".gz")
    for suffix, (what, hint) in _BY_SUFFIX.items():
        if name.endswith(suffix):
            raise _error(path, what, hint)
    if head.startswith(_SQLITE_MAGIC):
        what, hint = _sqlite_kind(path)
        raise _error(path, what, hint)
    text = head[:4096].lstrip()
    if text[:1] in (b"{", b"["):
        if b'"rocprofiler-sdk-tool"' in text[:256]:
            raise _error(path, "a rocprofv3 JSON trace (rocprofiler-sdk, rocprofv3 "
                               "--output-format json)", _ROCM_HINT)
        return
    if _looks_like_protobuf(head):
        raise _error(path, "a protobuf file (a Perfetto trace, or a JAX / TensorFlow "
                           "XSpace)", "tracekit reads Kineto JSON: " + KINETO_HINT)


def foreign_files_hint(folder: Path) -> str:
    """For a folder without trace files: which other tools' files it holds, if any."""
    found = []
    for p in sorted(folder.iterdir()):
        n = p.name.lower()
        if p.is_file() and (n.endswith(tuple(_BY_SUFFIX)) or n.endswith((".sqlite", ".db"))):
            found.append(p.name)
    if not found:
        return ""
    return (f"it holds {', '.join(found[:3])}, which tracekit does not read: "
            + KINETO_HINT)
