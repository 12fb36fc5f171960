"""Graph edit primitives: what-ifs build on these."""

from __future__ import annotations

import numpy as np
import pytest
from test_replay_engine import make_graph

from replay.checks import check_graph
from replay.engine import schedule, schedule_full
from tracekit.errors import TracekitError
from tracekit.graph.edit import (
    add_edges,
    add_lane,
    add_nodes,
    append_to_lane,
    insert_after,
    insert_before,
    lane_sequence,
    new_coll_ids,
    nodes_where,
    remove_nodes,
    renumbering,
    scale_durations,
)
from tracekit.graph.model import EdgeKind, NodeKind

L = EdgeKind.LANE_ORDER


@pytest.fixture
def chain():
    # one cpu lane a(10) -> b(20) -> c(30) with delays 1 and 2; a gpu lane k(5) launched by a
    return make_graph(lanes=[(0, "cpu"), (0, "gpu")], lane=[0, 0, 0, 1], dur=[10, 20, 30, 5],
                      edges=[(0, 1, L, 1), (1, 2, L, 2), (0, 3, EdgeKind.LAUNCH, 4)])


def test_add_nodes_appends_and_keeps_the_input_unchanged(chain):
    g, ids = add_nodes(chain, lane=[1, 1], kind=NodeKind.COMPUTE, name=["x", "n0"],
                       dur_ns=[7, 8], start_ns=100)
    assert ids.tolist() == [4, 5]
    assert g.n_nodes == 6 and chain.n_nodes == 4
    assert g.names[g.name[4]] == "x" and g.name[5] == 0  # existing name reused
    assert g.rank[4] == 0 and g.coll_id[4] == -1 and g.event_row[4] == -1
    # new nodes without edges are released at their start_ns
    start, _ = schedule(g)
    assert start[4] == 100 and start[5] == 100


def test_insert_after_rewires_lane_order(chain):
    g, (v,) = add_nodes(chain, lane=[0], kind=NodeKind.COMPUTE, name=["new"], dur_ns=[100])
    g = insert_after(g, int(v), after=0, delay_ns=3)
    assert check_graph(g) == []
    assert lane_sequence(g, 0).tolist() == [0, 4, 1, 2]
    start, end = schedule(g)
    # a [0,10] -> new [13,113] -> b [114,134] (old delay 1 kept) -> c [136,166]
    assert start[[0, 4, 1, 2]].tolist() == [0, 13, 114, 136]


def test_insert_before_and_append(chain):
    g, ids = add_nodes(chain, lane=[0, 0], kind=NodeKind.HOST, name=["p", "q"], dur_ns=[5, 5])
    g = insert_before(g, int(ids[0]), before=0)
    g = append_to_lane(g, [int(ids[1])], 0, delay_ns=9)
    assert lane_sequence(g, 0).tolist() == [4, 0, 1, 2, 5]
    start, end = schedule(g)
    assert start[5] == end[2] + 9


def test_insert_a_node_already_on_a_lane_is_refused(chain):
    with pytest.raises(TracekitError, match="already on a lane"):
        insert_after(chain, 1, after=0)


def test_remove_nodes_bridges_the_lane_and_drops_edges(chain):
    mask = np.zeros(4, dtype=bool)
    mask[1] = True
    g = remove_nodes(chain, mask)
    assert g.n_nodes == 3
    assert renumbering(mask).tolist() == [0, -1, 1, 2]
    assert check_graph(g) == []
    start, end = schedule(g)
    # a [0,10] -> c: delays 1 + 2 kept, b's 20 ns gone
    assert start[1] == 13
    # removing the launch source drops the launch edge; the kernel is then released
    mask = np.array([True, False, False, False])
    g2 = remove_nodes(chain, mask)
    assert not np.any(g2.edge_kind == EdgeKind.LAUNCH)
    assert check_graph(g2) == []


def test_remove_nodes_without_the_gaps_between_the_removed_ops():
    # a -1-> b -2-> c -3-> d on one lane; b and c removed: the 2 between them was theirs
    g4 = make_graph(lanes=[(0, "cpu")], lane=[0, 0, 0, 0], dur=[10, 20, 30, 40],
                    edges=[(0, 1, L, 1), (1, 2, L, 2), (2, 3, L, 3)])
    mask = np.array([False, True, True, False])
    kept, dropped = remove_nodes(g4, mask), remove_nodes(g4, mask, keep_inner_gaps=False)
    assert schedule(kept)[0][1] == 16 and schedule(dropped)[0][1] == 14
    assert check_graph(dropped) == []


