"""Faults a file system can have, for tests: a full disk, and a folder that cannot be
written (also when the tests run as root, where ``chmod`` does not stop writes)."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """A full disk, in this process: writes past ``nbytes`` fail with EFBIG (Python
    ignores SIGXFSZ). Only the soft limit is lowered, so it can be restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def make_unwritable(folder: Path) -> None:
    """No file can be created in ``folder`` any more: ``chmod 555`` for a normal user;
    as root (whom modes do not stop) the immutable attribute (``chattr +i``), which
    stops root too. Skips the test where neither works (e.g. no chattr, or a file
    system without attributes). Undo with :func:`make_writable`."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
    else:
        chattr = shutil.which("chattr")
        if chattr is None:
            pytest.skip("running as root without chattr: cannot make a folder unwritable")
        proc = subprocess.run([chattr, "+i", str(folder)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"running as root and chattr +i failed ({proc.stderr.strip()}): "
                        "cannot make a folder unwritable")
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return
    probe.unlink()
    make_writable(folder)
    pytest.skip("could not make a folder unwritable on this file system")


def make_writable(folder: Path) -> None:
    """Undo :func:`make_unwritable` (never raises)."""
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    with contextlib.suppress(OSError):
        folder.chmod(0o755)


UNWRITABLE_SNIPPET = """
import os, shutil, subprocess, sys
def make_unwritable(folder):
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
    else:
        subprocess.run([shutil.which("chattr"), "+i", folder], check=True)
"""
