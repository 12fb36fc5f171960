"""Every file the CLI writes is written atomically (tracekit.core.atomic): a full disk
exits 2 with one ``error:`` line and leaves no partial file; a SIGKILL at any moment
leaves the destination absent or complete and parseable."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import pytest
from fs_faults import file_size_limit

from collectors import run_folder as rf
from replay.calibration import write_comm_model
from tracekit.cli import main
from tracekit.core.run import load_run
from tracekit.errors import TracekitError
from tracekit.views.perfetto import write_chrome_trace

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "gloo_2rank"


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("args, name, limit", [
    (["timeline", str(DATA), "--measured-only"], "t.html", 1 << 20),
    (["report", str(DATA), "--measured-only"], "r.html", 1 << 20),
    (["graph", str(DATA), "--export"], "g.graphml", 64 << 10),
], ids=["timeline", "report", "graph-export"])
def test_a_full_disk_exits_2_and_leaves_no_partial_file(tmp_path, capsys, args, name, limit):
    out = tmp_path / name
    argv = [*args, str(out)] if args[-1] == "--export" else [*args, "-o", str(out)]
    with file_size_limit(limit):
        code = main(argv)
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "file size limit exceeded" in line and "free some disk" in line
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_in_a_subprocess(tmp_path):
    """The measured case: ``ulimit -f`` around the real command."""
    out = tmp_path / "g.graphml"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = subprocess.run([sys.executable, "-m", "tracekit", "graph", str(DATA), "--export",
                           str(out)], capture_output=True, text=True, preexec_fn=limit,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert str(out) in _one_error_line(proc.stderr)
    assert list(tmp_path.iterdir()) == []


def test_the_library_writers_leave_no_partial_file_on_a_full_disk(tmp_path):
    run = load_run(DATA)
    with file_size_limit(16 << 10):
        with pytest.raises(TracekitError, match="cannot write the trace"):
            write_chrome_trace(run.events, tmp_path / "p.json")
        with pytest.raises(TracekitError, match="cannot write the cost model"):
            write_comm_model({"format": "x", "pad": "x" * (64 << 10)}, tmp_path / "comm.json")
        (tmp_path / rf.PARTS_DIR).mkdir()
        with pytest.raises(TracekitError, match="cannot write this rank's part"):
            rf.write_part(tmp_path, 0, {"rank": 0, "pad": "x" * (64 << 10)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [rf.PARTS_DIR]
    assert list((tmp_path / rf.PARTS_DIR).iterdir()) == []


def _temps(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]


def _kill_while_writing(argv: list[str], out: Path, delay_s: float) -> None:
    """Start the CLI, wait until its temporary file appears (the write has begun), wait
    ``delay_s`` more, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-m", "tracekit", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        while proc.poll() is None and not _temps(out.parent, out.name):
            time.sleep(0.001)
        time.sleep(delay_s)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _check_html(path: Path) -> None:
    assert path.read_bytes().rstrip().endswith(b"</body></html>")


# the write (temporary file created -> renamed) took ~0.4 s for the GraphML and ~40 ms
# for the 5 MB page on the 2-core machine: kills land before, during and after it
@pytest.mark.parametrize("args, name, kills, max_delay_s, check", [
    (["graph", str(DATA), "--export"], "g.graphml", 6, 0.6, nx.read_graphml),
    (["timeline", str(DATA), "--measured-only", "-o"], "t.html", 4, 0.06, _check_html),
], ids=["graph-export", "timeline"])
def test_sigkill_during_the_write_leaves_nothing_or_a_complete_file(
        tmp_path, args, name, kills, max_delay_s, check):
    rng = random.Random(name)
    out = tmp_path / name
    for _ in range(kills):
        if out.exists():
            out.unlink()
        _kill_while_writing([*args, str(out)], out, rng.uniform(0.0, max_delay_s))
        if out.exists():
            check(out)  # complete and parseable
        assert [p.name for p in tmp_path.iterdir() if p != out] == [
            p.name for p in _temps(tmp_path, name)]  # a killed writer's temporary at most
    assert main([*args, str(out)]) == 0  # the next run writes it, and sweeps the rest
    check(out)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_the_manifest_is_written_atomically(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"old": True}))
    rf.write_part(tmp_path, 0, {"rank": 0, "world_size": 1})
    with file_size_limit(256):
        with pytest.raises(TracekitError, match="cannot write manifest.json"):
            rf.merge_manifest(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"old": True}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
