"""The interleaved measurement (benchmarks/ab_worker.py): the round order, block timing
that sees a DeAR-like side's steady state, and the per-variant summary. A fake clock and
fake sides: no training, no timing of this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ab_worker  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeWork:
    def batch_for(self, step, rank, seed, device):
        return None, None


class SteadySide:
    """Every step takes ``ms``."""

    def __init__(self, clock: Clock, ms: float) -> None:
        self.clock, self.ms, self.work = clock, ms, FakeWork()

    def step(self, x, y) -> None:
        self.clock.now += self.ms / 1000


class OverlappingSide(SteadySide):
    """Like DeAR: a step leaves ``tail_ms`` of communication in flight, which the next step
    (or a drain) waits for: steady state ``ms + tail_ms`` per step, but a step after a drain
    is short and the one after it long."""

    def __init__(self, clock: Clock, ms: float, tail_ms: float) -> None:
        super().__init__(clock, ms)
        self.tail_ms, self.pending = tail_ms, False

    def step(self, x, y) -> None:
        self.drain()
        super().step(x, y)
        self.pending = True

    def drain(self) -> None:
        if self.pending:
            self.clock.now += self.tail_ms / 1000
            self.pending = False


def test_each_round_is_a_shuffle_that_the_next_round_reverses():
    orders = [ab_worker.round_order(5, r, seed=3) for r in range(40)]
    assert all(sorted(o) == list(range(5)) for o in orders)
    assert all(orders[r + 1] == orders[r][::-1] for r in range(0, 40, 2))
    assert orders == [ab_worker.round_order(5, r, seed=3) for r in range(40)]  # every rank
    assert orders != [ab_worker.round_order(5, r, seed=4) for r in range(40)]


def test_no_side_holds_a_fixed_place_where_rounds_turn():
    """With a fixed order the baseline ran twice in a row at every other turn of rounds;
    shuffled, the side that runs twice in a row changes, and the baseline is not it more
    often than its share."""
    orders = [ab_worker.round_order(4, r) for r in range(400)]
    doubled = [orders[r][-1] for r in range(399) if orders[r][-1] == orders[r + 1][0]]
    assert len(set(doubled)) == 4
    assert doubled.count(0) < len(doubled) / 2
    firsts = [o[0] for o in orders[::2]]
    assert 0.1 < firsts.count(0) / len(firsts) < 0.4


def test_block_timing_sees_the_steady_state_of_an_overlapping_side(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(ab_worker.time, "perf_counter", clock)
    sides = [SteadySide(clock, 100.0), OverlappingSide(clock, 60.0, 20.0),
             SteadySide(clock, 50.0)]
    switched = []
    times = ab_worker.run_rounds(sides, rounds=4, block=2, rank=0, seed=0, device=None,
                                 switch=switched.append)
    assert [len(t) for t in times] == [4, 4, 4]
    assert times[1] == pytest.approx([0.080] * 4)  # (60 + 20) ms a step, every block
    assert times[0] == pytest.approx([0.100] * 4) and times[2] == pytest.approx([0.050] * 4)
    assert switched == [w for r in range(4) for w in ab_worker.round_order(3, r, seed=0)]
    lines = ab_worker.summarize(["dear", "bucket:1"], times, skip=1)
    assert lines[0].startswith("ab variant=dear baseline_ms=100.000 variant_ms=80.000 "
                               "speedup=1.2500 n=3")
    assert "variant=bucket:1" in lines[1] and "speedup=2.0000" in lines[1]


def test_speedup_pairs_each_round_with_its_own_baseline():
    """A machine that slows down for a round slows both sides of it: the ratio holds."""
    times = [[0.1, 0.2, 0.1], [0.05, 0.1, 0.05]]
    assert "speedup=2.0000 n=3 rounds=2.0000,2.0000,2.0000" in ab_worker.summarize(
        ["x"], times, skip=0)[0]


def test_every_variant_form_builds_a_side_that_trains(tmp_path):
    """Each --variant form makes a real side that takes a training step (one process,
    a gloo group of one; the sample trainers' code, not their timing)."""
    import argparse

    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        args = argparse.Namespace(model="mlp", lr=0.01, seed=0)
        for variant in ("baseline", "bucket:4", "no-overlap", "dear", "dear:4", "link:8gbit",
                        "fsdp:Linear", "fsdp-noreshard:Linear"):
            side = ab_worker.make_side(variant, args, 1, torch_device())
            x, y = side.work.batch_for(0, 0, 0, torch_device())
            side.step(x, y)
            side.step(x, y)
        with pytest.raises(SystemExit, match="--variant must be"):
            ab_worker.make_side("bucket", args, 1, torch_device())
    finally:
        dist.destroy_process_group()


def torch_device():
    import torch

    return torch.device("cpu")
