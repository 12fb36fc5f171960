"""Writing a run folder: atomic files, rank parts, the merged manifest, the folder checks
of ``tracekit profile``, and exit codes. No torch needed."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import pytest

import collectors.run_folder as rf
from collectors.config import CollectorConfig
from collectors.launch import prepare_run_dir, run_profiled
from tracekit.cli import main
from tracekit.core import manifest as contract
from tracekit.errors import TracekitError


def _part(rank: int, *, steps=(10.0, 12.0, 11.0), unprofiled=(9.0, 10.0), trace=True,
          errors=(), model=None, world=2):
    return {
        "rank": rank, "world_size": world, "backend": "gloo", "host": f"h{rank}",
        "cpu_cores": 2 + rank, "pid": 100 + rank, "argv": ["python", "train.py"],
        "versions": {"torch": "2.13.0", "nccl": "", "python": "3.11.7"},
        "profiler": {"wait": 2, "warmup": 1, "active": 3, "record_shapes": True},
        "trace": rf.trace_file_name(rank) if trace else "", "nccl_log": "",
        "steps": [3, 4, 5], "step_times_ms": list(steps),
        "unprofiled_step_times_ms": list(unprofiled), "errors": list(errors), "model": model,
    }


MODEL = {
    "parameters": [
        {"index": 0, "name": "0.weight", "shape": [4, 4], "dtype": "float32", "bytes": 64,
         "module": "0", "requires_grad": True},
        {"index": 1, "name": "0.bias", "shape": [4], "dtype": "float32", "bytes": 16,
         "module": "0", "requires_grad": True},
    ],
    "ddp": {"bucket_cap_mb": 25.0, "first_bucket_mb": 1.0, "gradient_as_bucket_view": False,
            "static_graph": False, "buckets": [{"index": 0, "params": [1, 0], "bytes": 80}]},
    "forward_order": [{"module": "0", "params": [0, 1]}],
}


def test_contract_constants_match_tracekit():
    assert rf.SCHEMA_VERSION == contract.SCHEMA_VERSION
    assert rf.MANIFEST_NAME == contract.MANIFEST_NAME


def test_merged_manifest_follows_the_contract(tmp_path):
    for r in (0, 1):
        (tmp_path / rf.trace_file_name(r)).write_bytes(b"x")
        rf.write_part(tmp_path, r, _part(r, model=MODEL if r == 1 else None,
                                         steps=(10.0 + r, 12.0, 11.0)))
    doc = rf.merge_manifest(tmp_path, command=["torchrun", "train.py"], exit_code=0)
    m = contract.read_manifest(tmp_path)  # tracekit's own reader accepts it
    assert m.world_size == 2 and m.backend == "gloo"
    assert m.trace_files == {0: "rank0.trace.json.gz", 1: "rank1.trace.json.gz"}
    assert m.step_times_ms[1] == [11.0, 12.0, 11.0]
    assert [p.name for p in m.parameters] == ["0.weight", "0.bias"]
    assert m.ddp_buckets == [[1, 0]] and m.forward_order == [("0", [0, 1])]
    assert doc["command"] == ["torchrun", "train.py"] and doc["exit_code"] == 0
    assert doc["hosts"] == ["h0", "h1"]
    assert m.hosts == {0: "h0", 1: "h1"} and m.cpu_cores == {0: 2, 1: 3}
    assert doc["ranks"][0]["unprofiled_step_ms"] == 9.5
    ov = doc["overhead"]
    assert ov["profiled_step_ms"] == 11.0 and ov["unprofiled_step_ms"] == 9.5
    assert ov["ratio"] == pytest.approx(11.0 / 9.5, rel=1e-3)
    assert doc["errors"] == []


def test_merge_reports_missing_ranks_traces_and_rank_errors(tmp_path):
    rf.write_part(tmp_path, 0, _part(0, errors=["could not write the trace (disk full)"],
                                     world=3))
    (tmp_path / rf.PARTS_DIR / "rank5.json").write_text("{not json")
    doc = rf.merge_manifest(tmp_path)
    errs = "\n".join(doc["errors"])
    assert "rank 0: could not write the trace (disk full)" in errs
    assert "rank 0: trace rank0.trace.json.gz is missing" in errs
    assert "ranks [1, 2] of 3 reported nothing" in errs
    assert "unreadable rank part rank5.json" in errs
    assert doc["ranks"][0]["trace"] == ""
    assert doc["command"] == ["python", "train.py"]  # from the part when not given
    assert contract.read_manifest(tmp_path).trace_files == {}


def test_merge_keeps_the_command_of_an_earlier_merge(tmp_path):
    rf.write_part(tmp_path, 0, _part(0, trace=False))
    rf.merge_manifest(tmp_path, command=["a", "b"], exit_code=3)
    doc = rf.merge_manifest(tmp_path)
    assert doc["command"] == ["a", "b"] and doc["exit_code"] == 3


def _write_and_merge(args):
    run_dir, rank = args
    rf.write_part(run_dir, rank, _part(rank, trace=False, world=8))
    rf.merge_manifest(run_dir)


def test_concurrent_merges_end_with_every_rank(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        pool.map(_write_and_merge, [(str(tmp_path), r) for r in range(8)])
    doc = json.loads((tmp_path / rf.MANIFEST_NAME).read_text())
    assert [r["rank"] for r in doc["ranks"]] == list(range(8))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_prepare_run_dir_refuses_a_recorded_run(tmp_path):
    run = tmp_path / "run"
    assert prepare_run_dir(run) == run.resolve()
    (run / "notes.txt").write_text("mine")
    prepare_run_dir(run)  # a folder without a run is fine
    (run / rf.MANIFEST_NAME).write_text("{}")
    (run / "rank0.trace.json.gz").write_bytes(b"x")
    with pytest.raises(TracekitError, match="already holds a recorded run"):
        prepare_run_dir(run)
    prepare_run_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    with pytest.raises(TracekitError, match="not a folder"):
        prepare_run_dir(run / "notes.txt")


def test_profile_passes_the_exit_code_through(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["profile", "--out", str(out), "--", sys.executable, "-c",
                 "import sys; print('job output'); sys.exit(3)"])
    assert code == 3
    doc = json.loads((out / rf.MANIFEST_NAME).read_text())
    assert doc["exit_code"] == 3 and doc["ranks"] == []
    assert any("no rank reported" in e for e in doc["errors"])
    assert not (out / rf.PARTS_DIR).exists() and not (out / rf.LOCK_NAME).exists()
    assert "command exited with 3" in capsys.readouterr().err


def test_profile_of_a_missing_command_is_a_user_error(tmp_path, capsys):
    code = main(["profile", "--out", str(tmp_path / "r"), "--", "no-such-command-xyz"])
    assert code == 2
    assert "command not found" in capsys.readouterr().err
    with pytest.raises(TracekitError, match="no command"):
        run_profiled([], CollectorConfig(run_dir=str(tmp_path / "r2")))


def test_profile_refuses_to_overwrite_without_asking(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["profile", "--out", str(out), "--", "true"]) == 0
    assert main(["profile", "--out", str(out), "--", "true"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["profile", "--overwrite", "--out", str(out), "--", "true"]) == 0
    assert os.path.isfile(out / rf.MANIFEST_NAME)
