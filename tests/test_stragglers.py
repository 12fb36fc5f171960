"""Stragglers: a hand-made run where the answer is known, and a real run where one rank
is given six times the batch (on a loaded 2-core machine CPU sharing inflates the
fast rank's compute too: 3x was not always enough to stand out)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tracekit.analysis.breakdown import summarize
from tracekit.core.kineto import TraceMeta
from tracekit.core.run import Run
from tracekit.core.schema import events_from_rows

MS = 1_000_000
ROOT = Path(__file__).resolve().parents[1]


def _rank_rows(rank: int, extra_mm_ms: float) -> list[dict]:
    """Two steps of 10 ms (+ the extra): aten::linear 4 ms (with a nested addmm), then
    aten::mm 2 ms (+ extra), then c10d::barrier (waiting, not compute)."""
    rows = []
    for k, step in enumerate((1, 2)):
        t = k * 20 * MS
        span = int((10 + extra_mm_ms) * MS)

        def op(name, start, dur, kind="cpu_op", t=t, step=step):
            rows.append({"rank": rank, "lane_kind": "cpu", "lane": 7, "lane_name": "main",
                         "name": name, "kind": kind, "ts_ns": t + start, "dur_ns": dur,
                         "step": step})

        op(f"ProfilerStep#{step}", 0, span, kind="step")
        op("aten::linear", 0, 4 * MS)
        op("aten::addmm", MS, 2 * MS)  # nested: counted once, inside aten::linear
        op("aten::mm", 4 * MS, int((2 + extra_mm_ms) * MS))
        op("c10d::barrier", int((6 + extra_mm_ms) * MS), 3 * MS)
    return rows


def _run(extra: dict[int, float]) -> Run:
    rows = [r for rank, ms in extra.items() for r in _rank_rows(rank, ms)]
    traces = {rank: TraceMeta(path=f"rank{rank}.json", rank=rank, rank_source="filename",
                              world_size=len(extra), backend="gloo", steps=[1, 2])
              for rank in extra}
    return Run(path="synthetic", events=events_from_rows(rows), traces=traces,
               manifest=None, world_size=len(extra), backend="gloo")


def test_the_rank_with_more_work_is_named_with_the_op_behind_it():
    summary = summarize(_run({0: 0.0, 1: 3.0, 2: 0.2}))
    (s,) = summary.stragglers  # rank 2 is within 5% of the fastest: not a straggler
    assert (s.rank, s.fastest_rank) == (1, 0)
    assert s.excess_ms == pytest.approx(3.0) and s.fastest_ms == pytest.approx(6.0)
    assert s.top_ops == [("aten::mm", pytest.approx(3.0))]
    doc = summary.to_json()["stragglers"][0]
    assert doc["rank"] == 1 and doc["excess_pct"] == pytest.approx(50.0)
    assert doc["top_ops"] == [{"name": "aten::mm", "excess_ms": pytest.approx(3.0)}]


def test_balanced_ranks_have_no_straggler():
    assert summarize(_run({0: 0.0, 1: 0.1})).stragglers == []


@pytest.mark.slow
@pytest.mark.torch
def test_a_rank_given_six_times_the_batch_is_named(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "imbalanced"
    tk = [sys.executable, "-m", "tracekit"]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    subprocess.run([*tk, "profile", "--out", str(out), "--", torchrun, "--nproc_per_node",
                    "2", str(ROOT / "samples" / "train_ddp.py"), "--imbalance", "1:6",
                    "--steps", "10"], check=True, capture_output=True, cwd=tmp_path)
    doc = json.loads(subprocess.run([*tk, "summary", str(out), "--json"], check=True,
                                    capture_output=True, text=True).stdout)
    assert [s["rank"] for s in doc["stragglers"]] == [1]
    # the matmuls (forward and backward) carry most of the excess
    names = " ".join(op["name"] for op in doc["stragglers"][0]["top_ops"][:2])
    assert "Addmm" in names or "linear" in names or "addmm" in names
