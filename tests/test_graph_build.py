"""Graph assembly on real traces: CPU gloo runs (recorded here with torch 2.13) and the
GPU traces of tests/data (see tests/data/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replay.checks import check_graph
from replay.engine import schedule_full
from tracekit.core.run import load_run
from tracekit.errors import TracekitError
from tracekit.graph.build import build_graph
from tracekit.graph.model import EdgeKind, NodeKind

PROBE = [Path(__file__).parent / "data" / "graph" / f"gloo_probe_rank{r}.json.gz"
         for r in (0, 1)]


@pytest.fixture(scope="module")
def probe_run():
    return load_run(PROBE)


@pytest.fixture(scope="module")
def probe_graph(probe_run):
    return build_graph(probe_run, delays="measured")


def _measured_end(g):
    return g.start_ns + g.wait_ns + g.dur_ns


def test_probe_graph_is_sound(probe_graph):
    assert check_graph(probe_graph) == []


def test_host_nodes_do_not_overlap_and_contain_no_other_node(probe_graph, probe_run):
    g = probe_graph
    for ln in g.lanes:
        on = np.flatnonzero(g.lane == ln.id)
        assert np.all(np.diff(on) == 1), "a lane's nodes are consecutive ids"
        assert np.all(g.start_ns[on[1:]] >= _measured_end(g)[on[:-1]])
    # every c10d::allreduce_ is a node of its own (an anchor), never inside another node
    ev = probe_run.events
    n_issue = int(((ev["name"] == "c10d::allreduce_")).sum())
    names = np.array([g.node_name(v) for v in range(g.n_nodes)])
    assert int((names == "c10d::allreduce_").sum()) == n_issue
    # on a CPU-only run the plain ops are compute, the issue ops launch comm
    assert set(g.kind[names == "c10d::allreduce_"].tolist()) == {NodeKind.LAUNCH}
    assert set(g.kind[names == "aten::linear"].tolist()) == {NodeKind.COMPUTE}


def test_probe_lanes(probe_graph):
    kinds = sorted((ln.rank, ln.kind) for ln in probe_graph.lanes)
    # per rank: the main thread and two pt_gloo_runloop threads
    assert kinds == [(0, "comm"), (0, "comm"), (0, "cpu"), (1, "comm"), (1, "comm"), (1, "cpu")]
    mains = [ln for ln in probe_graph.lanes if ln.is_main]
    assert sorted(ln.rank for ln in mains) == [0, 1]
    assert all(ln.kind == "cpu" for ln in mains)
    assert all("pt_gloo_runloop" in ln.name for ln in probe_graph.lanes if ln.kind == "comm")


def test_every_gloo_work_item_is_issued_in_fifo_order(probe_graph):
    g = probe_graph
    issue = np.flatnonzero(g.edge_kind == EdgeKind.ISSUE)
    comm = np.flatnonzero(g.kind == NodeKind.COMM)
    assert sorted(g.dst[issue].tolist()) == comm.tolist()  # one issue per work item
    assert np.all(g.rank[g.src[issue]] == g.rank[g.dst[issue]])
    assert np.all(g.start_ns[g.src[issue]] <= g.start_ns[g.dst[issue]])
    for r in (0, 1):
        mine = issue[g.rank[g.dst[issue]] == r]
        by_issue = mine[np.argsort(g.start_ns[g.src[mine]])]
        # the k-th issue feeds the k-th work item picked up
        assert np.all(np.diff(g.start_ns[g.dst[by_issue]]) > 0)


def test_collectives_match_across_ranks_and_split_wait_from_transfer(probe_graph):
    g = probe_graph
    comm = np.flatnonzero(g.kind == NodeKind.COMM)
    ids, counts = np.unique(g.coll_id[comm], return_counts=True)
    assert len(ids) == 8 and np.all(counts == 2)  # 4 buckets x 2 steps, one node per rank
    mend = _measured_end(g)
    for c in ids:
        pair = comm[g.coll_id[comm] == c]
        assert sorted(g.rank[pair].tolist()) == [0, 1]
        latest = g.start_ns[pair].max()
        assert g.wait_ns[pair].tolist() == (latest - g.start_ns[pair]).tolist()
        assert min(g.wait_ns[pair]) == 0  # the last to arrive did not wait
        assert np.all(g.dur_ns[pair] == mend[pair] - latest)
        assert np.all(g.bytes[pair] == 526336)  # 2 x Linear(256, 256), fp32


def test_main_thread_waits_for_buckets_are_inferred(probe_graph):
    g = probe_graph
    inf = np.flatnonzero(g.inferred)
    assert len(inf) >= 4  # at least one wait per rank and step
    assert set(g.edge_kind[inf].tolist()) == {EdgeKind.HOST_WAIT}
    assert np.all(g.kind[g.src[inf]] == NodeKind.COMM)
    mains = {ln.id for ln in g.lanes if ln.is_main}
    assert set(g.lane[g.dst[inf]].tolist()) <= mains
    waited = set(zip(g.rank[g.dst[inf]].tolist(), g.step[g.dst[inf]].tolist()))
    assert waited == {(0, 2), (0, 3), (1, 2), (1, 3)}
    assert any("inferred" in n for n in g.notes)


def test_replaying_the_graph_reproduces_every_measured_start(probe_graph):
    s = schedule_full(probe_graph)
    assert np.array_equal(s.ready_ns, probe_graph.start_ns)
    assert np.array_equal(s.end_ns, _measured_end(probe_graph))


def test_steps_argument_keeps_only_those_steps(probe_run):
    g = build_graph(probe_run, steps=[3], delays="measured")
    assert set(g.step.tolist()) == {3}
    assert g.n_nodes < build_graph(probe_run, delays="measured").n_nodes
    with pytest.raises(TracekitError, match="step 9 is not in this run"):
        build_graph(probe_run, steps=[9], delays="measured")


def test_ddp_run_with_barrier_and_loss_allreduce(gloo_2rank_dir):
    g = build_graph(load_run(gloo_2rank_dir), delays="measured")
    assert check_graph(g) == []
    names = {g.node_name(v) for v in np.flatnonzero(g.kind == NodeKind.COMM)}
    assert names == {"gloo:all_reduce", "gloo:barrier"}
    assert np.all(np.unique(g.coll_id[g.kind == NodeKind.COMM], return_counts=True)[1] == 2)
    s = schedule_full(g)
    assert np.array_equal(s.ready_ns, g.start_ns)


def test_gpu_trace_launch_and_stream_wait_edges(alexnet_trace):
    run = load_run(alexnet_trace)
    g = build_graph(run, delays="measured")
    assert check_graph(g) == []
    launch = np.flatnonzero(g.edge_kind == EdgeKind.LAUNCH)
    assert len(launch) > 50
    ev = run.events
    corr = ev["correlation"].to_numpy()
    assert np.all(corr[g.event_row[g.src[launch]]] == corr[g.event_row[g.dst[launch]]])
    assert np.all(g.kind[g.src[launch]] == NodeKind.LAUNCH)
    gpu = np.array([ln.kind != "cpu" for ln in g.lanes])
    assert np.all(gpu[g.lane[g.dst[launch]]]) and not np.any(gpu[g.lane[g.src[launch]]])
    wait = np.flatnonzero(g.edge_kind == EdgeKind.STREAM_WAIT)
    assert len(wait) > 0
    assert np.all(g.lane[g.src[wait]] != g.lane[g.dst[wait]])
    assert np.all(gpu[g.lane[g.src[wait]]] & gpu[g.lane[g.dst[wait]]])


def test_gpu_stream_sync_becomes_a_host_wait(alexnet_trace):
    g = build_graph(load_run(alexnet_trace), delays="measured")
    hw = np.flatnonzero(g.edge_kind == EdgeKind.HOST_WAIT)
    assert len(hw) > 0
    gpu = np.array([ln.kind != "cpu" for ln in g.lanes])
    assert np.all(gpu[g.lane[g.src[hw]]]) and not np.any(gpu[g.lane[g.dst[hw]]])
    # the sync call before each target keeps only its un-blocked part
    syncs = g.dst[hw] - 1
    assert np.all(g.kind[syncs] == NodeKind.SYNC)
    assert np.all(g.start_ns[syncs] + g.dur_ns[syncs] <= g.start_ns[g.dst[hw]])


def test_incomplete_world_keeps_measured_comm_and_says_so(world128_traces):
    g = build_graph(load_run(world128_traces), delays="measured")
    notes = " ".join(g.notes)
    assert "incomplete world" in notes
    assert "stream 84 do not line up" in notes  # p2p traffic: not matched
    comm = np.flatnonzero(g.kind == NodeKind.COMM)
    _, counts = np.unique(g.coll_id[comm], return_counts=True)
    assert counts.max() == 2 and (counts == 1).sum() == 16
    single = comm[np.isin(g.coll_id[comm], np.unique(g.coll_id[comm])[counts == 1])]
    assert np.all(g.wait_ns[single] == 0)
    s = schedule_full(g)
    assert np.array_equal(s.ready_ns, g.start_ns)


def test_single_rank_nccl_trace_keeps_measured_collectives(a100_trace):
    run = load_run(a100_trace)
    g = build_graph(run, delays="measured")
    comm = np.flatnonzero(g.kind == NodeKind.COMM)
    assert len(comm) == 21
    ev = run.events
    assert np.array_equal(g.dur_ns[comm], ev["dur_ns"].to_numpy()[g.event_row[comm]])
    assert len(np.unique(g.coll_id[comm])) == 21
    # the main thread waits for the autograd thread at the end of backward
    assert any("between host threads" in n for n in g.notes)


WHATIF_RUN = Path(__file__).parent / "data" / "whatif_ddp_2rank"


def test_collective_completes_when_its_waiting_host_resumed():
    """gloo releases work.wait() before it closes the gloo:* event: a comm node ends at the
    earlier of its event's end and the resume of a host op that waited for it."""
    run = load_run(WHATIF_RUN)
    g = build_graph(run, delays="measured")
    comm = np.flatnonzero(g.kind == NodeKind.COMM)
    event_end = run.events["end_ns"].to_numpy()[g.event_row[comm]]
    end = _measured_end(g)[comm]
    assert np.all(end <= event_end)
    hw = g.edge_kind == EdgeKind.HOST_WAIT
    shortened = comm[end < event_end]
    assert len(shortened) >= 2  # this recorded run has such cases (5 of 24)
    for v in shortened:
        resumed = g.start_ns[g.dst[hw & (g.src == v)]]
        assert int(resumed.min()) == int(_measured_end(g)[v])
        assert np.all(g.rank[g.dst[hw & (g.src == v)]] == g.rank[v])
    # the others end with their event
    kept = comm[end == event_end]
    assert len(kept) + len(shortened) == len(comm)
    # waiting is unchanged: every matched instance starts its transfer together
    for c in np.unique(g.coll_id[comm]):
        members = comm[g.coll_id[comm] == c]
        assert len(set((g.start_ns[members] + g.wait_ns[members]).tolist())) == 1