def test_remove_nodes_at_the_end_of_a_lane(chain):
    g = remove_nodes(chain, np.array([False, True, True, False]))
    assert g.n_nodes == 2 and not np.any(g.edge_kind == L)


def test_add_edges_validates_and_broadcasts(chain):
    g = add_edges(chain, [0], [2, 3], EdgeKind.HOST_WAIT, delay_ns=5, inferred=True)
    assert g.n_edges == chain.n_edges + 2 and g.inferred[-2:].all()
    with pytest.raises(TracekitError, match="does not exist"):
        add_edges(chain, [0], [9], EdgeKind.HOST_WAIT)
    with pytest.raises(TracekitError, match="2 sources but 3 targets"):
        add_edges(chain, [0, 1], [1, 2, 3], EdgeKind.HOST_WAIT)


def test_new_collective_on_a_new_lane(chain):
    g, lane = add_lane(chain, rank=0, kind="comm", name="extra")
    g, lane2 = add_lane(g, rank=1, kind="comm", name="peer")
    cid = new_coll_ids(g, 1)[0]
    g, ids = add_nodes(g, lane=[lane, lane2], kind=NodeKind.COMM, name="gloo:all_reduce",
                       dur_ns=[50, 60], coll_id=cid, start_ns=[0, 40])
    g = add_edges(g, [2], [int(ids[0])], EdgeKind.ISSUE)
    s = schedule_full(g)
    # rank 0's participant is ready when c ends (63), rank 1's at its release (40)
    assert s.start_ns[ids].tolist() == [63, 63]
    assert s.end_ns[ids].tolist() == [113, 123]
    assert g.rank[ids].tolist() == [0, 1]


def test_scale_and_select(chain):
    g = scale_durations(chain, 0.5, mask=chain.lane == 0)
    assert g.dur_ns.tolist() == [5, 10, 15, 5]
    assert nodes_where(chain, lane=0).tolist() == [0, 1, 2]
    assert nodes_where(chain, name_contains="n3").tolist() == [3]


def test_typical_delay_is_the_median_of_binding_samples_from_the_issue_start():
    """Three steps of: host op a (10 ns) issues work w on a comm lane. In steps 0 and 1 the
    ISSUE edge binds (w starts 100 and 120 ns after a starts); in step 2 w waits for a
    blocker b on its lane, so its ISSUE latency is unknown (the graph carries a nominal
    300). Typical, counted from a's start: median(100, 120) = 110 for every step."""
    from dataclasses import replace

    from tracekit.graph.edit import typical_delays

    issue = EdgeKind.ISSUE
    g = make_graph(
        lanes=[(0, "cpu"), (0, "comm")],
        #     a0  a1    a2    w0   w1    b2    w2
        lane=[0, 0, 0, 1, 1, 1, 1],
        dur=[10, 10, 10, 50, 50, 500, 50],
        start=[0, 1000, 2000, 100, 1120, 1900, 2400],
        edges=[(0, 1, L, 990), (1, 2, L, 990), (3, 4, L, 970), (4, 5, L, 730), (5, 6, L, 0),
               (0, 3, issue, 90), (1, 4, issue, 110), (2, 6, issue, 300)],
        kind=[NodeKind.LAUNCH] * 3 + [NodeKind.COMM] * 4)
    g = replace(g, step=np.array([0, 1, 2, 0, 1, 2, 2], dtype=np.int32),
                name=np.array([0, 0, 0, 1, 1, 2, 1], dtype=np.int32), names=["a", "w", "b"])
    start, _ = schedule(g)
    assert start.tolist() == [0, 1000, 2000, 100, 1120, 1900, 2400]  # the measured run
    t = typical_delays(g)
    issues = np.flatnonzero(t.edge_kind == issue)
    assert t.delay_ns[issues].tolist() == [100, 100, 100]
    lanes = t.edge_kind == L
    assert np.array_equal(t.delay_ns[lanes], g.delay_ns[lanes])
