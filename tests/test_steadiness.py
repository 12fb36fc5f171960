"""A run disturbed while it was recorded: each rank's compute per step
(tracekit.graph.steadiness), on hand-built graphs."""

from __future__ import annotations

import dataclasses

import numpy as np
from test_replay_engine import make_graph

from tracekit.graph.model import NodeKind
from tracekit.graph.steadiness import compute_per_step, unsteady_note, unsteady_steps


def _steps_graph(rank1_ms: list[float]) -> object:
    """Two ranks, one compute op and one comm node per step; rank 0's op takes 10 ms
    every step, rank 1's the given times (the comm node, 50 ms, is not compute)."""
    n_steps = len(rank1_ms)
    dur, lane, kind, step = [], [], [], []
    for s, ms in enumerate(rank1_ms):
        for ln, d in ((0, 10.0), (1, ms)):
            dur += [int(d * 1e6), 50_000_000]
            lane += [ln, ln]
            kind += [NodeKind.COMPUTE, NodeKind.COMM]
            step += [s, s]
    g = make_graph(lanes=[(0, "cpu"), (1, "cpu")], lane=lane, dur=dur, edges=[], kind=kind)
    assert n_steps
    return dataclasses.replace(g, step=np.array(step, dtype=np.int32))


def test_a_rank_whose_steps_computed_twice_as_long_is_named_with_its_steps():
    g = _steps_graph([80, 81, 79, 80, 223, 168, 162])  # lower quartile 80
    per = compute_per_step(g)
    assert per[0] == {s: 10e6 for s in range(7)}
    assert per[1][4] == 223e6
    bad = unsteady_steps(g)
    assert list(bad) == [1]
    assert [s for s, _ in bad[1]] == [4, 5, 6]
    assert bad[1][0][1] == 223 / 80
    note = unsteady_note(g)
    assert note.startswith("compute per step not steady: rank 1 steps 4, 5, 6 (2.02-2.79x its")
    assert "re-record on a quiet machine" in note


def test_ordinary_step_to_step_noise_is_not_a_disturbance():
    g = _steps_graph([80, 92, 70, 85, 101, 75])
    assert unsteady_steps(g) == {} and unsteady_note(g) is None


def test_a_load_that_lasts_half_the_run_is_still_seen():
    """Steps 5-9 twice as slow as steps 0-4: the median (between the two) would hide it;
    the lower quartile does not."""
    got = unsteady_steps(_steps_graph([33, 32, 33, 33, 32, 79, 62, 60, 68, 72]))
    assert [s for s, _ in got[1]] == [5, 6, 7, 8, 9]


def test_a_lone_slow_step_is_not_a_disturbance():
    """One step at 2.5x (a collection, the first profiled step) and another far from it:
    no stretch of two."""
    assert unsteady_steps(_steps_graph([200, 80, 81, 79, 200, 80, 80])) == {}


def test_four_steps_are_too_few_to_judge():
    assert unsteady_steps(_steps_graph([80, 80, 300, 300])) == {}
