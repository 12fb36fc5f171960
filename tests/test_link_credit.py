"""The link's burst credit in the replay (:mod:`replay.link_credit`): hand-built graphs
whose credited schedule is known by hand, the busy-link durations of a measured run, the
bucket at another wire, and the what-ifs on a recorded run with a calibrated credit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_calibration import MB, _credit, _raw
from test_replay_engine import make_graph

from replay.calibration import build_comm_model, load_comm_model, write_comm_model
from replay.engine import schedule
from replay.link_credit import LinkCredit, busy_durations
from replay.scaled_cost import ScaledCostModel
from replay.timeline import replay
from replay.whatif import build_context, evaluate_in
from tracekit.core.run import load_run
from tracekit.graph.build import build_graph
from tracekit.graph.edit import with_durations
from tracekit.graph.model import EdgeKind, NodeKind

DATA = Path(__file__).parent / "data"
MS = 1_000_000
L, ISSUE, DONE = EdgeKind.LANE_ORDER, EdgeKind.ISSUE, EdgeKind.COMM_DONE


def _two_collectives(compute_between_ms: float, *, ranks_hosts=(0, 0)):
    """Two ranks, each: compute (10 ms) -> collective A (8 ms busy) -> compute
    (``compute_between_ms``) -> collective B (8 ms busy). Lanes: per rank a main thread
    and a comm thread; A and B are one collective instance each across the ranks."""
    lanes = [(0, "cpu"), (0, "comm"), (1, "cpu"), (1, "comm")]
    # per rank r: c0 = 4r, A = 4r + 1, c1 = 4r + 2, B = 4r + 3
    lane, dur, kind, coll, edges = [], [], [], [], []
    for r in (0, 1):
        base = 4 * r
        lane += [2 * r, 2 * r + 1, 2 * r, 2 * r + 1]
        dur += [10 * MS, 8 * MS, int(compute_between_ms * MS), 8 * MS]
        kind += [NodeKind.COMPUTE, NodeKind.COMM, NodeKind.COMPUTE, NodeKind.COMM]
        coll += [-1, 0, -1, 1]
        edges += [(base, base + 2, L, 0), (base + 1, base + 3, L, 0),
                  (base, base + 1, ISSUE, 0), (base + 1, base + 2, DONE, 0),
                  (base + 2, base + 3, ISSUE, 0)]
    g = make_graph(lanes=lanes, lane=lane, dur=dur, edges=edges, kind=kind, coll=coll)
    share = np.where(g.kind == NodeKind.COMM, 1.0, 0.0)
    credit = LinkCredit(burst_ns=4 * MS, link_of_rank=np.array(ranks_hosts), wire_share=share)
    return g, credit


def _plain(g):
    return lambda d: schedule(with_durations(g, d))


def test_a_collective_after_an_idle_gap_saves_what_the_bucket_refilled():
    """A starts on an idle link: the full bucket (4 ms) comes off its 8 ms. After A the
    bucket is empty; 2 ms of compute refill 2 ms of it, which B saves: 10 + 4 + 2 + 6."""
    g, credit = _two_collectives(2)
    saved, start, end = credit.settle(g, g.dur_ns, _plain(g))
    assert saved[[1, 5]] / MS == pytest.approx([4, 4])
    assert saved[[3, 7]] / MS == pytest.approx([2, 2])
    assert saved[[0, 2, 4, 6]].tolist() == [0, 0, 0, 0]
    assert end.max() / MS == pytest.approx(22)


def test_back_to_back_collectives_get_no_refill_and_a_long_gap_a_full_bucket():
    g, credit = _two_collectives(0)
    saved, _, end = credit.settle(g, g.dur_ns, _plain(g))
    assert saved[[3, 7]].tolist() == [0, 0] and end.max() / MS == pytest.approx(10 + 4 + 8)
    g, credit = _two_collectives(30)  # longer than the bucket takes to refill
    saved, _, _ = credit.settle(g, g.dur_ns, _plain(g))
    assert saved[[3, 7]] / MS == pytest.approx([4, 4])


def test_ranks_on_two_hosts_each_have_their_own_bucket_and_the_poorer_one_counts():
    g, credit = _two_collectives(2, ranks_hosts=(0, 1))
    saved, _, _ = credit.settle(g, g.dur_ns, _plain(g))
    assert saved[[1, 5]] / MS == pytest.approx([4, 4])
    assert saved[[3, 7]] / MS == pytest.approx([2, 2])
    # no bucket, no saving; a saving never exceeds the transfer's wire time
    assert not replace(credit, burst_ns=0).savings(g, g.dur_ns, *schedule(g)).any()
    half = replace(credit, wire_share=credit.wire_share * 0.25)  # 2 ms of each 8 ms on the wire
    saved, _, _ = half.settle(g, g.dur_ns, _plain(g))
    assert saved[[1, 3, 5, 7]] / MS == pytest.approx([2, 2, 2, 2])


def test_a_measured_runs_busy_durations_add_back_what_its_schedule_credited():
    """As measured, A took 4 ms and B 6 ms (the credited schedule above): on a busy link
    they are the 8 ms each the curves give, and the savings are the credit."""
    g, credit = _two_collectives(2)
    saved, _, _ = credit.settle(g, g.dur_ns, _plain(g))
    measured = with_durations(g, np.rint(g.dur_ns - saved).astype(np.int64))
    start, end = schedule(measured)
    busy, back = busy_durations(measured, credit, start, end)
    assert busy[[1, 3, 5, 7]] / MS == pytest.approx([8, 8, 8, 8])
    assert back == pytest.approx(saved)


def _with_credit(tmp_path, burst_ms: float):
    raw = _raw({"all_reduce": (100_000, 1e9), "reduce_scatter": (100_000, 1e9),
                "all_gather": (100_000, 1e9)}, [64 * 1024, MB, 16 * MB])
    busy = [36.0] * 6
    raw["link_credit"] = _credit(busy, [b - burst_ms for b in busy])
    return write_comm_model(build_comm_model(raw), tmp_path / f"comm{burst_ms}.json")


def test_the_bucket_is_worth_less_time_on_a_faster_wire(tmp_path):
    model = load_comm_model(_with_credit(tmp_path, 4.0))
    assert model.link_burst_ns() == pytest.approx(4 * MS)
    assert ScaledCostModel(base=model, bandwidth_factor=2.0).link_burst_ns() == pytest.approx(
        2 * MS, rel=1e-3)
    assert ScaledCostModel(base=model, time_factor=3.0).link_burst_ns() == pytest.approx(
        12 * MS, rel=1e-3)


@pytest.fixture(scope="module")
def recorded():
    run = load_run(DATA / "whatif_ddp_2rank")
    graph = build_graph(run)
    return run, graph, replay(run, graph)


def test_with_a_credit_what_changes_nothing_is_the_baseline_and_overlap_off_moves(recorded,
                                                                                 tmp_path):
    """The run's own plan (DDP's bucket_cap_mb=0.75) replays to the baseline exactly with
    the credit on; overlap=off, which moves every bucket to the end of backward where
    they follow each other, loses credit the run's buckets had."""
    run, graph, base = recorded
    plain = build_context(run, graph, base, comm_model=str(_with_credit(tmp_path, 0.0)))
    ctx = build_context(run, graph, base, comm_model=str(_with_credit(tmp_path, 2.0)))
    assert ctx.credit is not None and plain.credit is None
    assert ctx.credit_saved.sum() > 0
    comm = graph.kind == NodeKind.COMM
    assert (ctx.busy_graph.dur_ns[comm] >= graph.dur_ns[comm]).all()
    assert any(n.startswith("link credit:") for n in ctx.notes)
    same, off = evaluate_in(ctx, ["fusion=0.75MB", "overlap=off"])
    assert same.result.median_step_ms == pytest.approx(ctx.baseline.median_step_ms, rel=1e-9)
    (off_plain,) = evaluate_in(plain, ["overlap=off"])
    assert off.speedup != pytest.approx(off_plain.speedup, rel=1e-4)
