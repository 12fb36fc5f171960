"""One ``tracekit profile`` at a time per run folder.

``tracekit profile`` holds an exclusive ``fcntl.flock`` on ``<run>/.profile.lock`` from
before it prepares the folder until the run folder is finished. The file records who
holds it, so a second profile into the same folder is refused with a message naming
the holder, before it launches anything or removes anything (``--overwrite`` included)::

    {"pid": 4242, "host": "vm", "started": "2026-12-01T08:30:00+00:00",
     "command": "torchrun --nproc_per_node 2 train.py"}

The lock belongs to the open file, not to the process: the profiled command inherits
the descriptor, so the folder stays locked while the job runs even if ``tracekit
profile`` itself is killed; the kernel drops the lock when the last holder exits, so a
crash never leaves a stale lock. No torch here.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tracekit.core.atomic import write_error
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)

PROFILE_LOCK_NAME = ".profile.lock"


def _read_holder(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8", errors="replace") or "{}")
        if isinstance(doc, dict):
            return doc
    return {}


def describe_holder(holder: dict[str, Any]) -> str:
    """``tracekit profile pid 4242 on vm (started ..., running: torchrun ...)``."""
    if not holder.get("pid"):
        return "another tracekit profile"
    text = f"tracekit profile pid {holder['pid']} on {holder.get('host') or '?'}"
    extra = [f"started {holder['started']}"] if holder.get("started") else []
    if holder.get("command"):
        cmd = str(holder["command"])
        extra.append("running: " + (cmd if len(cmd) <= 80 else cmd[:77] + "..."))
    return text + (f" ({', '.join(extra)})" if extra else "")


def _in_use(folder: Path, holder: dict[str, Any]) -> TracekitError:
    return TracekitError(
        f"is in use by {describe_holder(holder)}; wait for it to finish, or choose "
        "another --out", path=str(folder))


class RunFolderLock:
    """The exclusive lock of one run folder (see the module docstring)."""

    def __init__(self, folder: str | Path, command: Sequence[str] = ()) -> None:
        self.folder = Path(folder)
        self.path = self.folder / PROFILE_LOCK_NAME
        self.command = " ".join(command)
        self.fd: int | None = None

    def acquire(self) -> RunFolderLock:
        """Take the lock without waiting; a ``TracekitError`` when another profile holds
        it or the folder cannot be written."""
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise write_error(self.folder, exc, what="the run folder",
                                  fix="choose another --out") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise _in_use(self.folder, holder) from None
            except OSError as exc:  # a file system without locks (ENOLCK): go on unlocked
                log.warning("%s: cannot lock the run folder (%s); a second tracekit profile "
                            "into it would not be refused", self.folder, exc.strerror)
            if self._still_at_path(fd):
                self.fd = fd
                self._record()
                return self
            os.close(fd)  # its holder removed the file as we opened it: take the new one
        raise _in_use(self.folder, {})

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def _record(self) -> None:
        doc = {"pid": os.getpid(), "host": socket.gethostname(),
               "started": datetime.datetime.now(datetime.timezone.utc)
               .isoformat(timespec="seconds"), "command": self.command}
        data = (json.dumps(doc) + "\n").encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError as exc:
            self.release()
            raise write_error(self.folder, exc, what="the run folder",
                              fix="choose another --out") from None

    def release(self) -> None:
        """Remove the lock file (when it is still ours) and drop the lock. Never raises:
        a folder that became unwritable keeps the file, which is harmless."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if self._still_at_path(fd):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder_of(folder: str | Path) -> dict[str, Any] | None:
    """Who holds ``folder``'s lock (their record, possibly ``{}``), or None when nobody
    does. Never raises."""
    path = Path(folder) / PROFILE_LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def refuse_if_held(folder: str | Path) -> None:
    """A ``TracekitError`` naming the holder when another profile holds ``folder``."""
    holder = holder_of(folder)
    if holder is not None:
        raise _in_use(Path(folder), holder)
