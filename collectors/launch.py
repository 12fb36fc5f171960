"""The parent side of ``tracekit profile``: run the user's command, unchanged, with the
collector injected, then finish the run folder. No torch here.

::

    run_profiled(["torchrun", "--nproc_per_node", "2", "train.py"],
                 CollectorConfig(run_dir="/abs/runs/mlp"))
      1. locks the run folder (collectors.run_lock: refuses one another profile holds,
         or one it cannot write) and prepares it (refuses one that already holds a run)
      2. starts the command in its own process group with PYTHONPATH=<collectors/
         sitecustomize>:$PYTHONPATH and the TRACEKIT_* variables (collectors.config)
      3. forwards Ctrl-C / SIGTERM to that process group (a second Ctrl-C sends SIGTERM,
         a third SIGKILL) and waits for the command
      4. merges the ranks' parts into manifest.json with the command and its exit code,
         then unlocks the folder
      -> ProfileOutcome(exit_code=<the command's>, manifest=..., ...)

The exit code is the command's (``128 + N`` when a signal N killed it), whatever the
collector did; a run folder that could not be finished (it became unwritable, the disk
filled up) is reported in ``ProfileOutcome.error``, still with the command's exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.config import ENV_OWNER_PID, ENV_SITE_DIR, CollectorConfig
from collectors.run_folder import (
    LOCK_NAME,
    MANIFEST_NAME,
    NCCL_DIR,
    PARTS_DIR,
    build_manifest,
    merge_manifest,
    read_parts,
)
from collectors.run_lock import RunFolderLock, refuse_if_held
from tracekit.core.atomic import describe_os_error, write_error
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)


def site_dir() -> Path:
    """The folder holding the injected ``sitecustomize.py``."""
    return Path(__file__).resolve().parent / "sitecustomize"


@dataclass(frozen=True, kw_only=True)
class ProfileOutcome:
    """What ``tracekit profile`` did."""

    run_dir: Path
    #: the command's exit code (128 + N when killed by signal N)
    exit_code: int
    #: the manifest written (a dict in the format of tracekit.core.manifest)
    manifest: dict[str, Any]
    #: number of SIGINT / SIGTERM received and forwarded to the command
    interrupts: int = 0
    errors: list[str] = field(default_factory=list)
    #: why the run folder could not be finished (one line), or None
    error: str | None = None

    @property
    def traces(self) -> list[str]:
        return [r["trace"] for r in self.manifest.get("ranks", []) if r.get("trace")]


def _holds_a_run(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).exists() or (folder / PARTS_DIR).exists() or any(
        p.is_file() for p in folder.glob("rank*.trace.json.gz")
    )


def make_run_dir(out: str | Path) -> Path:
    """Create the run folder (and its parents); returns its absolute path."""
    folder = Path(out).resolve()
    if folder.exists() and not folder.is_dir():
        raise TracekitError("exists and is not a folder; pick another --out", path=str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason, _ = describe_os_error(exc)
        raise TracekitError(f"cannot create the run folder ({reason}); choose another --out",
                            path=str(folder)) from None
    return folder


def check_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: a ``TracekitError`` when that fails."""
    probe = folder / f".tracekit-probe.{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"x")
        os.unlink(probe)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        raise write_error(folder, exc, what="the run folder", fix="choose another --out") from None


def prepare_run_dir(out: str | Path, *, overwrite: bool = False,
                    lock: RunFolderLock | None = None) -> Path:
    """Create the run folder; refuse one that already holds a run unless ``overwrite``
    (which removes only what ``tracekit profile`` writes there), and never touch one
    that another profile holds (``lock``: the caller's own lock on it, if any)."""
    folder = make_run_dir(out)
    if lock is None:
        refuse_if_held(folder)
    if _holds_a_run(folder):
        if not overwrite:
            raise TracekitError(
                "already holds a recorded run; pass a new --out, or --overwrite to replace it",
                path=str(folder),
            )
        for p in folder.glob("rank*.trace.json.gz"):
            if p.is_file():
                p.unlink()
        for name in (MANIFEST_NAME, LOCK_NAME):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        for name in (PARTS_DIR, NCCL_DIR):
            shutil.rmtree(folder / name, ignore_errors=True)
    return folder


