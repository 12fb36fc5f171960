"""Packaging a replay: predicted timeline, step times, critical path, on recorded runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replay.critical_path import binding_predecessors, critical_paths
from replay.engine import schedule_full
from replay.timeline import replay
from tracekit.analysis.breakdown import summarize
from tracekit.core.run import load_run
from tracekit.core.schema import check_schema
from tracekit.graph.build import build_graph
from tracekit.graph.edit import scale_durations, typical_delays
from tracekit.graph.model import NodeKind

PROBE = [Path(__file__).parent / "data" / "graph" / f"gloo_probe_rank{r}.json.gz"
         for r in (0, 1)]


@pytest.fixture(scope="module")
def probe():
    run = load_run(PROBE)
    graph = build_graph(run, delays="measured")
    return run, graph, replay(run, graph)


def test_timeline_has_the_event_table_shape(probe):
    run, graph, res = probe
    tl = res.timeline
    check_schema(tl)
    assert list(tl.columns[-3:]) == ["node", "critical", "measured_ts_ns"]
    nodes = tl["node"].to_numpy()
    assert sorted(nodes[nodes >= 0].tolist()) == list(range(graph.n_nodes))
    # one predicted ProfilerStep row per rank and step
    steps = tl[tl["kind"] == "step"]
    assert sorted(zip(steps["rank"], steps["name"].astype(str))) == [
        (0, "ProfilerStep#2"), (0, "ProfilerStep#3"), (1, "ProfilerStep#2"), (1, "ProfilerStep#3")]
    assert np.all(tl["end_ns"] == tl["ts_ns"] + tl["dur_ns"])


def test_baseline_reproduces_measured_steps(probe):
    run, graph, res = probe
    assert sorted(res.step_ms) == [2, 3]
    # measured: the slowest rank's ProfilerStep window
    ev = run.events
    windows = ev[ev["kind"] == "step"]
    for s in (2, 3):
        w = windows[windows["name"] == f"ProfilerStep#{s}"]
        assert res.measured_step_ms[s] == pytest.approx(w["dur_ns"].max() / 1e6)
        # the graph explains the run: stated bound 0.5% per step
        assert abs(res.step_ms[s] - res.measured_step_ms[s]) / res.measured_step_ms[s] < 0.005
    # the replayed timeline equals the measured one, node for node
    tl = res.timeline
    real = tl[tl["node"] >= 0]
    comm = real["kind"] == "comm"
    assert np.array_equal(real.loc[~comm, "ts_ns"], real.loc[~comm, "measured_ts_ns"])


def test_typical_delays_still_explain_the_run(probe):
    """Structure check: with every non-lane edge at its rank's median latency, the replay
    stays within 30% on this short, contended 2-step run (stated bound)."""
    run, graph, res = probe
    typical = replay(run, typical_delays(graph))
    for s, ms in typical.step_ms.items():
        assert abs(ms - res.measured_step_ms[s]) / res.measured_step_ms[s] < 0.30


def test_slower_compute_predicts_longer_steps(probe):
    run, graph, res = probe
    slow = replay(run, scale_durations(graph, 2.0, mask=graph.kind == NodeKind.COMPUTE))
    for s in res.step_ms:
        assert slow.step_ms[s] > res.step_ms[s] * 1.05


def test_critical_path_accounting(probe):
    run, graph, res = probe
    sched = schedule_full(graph)
    paths = critical_paths(graph, sched)
    assert sorted(paths) == [2, 3]
    for step, p in paths.items():
        assert p.nodes, "a step has a critical path"
        assert set(graph.step[p.nodes].tolist()) == {step}
        assert sum(p.by_kind_ns.values()) == p.total_ns
        assert sum(p.by_lane_ns.values()) + p.by_kind_ns.get("gap", 0) == p.total_ns
        last = np.flatnonzero(graph.step == step)
        assert sched.end_ns[p.nodes[-1]] == sched.end_ns[last].max()
        # each node on the path starts when its predecessor on the path (plus gap) allows
        assert np.all(np.diff(sched.start_ns[p.nodes]) >= 0)
    merged = res.critical_path
    assert merged.total_ns == sum(p.total_ns for p in paths.values())
    crit = res.timeline[res.timeline["critical"]]
    assert sorted(crit["node"].tolist()) == sorted(merged.nodes)


def test_binding_predecessor_of_a_late_collective_is_the_last_arrival(probe):
    run, graph, res = probe
    sched = schedule_full(graph)
    pred = binding_predecessors(graph, sched)
    waited = np.flatnonzero((graph.coll_id >= 0) & (sched.start_ns > sched.ready_ns))
    assert len(waited) > 0
    for v in waited:
        peers = np.flatnonzero(graph.coll_id == graph.coll_id[v])
        last = peers[np.argmax(sched.ready_ns[peers])]
        assert graph.rank[last] != graph.rank[v]
        assert pred[v] == pred[last]


def test_gpu_trace_without_steps_is_one_window(alexnet_trace):
    run = load_run(alexnet_trace)
    res = replay(run, build_graph(run, delays="measured"))
    assert list(res.step_ms) == [0]
    assert res.step_ms[0] == pytest.approx(res.measured_step_ms[0])
    # the measured window is the summary's: the whole trace, first event to last
    assert res.measured_step_ms[0] == pytest.approx(summarize(run).steps["ms"].iloc[0])
    check_schema(res.timeline)
