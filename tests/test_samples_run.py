"""The recorded run checked into samples/runs/mlp_gloo_2rank (re-record it with
samples/record_sample_run.sh) is complete and readable without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tracekit
from tracekit.core.manifest import read_manifest

RUN = Path(__file__).resolve().parents[1] / "samples" / "runs" / "mlp_gloo_2rank"


def test_sample_run_is_small_and_complete():
    files = sorted(p.name for p in RUN.iterdir())
    assert files == ["manifest.json", "rank0.trace.json.gz", "rank1.trace.json.gz"]
    assert sum(p.stat().st_size for p in RUN.iterdir()) < 3 * 2**20
    m = read_manifest(RUN)
    assert m.world_size == 2 and m.backend == "gloo"
    assert m.trace_files == {0: "rank0.trace.json.gz", 1: "rank1.trace.json.gz"}
    assert m.raw["errors"] == [] and m.raw["exit_code"] == 0
    assert m.raw["profiler"]["active"] == len(m.step_times_ms[0]) == len(m.step_times_ms[1])


def test_sample_run_model_metadata():
    m = read_manifest(RUN)
    assert len(m.parameters) == 32  # 16 x Linear(512, 512): weight + bias
    assert {p.bytes for p in m.parameters} == {512 * 512 * 4, 512 * 4}
    # DDP's default buckets: a 1 MB first bucket (the last layer), then the 25 MB cap
    assert m.bucket_cap_mb == 25.0 and m.first_bucket_mb == 1.0
    assert m.ddp_buckets == [[31, 30], list(range(29, -1, -1))]
    assert [mod for mod, _ in m.forward_order] == [str(2 * i) for i in range(16)]


def test_sample_run_loads_without_torch():
    code = (
        "import sys, tracekit\n"
        f"run = tracekit.load_run({str(RUN)!r})\n"
        "assert 'torch' not in sys.modules\n"
        "print(run.ranks, run.steps())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    ranks, steps = proc.stdout.strip().split("] [")
    assert ranks == "[0, 1" and steps == "5, 6, 7, 8, 9]"


def test_sample_run_trace_content():
    run = tracekit.load_run(RUN)
    ev = run.events
    m = json.loads((RUN / "manifest.json").read_text())
    assert run.steps() == m["ranks"][0]["steps"]
    names = ev["name"].astype(str)
    for rank in (0, 1):
        mine = ev[(ev["rank"] == rank) & (ev["step"] >= 0)]
        n = names[mine.index]
        assert (n.str.startswith("tracekit.fwd:")).sum() == 16 * len(run.steps())
        assert (n.str.startswith("tracekit.bwd:")).sum() == 16 * len(run.steps())
        comm = mine[mine["kind"] == "comm"]
        assert set(comm["collective"].astype(str)) == {"all_reduce"}
        assert sorted(set(comm["comm_bytes"])) == [1050624, 15759360]  # the two buckets
