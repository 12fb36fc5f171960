"""Atomic file writes: every file tracekit writes goes through here.

A file is written to a temporary file beside its destination (same folder, so the same
file system), flushed and fsync'ed, then renamed over the destination. A reader, or a
user after a crash, sees the old file or the complete new one, never half of one: a
SIGKILL or a full disk leaves nothing at the destination (an old file there stays
intact until the rename). On any error the temporary file is removed; an ``OSError``
becomes a :class:`~tracekit.errors.TracekitError` that names the path and the fix::

    atomic_write("mlp.html", page, what="the HTML file", fix="choose another path with -o")
    atomic_write_json("runs/mlp/manifest.json", doc)
    with atomic_output("mlp.graphml", what="GraphML") as fh:   # streamed writes
        nx.write_graphml(G, fh)

Temporary files are named ``.<name>.<pid>-<host>.<random>.tmp``. One left behind by a
killed process (a SIGKILL runs no cleanup) is removed by the next write of the same
destination on the same host once that pid is gone. Standard library only: the collectors write the
run folder through this module inside every rank.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tracekit.errors import TracekitError

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "the path is a folder",
}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def describe_os_error(exc: OSError) -> tuple[str, str]:
    """(what went wrong, how to fix it) for an ``OSError`` from writing a file."""
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    if exc.errno in _FULL:
        return reason, "free some disk space (or raise the file size limit), or write elsewhere"
    if exc.errno in _DENIED:
        return reason, "make the folder writable, or write elsewhere"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return reason, "create the folder first, or write elsewhere"
    return reason, "check the path, or write elsewhere"


def write_error(path: str | Path, exc: OSError, *, what: str = "the file",
                fix: str = "") -> TracekitError:
    """The one-line error for a failed write of ``what`` at ``path``."""
    reason, generic = describe_os_error(exc)
    if fix and exc.errno in _FULL:
        fix = f"free some disk space, or {fix}"
    return TracekitError(f"cannot write {what} ({reason}); {fix or generic}", path=str(path))


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def _host_tag() -> str:
    import socket  # only when a file is written: reading commands never load it

    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by processes that are gone (killed
    while writing); returns what was removed. Never raises."""
    path = Path(path)
    removed = []
    prefix = _tmp_prefix(path)
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    host = _host_tag()
    for name in names:
        pid_part, _, host_part = name[len(prefix):].split(".")[0].partition("-")
        if host_part != host or not pid_part.isdigit() or _pid_alive(int(pid_part)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path.parent / name)
            removed.append(path.parent / name)
    return removed


def _open_temp(path: Path) -> tuple[Path, int]:
    """Create the temporary file beside ``path`` (exclusively); returns (name, fd). Its
    mode is the destination's when that exists, else the usual (0666 less the umask)."""
    tmp = path.with_name(f"{_tmp_prefix(path)}{os.getpid()}-{_host_tag()}."
                         f"{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
    except BaseException:
        os.close(fd)
        raise
    return tmp, fd


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every system can)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path, *, what: str = "the file", fix: str = "",
                  parents: bool = False, text: bool = False,
                  encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing beside ``path``; when the block ends without
    an exception it is fsync'ed and renamed over ``path``. On any exception (a full
    disk, Ctrl-C, a bug in the writer) the temporary file is removed and ``path`` is
    left as it was; an ``OSError`` is raised as a ``TracekitError`` naming ``path``
    and ``fix``. ``parents`` creates the destination's folder first; ``text`` opens
    the file in text mode."""
    path = Path(path)
    tmp: Path | None = None
    try:
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp, fd = _open_temp(path)
        mode = "w" if text else "wb"
        with os.fdopen(fd, mode, encoding=encoding if text else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as exc:
        raise write_error(path, exc, what=what, fix=fix) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str | Path, data: bytes | str, *, what: str = "the file",
                 fix: str = "", parents: bool = False) -> int:
    """Write ``data`` (``str`` is encoded as UTF-8) to ``path`` atomically; returns the
    number of bytes written. See :func:`atomic_output`."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_output(path, what=what, fix=fix, parents=parents) as fh:
        fh.write(raw)
    return len(raw)


def atomic_write_json(path: str | Path, doc: Any, *, indent: int | None = 1,
                      what: str = "the file", fix: str = "", parents: bool = False) -> int:
    """Write ``doc`` as JSON (plus a final newline) to ``path`` atomically."""
    return atomic_write(path, json.dumps(doc, indent=indent) + "\n", what=what, fix=fix,
                        parents=parents)


__all__ = ["atomic_output", "atomic_write", "atomic_write_json", "describe_os_error",
           "remove_stale_temps", "write_error"]
