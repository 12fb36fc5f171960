"""The DEVICES-stage what-ifs on hand-built DDP graphs whose answer is known:
``stragglers=off`` and ``slow-rank=R:X`` (each one module of the what-if registry)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_whatif_transforms import _evaluate, ddp_run

from replay.engine import schedule_full
from replay.timeline import replay
from replay.whatif.stragglers import fastest_durations
from tracekit.errors import TracekitError
from tracekit.graph.edit import with_durations
from tracekit.graph.model import NodeKind


def _scaled(g, sel, factor):
    """``g`` with the durations of nodes ``sel`` multiplied, "measured" again."""
    dur = g.dur_ns.copy()
    dur[sel] = np.rint(dur[sel] * factor).astype(np.int64)
    out = with_durations(g, dur)
    out.start_ns = schedule_full(out).start_ns
    return out


def _rerecorded(run, g):
    """``run`` whose forward annotations sit where graph ``g`` ran its forwards (the
    events must agree with the graph's measured times, as in a real recording)."""
    names = np.array(g.names, dtype=object)[g.name]
    ev = run.events.copy()
    for i, row in ev.iterrows():
        node = np.flatnonzero((g.rank == row["rank"]) & (g.step == row["step"])
                              & (names == "fwd m"))[0]
        ev.loc[i, "ts_ns"] = g.start_ns[node]
        ev.loc[i, "end_ns"] = g.start_ns[node] + g.dur_ns[node]
        ev.loc[i, "dur_ns"] = g.dur_ns[node]
    return replace(run, events=ev)


def _fwd_of_rank(g, rank):
    names = np.array(g.names, dtype=object)[g.name]
    return (g.rank == rank) & (names == "fwd m")


def test_fastest_durations_match_ops_by_position():
    run, g = ddp_run()
    slow = _scaled(g, _fwd_of_rank(g, 1), 3.0)
    done = fastest_durations(slow, slow.dur_ns)
    assert done.unmatched == 0 and done.matched == int((g.kind == NodeKind.COMPUTE).sum())
    assert done.dur_ns.tolist() == g.dur_ns.tolist()  # rank 1's forward takes rank 0's time
    assert done.fastest == {0: 0}


def test_ops_whose_names_differ_are_not_matched():
    run, g = ddp_run()
    names = list(g.names) + ["other op"]
    name = g.name.copy()
    first_fwd = int(np.flatnonzero(_fwd_of_rank(g, 1))[0])
    name[first_fwd] = len(names) - 1
    g2 = with_durations(g, g.dur_ns)
    g2.name, g2.names = name, names
    assert fastest_durations(g2, g2.dur_ns).unmatched == 2  # that position on both ranks


def test_stragglers_off_predicts_the_balanced_step():
    run, g = ddp_run(steps=(1, 2))
    balanced = replay(run, g).median_step_ms
    slow = _scaled(g, _fwd_of_rank(g, 1), 3.0)
    base, (res,) = _evaluate(_rerecorded(run, slow), slow, ["stragglers=off"])
    assert base.median_step_ms > balanced * 1.5  # the straggler really held the step back
    assert res.result.median_step_ms == pytest.approx(balanced, rel=1e-6)
    assert any("take their fastest rank's time: rank 0's" in n for n in res.notes)


def _two_ops(a_on_rank0: float, b_on_rank1: float):
    """Two ranks, two steps, forward ops a and b of 1 ms; rank 0 runs a ``a_on_rank0``x
    as long, rank 1 runs b ``b_on_rank1``x. Returns the run, that graph, the
    stragglers=off durations per node, and the same as ``{(rank, op): set of them}``."""
    run, g = ddp_run(steps=(1, 2), modules=(("a", 1_000_000), ("b", 1_000_000)))
    names = np.array(g.names, dtype=object)[g.name]
    g = _scaled(g, (g.rank == 0) & (names == "fwd a"), a_on_rank0)
    g = _scaled(g, (g.rank == 1) & (names == "fwd b"), b_on_rank1)
    dur = fastest_durations(g, g.dur_ns).dur_ns
    took = {(r, op): set(dur[(g.rank == r) & (names == f"fwd {op}")].tolist())
            for r in (0, 1) for op in "ab"}
    return run, g, dur, took


def test_a_balanced_run_with_noisy_ops_has_no_straggler_to_remove():
    # each rank is slower in a different op, by the same amount: the per-op shortest time
    # of the ranks would predict a faster step; the fastest rank's own times do not
    run, noisy, dur, took = _two_ops(2.0, 2.0)
    # both ranks now run rank 0's ops (the tie goes to the lower rank): a slow, b fast
    assert took == {(r, op): {2_000_000 if op == "a" else 1_000_000}
                    for r in (0, 1) for op in "ab"}
    base = replay(run, noisy).median_step_ms
    after = replay(run, with_durations(noisy, dur)).median_step_ms
    assert after == pytest.approx(base, rel=1e-6)


def test_the_fastest_rank_is_the_one_with_the_least_compute_per_step():
    # rank 0 is slower in op a by 0.5 ms, rank 1 in op b by 1 ms: rank 0 is the fastest
    _, _, _, took = _two_ops(1.5, 2.0)
    assert took[(1, "a")] == {1_500_000} and took[(1, "b")] == {1_000_000}


def test_slow_rank_equals_recording_that_rank_slower():
    # compared on where each rank's predicted schedule ends: the step *windows* of a
    # trace without ProfilerStep are anchored on measured starts, which differ between
    # the two recordings
    run, g = ddp_run(steps=(1, 2))
    comp1 = (g.kind == NodeKind.COMPUTE) & (g.rank == 1)
    recorded = replay(run, _scaled(g, comp1, 2.0)).timeline
    _, (res,) = _evaluate(run, g, ["slow-rank=1:2"])
    predicted = res.result.timeline
    # every rank finishes where it does when rank 1 really computes twice as long
    assert (predicted.groupby("rank")["end_ns"].max().tolist()
            == recorded.groupby("rank")["end_ns"].max().tolist())
    assert res.speedup < 1.0


def test_slow_rank_names_the_ranks_it_has():
    run, g = ddp_run()
    with pytest.raises(TracekitError, match=r"rank 7 is not in the replayed run \(ranks 0, 1\)"):
        _evaluate(run, g, ["slow-rank=7:2"])
