"""Core sharing (replay.interference.cores): hand-computed slowdowns and a two-rank what-if."""

from __future__ import annotations

import numpy as np
import pytest
from test_replay_engine import make_graph

from replay.engine import schedule
from replay.interference.cores import HostCores, apply_contention, slowdown
from tracekit.graph.edit import with_durations
from tracekit.graph.model import EdgeKind


def test_slowdown_is_the_mean_excess_of_busy_threads_over_cores():
    # three threads on 2 cores over [0, 10): busy 3 on [0, 10) -> 1.5;
    # a fourth interval [10, 20) alone -> 1.0; [5, 15) is half at 1.5, half at 1.0
    start = np.array([0, 0, 0, 10, 5])
    end = np.array([10, 10, 10, 20, 15])
    host = np.zeros(5, dtype=np.int64)
    got = slowdown(start[:4], end[:4], host[:4], np.array([2]))
    assert got.tolist() == pytest.approx([1.5, 1.5, 1.5, 1.0])
    # with the [5, 15) interval: busy 4 on [5, 10) -> 2.0; busy 2 on [10, 15) -> 1.0
    got = slowdown(start, end, host, np.array([2]))
    assert got[4] == pytest.approx(1.5)
    assert got[0] == pytest.approx((5 * 1.5 + 5 * 2.0) / 10)


def test_hosts_do_not_share_cores():
    start, end = np.array([0, 0, 0]), np.array([10, 10, 10])
    got = slowdown(start, end, np.array([0, 0, 1]), np.array([1, 1]))
    assert got.tolist() == pytest.approx([2.0, 2.0, 1.0])


def test_moving_work_apart_removes_the_sharing():
    """Two ranks on one 1-core host, each running one op: measured side by side (each
    took 20 for 10 of work). A what-if that chains them (rank 1 waits for rank 0) runs
    each at full speed: 10 + 10."""
    hc = HostCores(host_of_rank=np.array([0, 0]), cores=np.array([1]), names=["a"])
    g = make_graph(lanes=[(0, "cpu"), (1, "cpu")], lane=[0, 1], dur=[20, 20], start=[0, 0],
                   edges=[])
    measured = slowdown(g.start_ns, g.start_ns + g.dur_ns, np.array([0, 0]), hc.cores)
    assert measured.tolist() == pytest.approx([2.0, 2.0])
    chained = make_graph(lanes=[(0, "cpu"), (1, "cpu")], lane=[0, 1], dur=[20, 20],
                         start=[0, 0], edges=[(0, 1, EdgeKind.HOST_WAIT, 0)])
    res = apply_contention(graph=chained, dur_ns=chained.dur_ns, base_slowdown=measured,
                           hc=hc, schedule=lambda d: schedule(with_durations(chained, d)))
    assert res.dur_ns.tolist() == [10, 10]
    assert res.slowdown.tolist() == pytest.approx([1.0, 1.0])
    # unchanged, the graph reproduces itself: a fixed point
    same = apply_contention(graph=g, dur_ns=g.dur_ns, base_slowdown=measured, hc=hc,
                            schedule=lambda d: schedule(with_durations(g, d)))
    assert same.dur_ns.tolist() == [20, 20]
    assert same.last_change == 0.0


def test_cores_model_is_selectable_and_checked(recording_machine_cores):
    from pathlib import Path

    from replay.timeline import replay
    from replay.whatif import build_context
    from tracekit.core.run import load_run
    from tracekit.errors import TracekitError
    from tracekit.graph.build import build_graph

    run = load_run(Path(__file__).parent / "data" / "whatif_ddp_2rank")
    g = build_graph(run)
    base = replay(run, g)
    ctx = build_context(run, g, base, interference="cores")
    model = ctx.interference
    assert model.name == "cores" and model.hosts.cores.tolist() == [2]
    # the baseline's slowdowns on the 2-core host: some nodes ran with a core to
    # themselves (1.0), some beside more busy threads than cores, and none can exceed
    # every lane of the host busy at once (2 ranks x (main + gloo threads) / 2 cores)
    lanes = len(g.lanes)
    assert model.base_slowdown.min() == 1.0
    assert 1.0 < model.base_slowdown.max() <= lanes / 2
    assert build_context(run, g, base, interference="factor").interference.name == "factor"
    # the default on a CPU-only run is core sharing
    assert build_context(run, g, base).interference.name == "cores"
    with pytest.raises(TracekitError, match="interference must be one of"):
        build_context(run, g, base, interference="magic")


