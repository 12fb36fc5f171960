"""Calibration on the emulated cluster link: each timed call follows an untimed all-reduce
that leaves the link busy, so a token-bucket link (tbf, 1 MB burst) is timed at its rate,
not at the burst an idle link lets through. Needs root (benchmarks/cluster.py)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cluster  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow,
              pytest.mark.skipif(cluster.available() is not None,
                                 reason=str(cluster.available()))]


def _median_ms(tmp_path: Path, name: str, drain: int) -> float:
    """Median all-gather time (fastest rank, as the fit reads it) of 256 KB at 200 Mbit/s."""
    pytest.importorskip("torch")
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", str(ROOT / "collectors" / "calibrate_worker.py"),
           "--out", str(out), "--sizes", str(256 << 10), "--iters", "5", "--warmup", "1",
           "--collectives", "all_gather", "--drain-bytes", str(drain), "--no-fsdp-hooks"]
    cluster.run_on_link(cmd, rate="200mbit", capture_output=True, check=True,
                        env={"OMP_NUM_THREADS": "1"})
    (m,) = json.loads(out.read_text())["measurements"]
    return statistics.median(min(col) for col in zip(*m["per_rank_ns"])) / 1e6


def test_a_drained_link_times_a_call_at_the_links_rate(tmp_path):
    # 256 KB all-gathered by 2 ranks moves 256 KB through the one shaped loopback: about
    # 10 ms at 200 Mbit/s, but well under the 1 MB burst an idle link lets through at once
    idle = _median_ms(tmp_path, "idle", 0)
    busy = _median_ms(tmp_path, "busy", 4 << 20)
    assert busy > 3 * idle, (idle, busy)


def test_calibration_measures_the_links_burst_credit(tmp_path):
    # tbf's 1 MB bucket at 200 Mbit/s (25 MB/s) is worth 1 MB / 25 MB/s = 42 ms of
    # transfer: a 4 MB all-reduce (about 330 ms busy: 8 MB through the one loopback) runs
    # that much faster after the link sat idle long enough to refill it; a busy call may
    # also wait behind what tbf still queues (up to its 20 ms latency): 49-66 ms measured
    pytest.importorskip("torch")
    from replay.calibration import build_comm_model

    out = tmp_path / "credit.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", str(ROOT / "collectors" / "calibrate_worker.py"),
           "--out", str(out), "--sizes", "1024", "--iters", "1", "--warmup", "1",
           "--collectives", "all_reduce", "--no-fsdp-hooks", "--credit-bytes",
           str(4 << 20), "--credit-idle", "0.3", "--credit-reps", "8"]
    cluster.run_on_link(cmd, rate="200mbit", capture_output=True, check=True,
                        env={"OMP_NUM_THREADS": "1"})
    credit = build_comm_model(json.loads(out.read_text()))["link_credit"]
    assert 20 < credit["burst_s"] * 1e3 < 100, credit
    assert not credit["lower_bound"] and credit["idle_ms"] < credit["busy_ms"]