def test_typical_issue_delay_counts_from_the_issuing_op_start():
    """The typical pickup of a gloo work item is fixed relative to c10d::allreduce_'s start
    (the work is enqueued inside the call), not to its end (host noise)."""
    from tracekit.graph.edit import typical_delays

    g = typical_delays(build_graph(load_run(WHATIF_RUN), delays="measured"))
    issue = np.flatnonzero(g.edge_kind == EdgeKind.ISSUE)
    from_start = g.delay_ns[issue] + g.dur_ns[g.src[issue]]
    # position: rank and how-many-th issue of its step, in issue order
    seen: dict[tuple[int, int], set[int]] = {}
    issued = g.start_ns[g.src[issue]]
    for e, fs, t in zip(issue, from_start, issued):
        r, s = int(g.rank[g.dst[e]]), int(g.step[g.dst[e]])
        k = int(np.sum((g.rank[g.dst[issue]] == r) & (g.step[g.dst[issue]] == s)
                       & (issued < t)))
        seen.setdefault((r, k), set()).add(int(fs))
    assert all(len(v) == 1 for v in seen.values())
    # and the issuing ops' durations do differ between steps, so this is not trivially true
    durs = g.dur_ns[g.src[issue]]
    assert len(set(durs.tolist())) > len(seen)

