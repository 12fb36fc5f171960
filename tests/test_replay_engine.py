"""The replay engine on graphs whose schedule is known by hand, and against a plain
reference implementation on random graphs."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.engine import schedule, schedule_full
from tracekit.errors import TracekitError
from tracekit.graph.model import EdgeKind, Graph, Lane, NodeKind

L = EdgeKind.LANE_ORDER


def make_graph(*, lanes, lane, dur, edges, start=None, coll=None, kind=None) -> Graph:
    """A graph from plain lists: ``lanes`` = [(rank, kind)], edges = [(src, dst, kind, delay)]."""
    n = len(lane)
    e = np.array(edges, dtype=np.int64).reshape(-1, 4)
    lane_objs = [Lane(id=i, rank=r, kind=k, local_id=i, name=f"l{i}")
                 for i, (r, k) in enumerate(lanes)]
    return Graph(
        rank=np.array([lanes[x][0] for x in lane], dtype=np.int32),
        lane=np.array(lane, dtype=np.int32),
        kind=np.array(kind if kind is not None else [NodeKind.COMPUTE] * n, dtype=np.int8),
        step=np.zeros(n, dtype=np.int32),
        name=np.arange(n, dtype=np.int32),
        start_ns=np.array(start if start is not None else [0] * n, dtype=np.int64),
        dur_ns=np.array(dur, dtype=np.int64),
        wait_ns=np.zeros(n, dtype=np.int64),
        bytes=np.full(n, -1, dtype=np.int64),
        coll_id=np.array(coll if coll is not None else [-1] * n, dtype=np.int64),
        event_row=np.full(n, -1, dtype=np.int64),
        src=e[:, 0].copy(), dst=e[:, 1].copy(), edge_kind=e[:, 2].astype(np.int8),
        delay_ns=e[:, 3].copy(), inferred=np.zeros(len(e), dtype=bool),
        names=[f"n{i}" for i in range(n)], lanes=lane_objs,
    )


def two_lane_graph():
    """cpu: launch0 (5) -> launch1 (5) -> op (10); gpu: k0 (30) -> k1 (20); launch ->
    kernel edges with delay 2."""
    return make_graph(
        lanes=[(0, "cpu"), (0, "gpu")],
        lane=[0, 0, 0, 1, 1],
        dur=[5, 5, 10, 30, 20],
        edges=[(0, 1, L, 0), (1, 2, L, 1), (3, 4, L, 0),
               (0, 3, EdgeKind.LAUNCH, 2), (1, 4, EdgeKind.LAUNCH, 2)],
    )


def test_two_lanes_launch_and_kernels():
    g = two_lane_graph()
    start, end = schedule(g)
    # k0 starts at 5 + 2; k1 waits for k0 (ends 37), not for its launch (ends 10 + 2)
    assert start.tolist() == [0, 5, 11, 7, 37]
    assert end.tolist() == [5, 10, 21, 37, 57]


def test_collective_waits_for_the_late_rank():
    # rank 0: op a (10) -> allreduce; rank 1: op b (40) -> allreduce; then op after on each
    g = make_graph(
        lanes=[(0, "cpu"), (0, "comm"), (1, "cpu"), (1, "comm")],
        lane=[0, 1, 0, 2, 3, 2],
        dur=[10, 100, 3, 40, 120, 3],
        edges=[(0, 2, L, 0), (3, 5, L, 0),
               (0, 1, EdgeKind.ISSUE, 5), (3, 4, EdgeKind.ISSUE, 5),
               (1, 2, EdgeKind.HOST_WAIT, 1), (4, 5, EdgeKind.HOST_WAIT, 1)],
        coll=[-1, 7, -1, -1, 7, -1],
        kind=[0, NodeKind.COMM, 0, 0, NodeKind.COMM, 0],
    )
    s = schedule_full(g)
    # rank 0 arrives at 15, rank 1 at 45: both start at 45
    assert s.ready_ns[[1, 4]].tolist() == [15, 45]
    assert s.start_ns[[1, 4]].tolist() == [45, 45]
    assert s.end_ns[[1, 4]].tolist() == [145, 165]
    # each host resumes 1 ns after its own participant ended
    assert s.start_ns[[2, 5]].tolist() == [146, 166]


def test_stream_wait_orders_two_streams():
    # compute stream k0 (50) -> comm stream c0 waits for k0 (+3); c0 (20) on its own lane
    g = make_graph(
        lanes=[(0, "gpu"), (0, "gpu")],
        lane=[0, 0, 1],
        dur=[50, 10, 20],
        edges=[(0, 1, L, 0), (0, 2, EdgeKind.STREAM_WAIT, 3)],
        start=[0, 0, 0],
    )
    start, end = schedule(g)
    assert start.tolist() == [0, 50, 53]
    assert end.tolist() == [50, 60, 73]


def test_sources_are_released_at_their_measured_start_and_negative_delays_work():
    g = make_graph(
        lanes=[(0, "cpu"), (0, "comm")],
        lane=[0, 0, 1],
        dur=[100, 10, 50],
        # the comm node starts 60 ns before its issuing op ends (picked up mid-call)
        edges=[(0, 1, L, 7), (0, 2, EdgeKind.ISSUE, -60)],
        start=[1_000, 0, 0],
    )
    start, end = schedule(g)
    assert start.tolist() == [1_000, 1_107, 1_040]


def test_permuted_node_ids_give_the_same_schedule():
    g = two_lane_graph()
    perm = np.array([4, 2, 0, 3, 1])  # new id of old node i
    inv = np.argsort(perm)
    h = make_graph(
        lanes=[(0, "cpu"), (0, "gpu")],
        lane=[[0, 0, 0, 1, 1][i] for i in inv],
        dur=[[5, 5, 10, 30, 20][i] for i in inv],
        edges=[(perm[s], perm[d], k, dl) for s, d, k, dl in
               [(0, 1, L, 0), (1, 2, L, 1), (3, 4, L, 0),
                (0, 3, EdgeKind.LAUNCH, 2), (1, 4, EdgeKind.LAUNCH, 2)]],
    )
    a, b = schedule(g), schedule(h)
    assert np.array_equal(a[0], b[0][perm])
    assert np.array_equal(a[1], b[1][perm])


def test_cycle_is_reported_with_node_names():
    g = make_graph(
        lanes=[(0, "cpu"), (0, "gpu")],
        lane=[0, 0, 1],
        dur=[1, 1, 1],
        edges=[(0, 1, L, 0), (1, 2, EdgeKind.LAUNCH, 0), (2, 0, EdgeKind.HOST_WAIT, 0)],
    )
    with pytest.raises(TracekitError, match="cycle") as exc:
        schedule(g)
    msg = str(exc.value)
    assert "node 0 (n0" in msg and "node 2 (n2" in msg


def test_collective_deadlock_across_ranks_is_an_error():
    # rank 0 runs c1 then c2, rank 1 runs c2 then c1 on their only lanes
    g = make_graph(
        lanes=[(0, "comm"), (1, "comm")],
        lane=[0, 0, 1, 1],
        dur=[1, 1, 1, 1],
        edges=[(0, 1, L, 0), (2, 3, L, 0)],
        coll=[1, 2, 2, 1],
    )
    with pytest.raises(TracekitError, match="cannot order|cycle"):
        schedule(g)


def test_two_participants_on_one_lane_is_an_error():
    g = make_graph(lanes=[(0, "comm")], lane=[0, 0], dur=[1, 1], edges=[(0, 1, L, 0)],
                   coll=[3, 3])
    with pytest.raises(TracekitError, match="one lane"):
        schedule(g)


def test_lane_with_two_successors_is_an_error():
    g = make_graph(lanes=[(0, "cpu")], lane=[0, 0, 0], dur=[1, 1, 1],
                   edges=[(0, 1, L, 0), (0, 2, L, 0)])
    with pytest.raises(TracekitError, match="lane-order"):
        schedule(g)


def test_empty_graph():
    g = make_graph(lanes=[(0, "cpu")], lane=[], dur=[], edges=[])
    s = schedule_full(g)
    assert len(s.start_ns) == 0 and s.rounds == 0


# ---------------------------------------------------------------- reference comparison

def reference(g: Graph) -> tuple[list[int], list[int], list[int]]:
    """The semantics of the model docstring, evaluated node by node in topological order
    of the graph with each collective contracted to one node."""
    n = g.n_nodes
    rep = list(range(n))
    groups = defaultdict(list)
    for v in range(n):
        if g.coll_id[v] >= 0:
            groups[int(g.coll_id[v])].append(v)
    for members in groups.values():
        if len(members) > 1:
            for v in members:
                rep[v] = members[0]
    preds = defaultdict(list)
    succ = defaultdict(set)
    indeg = defaultdict(int)
    for s, d, dl in zip(g.src.tolist(), g.dst.tolist(), g.delay_ns.tolist()):
        if rep[s] == rep[d]:
            return None  # one participant waits for another: a deadlock
        preds[d].append((s, dl))
        if rep[s] != rep[d] and rep[d] not in succ[rep[s]]:
            succ[rep[s]].add(rep[d])
            indeg[rep[d]] += 1
    reps = sorted(set(rep))
    order, queue = [], [r for r in reps if indeg[r] == 0]
    while queue:
        r = queue.pop()
        order.append(r)
        for t in succ[r]:
            indeg[t] -= 1
            if indeg[t] == 0:
                queue.append(t)
    if len(order) != len(reps):
        return None
    start, end, ready = [0] * n, [0] * n, [0] * n
    for r in order:
        members = [v for v in range(n) if rep[v] == r]
        for v in members:
            ready[v] = (max(end[u] + dl for u, dl in preds[v]) if preds[v]
                        else int(g.start_ns[v]))
        t = max(ready[v] for v in members)
        for v in members:
            start[v] = t
            end[v] = t + int(g.dur_ns[v])
    return start, end, ready


@st.composite
def random_graphs(draw):
    n = draw(st.integers(1, 24))
    n_lanes = draw(st.integers(1, 5))
    lane = [draw(st.integers(0, n_lanes - 1)) for _ in range(n)]
    order = draw(st.permutations(list(range(n))))  # a topological order
    rank_of = {v: i for i, v in enumerate(order)}
    dur = [draw(st.integers(0, 50)) for _ in range(n)]
    start = [draw(st.integers(0, 200)) for _ in range(n)]
    edges = []
    for ln in range(n_lanes):
        chain = sorted((v for v in range(n) if lane[v] == ln), key=rank_of.get)
        for a, b in zip(chain, chain[1:]):
            edges.append((a, b, int(L), draw(st.integers(0, 10))))
    for _ in range(draw(st.integers(0, 2 * n))):
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if rank_of[a] < rank_of[b]:
            edges.append((a, b, int(EdgeKind.LAUNCH), draw(st.integers(-5, 20))))
    coll = [-1] * n
    for cid in range(draw(st.integers(0, 3)) if n > 1 else 0):
        members = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=4, unique=True))
        if len({lane[v] for v in members}) == len(members) and all(coll[v] < 0 for v in members):
            for v in members:
                coll[v] = cid
    return make_graph(lanes=[(ln, "cpu") for ln in range(n_lanes)], lane=lane, dur=dur,
                      edges=edges, start=start, coll=coll)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_engine_matches_the_reference_on_random_graphs(g):
    ref = reference(g)
    if ref is None:
        with pytest.raises(TracekitError):
            schedule_full(g)
        return
    s = schedule_full(g)
    assert s.start_ns.tolist() == ref[0]
    assert s.end_ns.tolist() == ref[1]
    assert s.ready_ns.tolist() == ref[2]
