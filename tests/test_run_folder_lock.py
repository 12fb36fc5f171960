"""One ``tracekit profile`` at a time per run folder (collectors.run_lock), unwritable
run folders, and the job's exit code passing through whatever happens to the folder.

Unwritable folders: the tests run as root, where ``chmod`` does not stop writes, so
tests/fs_faults.py sets the immutable attribute (``chattr +i``, which stops root too)
and falls back to ``chmod 555`` for other users; the tests skip, saying why, where
neither works."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fs_faults import UNWRITABLE_SNIPPET, make_unwritable, make_writable

from collectors import run_folder as rf
from collectors import run_lock
from collectors.launch import prepare_run_dir
from collectors.run_lock import PROFILE_LOCK_NAME, RunFolderLock, holder_of
from tracekit.cli import main
from tracekit.errors import TracekitError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, "the helper process exited early"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def held(tmp_path):
    """A run folder whose lock another process holds; yields (folder, holder pid)."""
    out = tmp_path / "run"
    ready = tmp_path / "locked"
    script = textwrap.dedent(f"""
        import time
        from collectors.run_lock import RunFolderLock
        lock = RunFolderLock({str(out)!r}, ["train.py"])
        import os; os.makedirs({str(out)!r}, exist_ok=True)
        lock.acquire()
        open({str(ready)!r}, "w").close()
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV)
    try:
        _wait_for(ready, proc)
        yield out, proc.pid
    finally:
        proc.kill()
        proc.wait()


def _profile_cmd(marker: Path) -> list[str]:
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]


def test_a_held_folder_is_refused_before_anything_starts(held, tmp_path, capsys):
    out, pid = held
    marker = tmp_path / "launched"
    assert main(["profile", "--out", str(out), "--", *_profile_cmd(marker)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"tracekit profile pid {pid} on {socket.gethostname()}" in line
    assert "running: train.py" in line and "choose another --out" in line
    assert not marker.exists()


def test_overwrite_never_removes_a_folder_another_profile_holds(held, tmp_path, capsys):
    out, pid = held
    (out / rf.MANIFEST_NAME).write_text("{}")
    (out / "rank0.trace.json.gz").write_bytes(b"trace")
    marker = tmp_path / "launched"
    assert main(["profile", "--out", str(out), "--overwrite", "--", *_profile_cmd(marker)]) == 2
    assert f"pid {pid}" in _one_error_line(capsys.readouterr().err)
    assert not marker.exists()
    assert (out / rf.MANIFEST_NAME).read_text() == "{}"
    assert (out / "rank0.trace.json.gz").read_bytes() == b"trace"
    with pytest.raises(TracekitError, match=f"in use by tracekit profile pid {pid}"):
        prepare_run_dir(out, overwrite=True)
    assert (out / "rank0.trace.json.gz").exists()


def test_two_real_profiles_into_one_folder(tmp_path, capsys):
    """The measured case: both used to exit 0 and leave a mixed-up folder."""
    out, started, stop = tmp_path / "run", tmp_path / "started", tmp_path / "stop"
    job = (f"import os, time\nopen({str(started)!r}, 'w').close()\n"
           f"while not os.path.exists({str(stop)!r}): time.sleep(0.02)\n")
    first = subprocess.Popen([sys.executable, "-m", "tracekit", "profile", "--out", str(out),
                              "--", sys.executable, "-c", job], env=ENV,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(started, first)
        marker = tmp_path / "second-launched"
        assert main(["profile", "--out", str(out), "--", *_profile_cmd(marker)]) == 2
        assert f"tracekit profile pid {first.pid} on" in _one_error_line(capsys.readouterr().err)
        assert not marker.exists()
    finally:
        stop.touch()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    doc = json.loads((out / rf.MANIFEST_NAME).read_text())
    assert doc["command"][-1] == job
    assert not (out / PROFILE_LOCK_NAME).exists()  # released and removed
    assert holder_of(out) is None
    assert main(["profile", "--out", str(out), "--overwrite", "--", *_profile_cmd(marker)]) == 0
    assert marker.exists()


def test_the_job_holds_the_lock_too(tmp_path):
    """The profiled command inherits the lock: the folder stays locked for the whole
    job, even if ``tracekit profile`` itself were killed."""
    out, seen = tmp_path / "run", tmp_path / "seen.json"
    job = ("import json, sys\nfrom collectors.run_lock import holder_of\n"
           f"json.dump(holder_of({str(out)!r}), open({str(seen)!r}, 'w'))\n")
    assert main(["profile", "--out", str(out), "--", sys.executable, "-c", job]) == 0
    holder = json.loads(seen.read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()


def test_the_lock_file_records_its_holder(tmp_path):
    with RunFolderLock(tmp_path, ["torchrun", "train.py"]):
        holder = holder_of(tmp_path)
        assert holder["pid"] == os.getpid() and holder["command"] == "torchrun train.py"
        with pytest.raises(TracekitError, match="in use by tracekit profile"):
            RunFolderLock(tmp_path).acquire()
    assert holder_of(tmp_path) is None and not (tmp_path / PROFILE_LOCK_NAME).exists()
    RunFolderLock(tmp_path).acquire().release()  # free again


def test_an_unwritable_folder_is_refused_before_launch(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "launched"
    make_unwritable(out)
    try:
        assert main(["profile", "--out", str(out), "--", *_profile_cmd(marker)]) == 2
    finally:
        make_writable(out)
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "cannot write the run folder" in line
    assert not marker.exists()


def test_a_file_in_the_way_is_refused_before_launch(tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    marker = tmp_path / "launched"
    out = tmp_path / "run" / "sub"
    assert main(["profile", "--out", str(out), "--", *_profile_cmd(marker)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot create the run folder" in line and "choose another --out" in line
    assert not marker.exists()


@pytest.mark.parametrize("code", [0, 3])
def test_a_folder_that_becomes_unwritable_mid_run_keeps_the_exit_code(tmp_path, capsys, code):
    out = tmp_path / "run"
    out.mkdir()
    make_unwritable(out)  # skips where the folder cannot be made unwritable
    make_writable(out)
    job = UNWRITABLE_SNIPPET + f"make_unwritable({str(out)!r})\nsys.exit({code})\n"
    try:
        assert main(["profile", "--out", str(out), "--", sys.executable, "-c", job]) == code
    finally:
        make_writable(out)
    err = capsys.readouterr().err
    line = _one_error_line(err)
    assert str(out) in line and "cannot finish the run folder" in line
    assert f"after the command exited with {code}" in line and "make the folder writable" in line
    assert f"command exited with {code}" in err  # the summary still says what happened


def test_a_file_system_without_locks_profiles_unlocked_with_a_warning(tmp_path, monkeypatch,
                                                                      caplog):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="tracekit"):
        lock = RunFolderLock(tmp_path).acquire()
    assert "cannot lock the run folder (No locks available)" in caplog.text
    assert json.loads((tmp_path / PROFILE_LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / PROFILE_LOCK_NAME).exists()