def test_auto_interference_keeps_the_factor_model_on_gpu_runs():
    from conftest import A100

    from replay.timeline import replay
    from replay.whatif import build_context
    from tracekit.core.run import load_run
    from tracekit.errors import TracekitError
    from tracekit.graph.build import build_graph

    run = load_run(A100)
    g = build_graph(run)
    assert any(ln.kind == "gpu" for ln in g.lanes)
    ctx = build_context(run, g, replay(run, g))
    assert ctx.interference.name == "factor"  # NCCL kernels slow compute: the fitted factor
    # core sharing is for host threads; on a GPU run it is an error, never a fallback
    with pytest.raises(TracekitError, match="has GPU lanes"):
        build_context(run, g, replay(run, g), interference="cores")


def test_ranks_pinned_apart_share_no_cores_but_still_share_their_hosts_link():
    """Two ranks of one host, each pinned to its own core (``cpu_set`` [0] and [1]): two
    pools of one core each. Both ranks' transfers still load the host's one link."""
    from types import SimpleNamespace

    from replay.interference.cores import cpu_pools, host_cores

    assert cpu_pools(["a", "a"], [[0], [1]]) == [0, 1]
    assert cpu_pools(["a", "a"], [[0, 1], [1]]) == [0, 0]  # overlapping masks share
    assert cpu_pools(["a", "a", "b"], [[0], None, [0]]) == [0, 0, 1]  # one unknown: one pool
    assert cpu_pools(["a", "a"], None) == [0, 0]
    g = make_graph(lanes=[(0, "cpu"), (1, "cpu")], lane=[0, 1], dur=[10, 10], start=[0, 0],
                   edges=[])
    manifest = SimpleNamespace(hosts={0: "a", 1: "a"}, cpu_cores={0: 1, 1: 1},
                               cpu_sets={0: (0,), 1: (1,)})
    hc = host_cores(SimpleNamespace(manifest=manifest), g)
    assert hc.pool_of_rank.tolist() == [0, 1] and hc.host_of_rank.tolist() == [0, 0]
    assert hc.cores.tolist() == [1, 1]
    assert "rank 0 on a shares 1 core(s); rank 1 on a shares 1 core(s)" in hc.describe()
    start, end = np.array([0, 0]), np.array([10, 10])
    pools, host = hc.pool_of_rank, hc.host_of_rank
    # compute side by side: each on its own core, no slowdown (one pool of 1: 2.0)
    assert slowdown(start, end, pools, hc.cores).tolist() == pytest.approx([1.0, 1.0])
    assert slowdown(start, end, host, np.array([1])).tolist() == pytest.approx([2.0, 2.0])
    # two transfers that each fill the link: the wire is shared however the cores are
    link = np.array([1.0, 1.0])
    got = slowdown(start, end, pools, hc.cores, np.array([0.1, 0.1]), link, host)
    assert got.tolist() == pytest.approx([2.0, 2.0])


def test_unpinned_ranks_of_one_host_share_its_cores():
    from types import SimpleNamespace

    from replay.interference.cores import host_cores

    g = make_graph(lanes=[(0, "cpu"), (1, "cpu")], lane=[0, 1], dur=[10, 10], start=[0, 0],
                   edges=[])
    manifest = SimpleNamespace(hosts={0: "a", 1: "a"}, cpu_cores={0: 2, 1: 2},
                               cpu_sets={0: (0, 1), 1: (0, 1)})
    hc = host_cores(SimpleNamespace(manifest=manifest), g)
    assert hc.pool_of_rank.tolist() == [0, 0] and hc.cores.tolist() == [2]
