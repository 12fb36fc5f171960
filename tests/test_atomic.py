"""tracekit.core.atomic: a file is the old one or the complete new one, never half of one;
a SIGKILL or a full disk leaves nothing at the destination, and no temporary file
after a handled error."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fs_faults import file_size_limit

from tracekit.core import atomic
from tracekit.core.atomic import atomic_output, atomic_write, atomic_write_json
from tracekit.errors import TracekitError

REPO = Path(__file__).resolve().parents[1]


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_bytes_text_json_and_streams(tmp_path):
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01") == 2
    assert atomic_write(tmp_path / "b.txt", "héllo") == len("héllo".encode())
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2]})
    with atomic_output(tmp_path / "d.txt", text=True) as fh:
        fh.write("line 1\n")
        fh.write("line 2\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "d.txt").read_text() == "line 1\nline 2\n"
    assert _entries(tmp_path) == ["a.bin", "b.txt", "c.json", "d.txt"]


def test_creates_parents_only_when_asked(tmp_path):
    with pytest.raises(TracekitError, match="cannot write the page .*folder does not exist"):
        atomic_write(tmp_path / "no" / "x.html", "x", what="the page")
    atomic_write(tmp_path / "no" / "x.html", "x", parents=True)
    assert (tmp_path / "no" / "x.html").read_text() == "x"


def test_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "x"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(TracekitError, match="no space left.*free some disk space") as err:
        atomic_write_json(target, {"new": True}, what="manifest.json")
    assert str(target) in str(err.value)
    assert target.read_text() == "old"
    assert _entries(tmp_path) == ["manifest.json"]


def test_an_error_in_a_streamed_writer_leaves_nothing(tmp_path):
    target = tmp_path / "g.graphml"
    with pytest.raises(ZeroDivisionError):
        with atomic_output(target) as fh:
            fh.write(b"<graphml>")
            1 / 0  # noqa: B018
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("old", [None, b"old complete file"], ids=["new", "replace"])
def test_a_full_disk_leaves_no_partial_file(tmp_path, old):
    target = tmp_path / "report.html"
    if old is not None:
        target.write_bytes(old)
    with file_size_limit(256 * 1024):
        with pytest.raises(TracekitError) as err:
            atomic_write(target, b"x" * (1024 * 1024), what="the HTML file",
                         fix="choose another path with -o")
    msg = str(err.value)
    assert "\n" not in msg and str(target) in msg
    assert "file size limit exceeded" in msg and "free some disk space, or choose another" in msg
    assert _entries(tmp_path) == ([] if old is None else ["report.html"])
    if old is not None:
        assert target.read_bytes() == old


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "manifest.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = atomic._host_tag()
    stale = tmp_path / f".manifest.json.{dead}-{host}.0a1b2c3d.tmp"
    live = tmp_path / f".manifest.json.{os.getpid()}-{host}.deadbeef.tmp"
    other_host = tmp_path / f".manifest.json.{dead}-elsewhere.0a1b2c3d.tmp"
    for p in (stale, live, other_host):
        p.write_text("partial")
    atomic_write_json(target, {})
    assert not stale.exists()
    assert live.exists() and other_host.exists()  # a live writer, or another host's


_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from tracekit.core.atomic import atomic_output
    chunk = bytes(range(256)) * 1024   # 256 KB
    print("ready", flush=True)
    with atomic_output({target!r}) as fh:
        for i in range(40):
            fh.write(chunk)
            time.sleep(0.002)
""")
_FULL = bytes(range(256)) * 1024 * 40


def test_sigkill_at_any_moment_leaves_the_old_or_the_complete_file(tmp_path):
    """20 kills at random moments of a 10 MB streamed write: the destination is always
    the old file or the complete new one."""
    rng = random.Random(14)
    target = tmp_path / "big.bin"
    script = _WRITER.format(repo=str(REPO), target=str(target))
    seen = set()
    for i in range(20):
        old = f"old file {i}".encode()
        if i % 2:
            target.write_bytes(old)
        else:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if target.exists():
            data = target.read_bytes()
            assert data in (old, _FULL) if i % 2 else data == _FULL
            seen.add("old" if data == old else "new")
        else:
            assert i % 2 == 0
            seen.add("absent")
        leftovers = [n for n in _entries(tmp_path) if n != "big.bin"]
        assert all(n.startswith(".big.bin.") and n.endswith(".tmp") for n in leftovers)
    assert seen & {"old", "absent"}  # some kills did land mid-write
    atomic_write(target, b"done")  # the next write sweeps the killed writers' temporaries
    assert _entries(tmp_path) == ["big.bin"]