def child_env(config: CollectorConfig, base: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: ``base`` plus the collector's variables, with the
    injected ``sitecustomize`` first on ``PYTHONPATH``."""
    env = dict(base)
    env.pop(ENV_OWNER_PID, None)
    env.update(config.to_env())
    site = str(site_dir())
    env[ENV_SITE_DIR] = site
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != site]
    env["PYTHONPATH"] = os.pathsep.join([site, *rest])
    return env


def exit_code_of(returncode: int) -> int:
    """Popen's returncode -> a shell exit code (-N, killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class _Forwarder:
    """Forwards SIGINT / SIGTERM to the command's process group while it runs."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.count = 0
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _Forwarder:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: cannot handle
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        send = signum if self.count == 1 else signal.SIGTERM if self.count == 2 else signal.SIGKILL
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, send)

    def reap_stragglers(self, grace_s: float = 5.0) -> None:
        """After an interrupted command exits, stop what is left of its process group."""
        deadline = time.monotonic() + grace_s
        sent_term = False
        while True:
            try:
                os.killpg(self.pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            if not sent_term:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pgid, signal.SIGTERM)
                sent_term = True
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pgid, signal.SIGKILL)
                return
            time.sleep(0.1)


def tidy_run_dir(run_dir: Path) -> None:
    """Remove the merge's scaffolding once every rank is gone: the rank parts (all of it
    is in manifest.json now) and the lock file."""
    shutil.rmtree(run_dir / PARTS_DIR, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / LOCK_NAME).unlink()


def _own_process_group() -> dict[str, Any]:
    """Popen arguments that start the child in a new process group (so signals can be
    forwarded to it and everything it starts, and not to us)."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # pragma: no cover - Python 3.10


def run_profiled(
    command: Sequence[str],
    config: CollectorConfig,
    *,
    overwrite: bool = False,
    env: Mapping[str, str] | None = None,
) -> ProfileOutcome:
    """Run ``command`` under the collector; see the module docstring."""
    if not command:
        raise TracekitError("no command to profile; put it after '--', e.g. "
                            "tracekit profile -- torchrun --nproc_per_node 2 train.py")
    folder = make_run_dir(config.run_dir)
    with RunFolderLock(folder, command) as lock:
        check_writable(folder)
        run_dir = prepare_run_dir(folder, overwrite=overwrite, lock=lock)
        config = dataclasses.replace(config, run_dir=str(run_dir))
        environ = child_env(config, os.environ if env is None else env)
        code, interrupts = _run_command(command, environ, lock)
        return _finish(run_dir, command, code, interrupts)


def _run_command(command: Sequence[str], environ: Mapping[str, str],
                 lock: RunFolderLock) -> tuple[int, int]:
    """Start ``command`` (it inherits the folder's lock), forward signals to it, wait;
    returns (its exit code, the number of signals forwarded)."""
    log.info("profiling %s into %s", " ".join(command), lock.folder)
    try:
        proc = subprocess.Popen(list(command), env=dict(environ), pass_fds=(lock.fd,),
                                **_own_process_group())
    except FileNotFoundError:
        raise TracekitError(f"command not found: {command[0]!r}; check the command after "
                            "'--' (is it on PATH, or in your virtual environment?)") from None
    except PermissionError:
        raise TracekitError(f"cannot execute {command[0]!r} (permission denied)") from None
    forwarder = _Forwarder(proc.pid)
    with forwarder:
        returncode = proc.wait()
    if forwarder.count:
        forwarder.reap_stragglers()
    return exit_code_of(returncode), forwarder.count


def _finish(run_dir: Path, command: Sequence[str], code: int,
            interrupts: int) -> ProfileOutcome:
    """Merge the manifest and tidy the folder. A folder that cannot be written any more
    is ``ProfileOutcome.error``, never an exception: the exit code stays the command's."""
    errors = []
    if interrupts:
        errors.append(f"interrupted: {interrupts} signal(s) forwarded to the command, "
                      f"which exited with code {code}")
    error = None
    try:
        manifest = merge_manifest(run_dir, command=list(command), exit_code=code, errors=errors)
        tidy_run_dir(run_dir)
    except (OSError, TracekitError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__context__
        reason = describe_os_error(cause)[0] if isinstance(cause, OSError) else str(exc)
        error = str(TracekitError(
            f"cannot finish the run folder ({reason}) after the command exited with {code}; "
            "make the folder writable, with free space, and profile again", path=str(run_dir)))
        manifest = _unwritten_manifest(run_dir, command, code, errors)
    return ProfileOutcome(run_dir=run_dir, exit_code=code, manifest=manifest,
                          interrupts=interrupts, errors=list(manifest.get("errors", [])),
                          error=error)


def _unwritten_manifest(run_dir: Path, command: Sequence[str], code: int,
                        errors: list[str]) -> dict[str, Any]:
    """The manifest that could not be written, from whatever parts can still be read."""
    parts: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, ValueError):
        parts = read_parts(run_dir)[0]
    return build_manifest(parts, run_dir, command=list(command), exit_code=code, errors=errors)
