"""FSDP recognition (tracekit/graph/fsdp.py) and ``reshard=off|on``
(replay/whatif/reshard.py) on hand-built FSDP2 graphs whose replay is known by hand
(tests/fsdp_graphs.py: 17.7 ms resharding, 13.3 ms not)."""

from __future__ import annotations

import numpy as np
import pytest
from fsdp_graphs import fsdp_graph, step_ms

from replay.whatif.reshard import Reshard, reshard_off, reshard_on, resharding_units
from replay.whatif.spec import parse_spec
from tracekit.core.manifest import ModuleInfo
from tracekit.errors import TracekitError
from tracekit.graph.fsdp import BACKWARD, FORWARD, REDUCE, find_fsdp
from tracekit.graph.model import EdgeKind, NodeKind


def test_fsdp_collectives_get_their_unit_and_phase():
    g, ann = fsdp_graph(ranks=2)
    fs = find_fsdp(None, g, ann)
    assert fs.units == ("a", "b")
    assert fs.counts() == {FORWARD: 4, BACKWARD: 4, REDUCE: 4}
    rs = fs.per_rank_step[(1, 0)]
    got = [(c.unit, c.phase) for c in rs.collectives]
    assert got == [("a", FORWARD), ("b", FORWARD), ("b", BACKWARD), ("a", BACKWARD),
                   ("b", REDUCE), ("a", REDUCE)]
    for c in rs.collectives:
        assert g.rank[c.comm] == 1 and g.lane[c.comm] == 3
        assert g.node_name(c.host[0]).startswith("c10d::")
    # the prefetched all-gather of `a` is waited for in a's own pre-backward hook
    bwd_a = rs.find("a", BACKWARD)
    assert bwd_a.copy_out and bwd_a.copy_out[0] == rs.pre_backward["a"]
    assert g.node_name(rs.pre_backward["b"]) == "c10d::_allgather_base_"


def test_a_run_without_fsdp_ranges_has_no_fsdp():
    g, ann = fsdp_graph()
    assert find_fsdp(None, g, ann.iloc[:0]) is None


def test_reshard_off_removes_the_backward_all_gathers():
    g, ann = fsdp_graph(ranks=2)
    assert step_ms(g) == pytest.approx(17.7)
    fs = find_fsdp(None, g, ann)
    units = resharding_units(fs, [])
    assert units == {"a", "b"}
    off, kept, n = reshard_off(g, fs, units)
    assert n == 4 and off.n_nodes == g.n_nodes - 4 * 3  # issue, all-gather, copy-out
    assert step_ms(off) == pytest.approx(13.3)  # the no-reshard graph's answer
    assert (g.coll_id[kept] == off.coll_id).all()


def test_reshard_off_removes_the_host_time_between_the_removed_ops():
    # FSDP2's unshard path runs Python between its ops (setting up the all-gather, the
    # prefetch, the copy-out): with reshard_after_forward=False none of it runs
    g, ann = fsdp_graph(ranks=2)
    fs = find_fsdp(None, g, ann)
    removed = np.zeros(g.n_nodes, dtype=bool)
    for rs in fs.per_rank_step.values():
        for c in rs.collectives:
            if c.phase == BACKWARD:
                removed[[c.comm, *c.host, *c.copy_out]] = True
    inner = (g.edge_kind == EdgeKind.LANE_ORDER) & removed[g.src] & removed[g.dst]
    assert inner.any()
    g.delay_ns = np.where(inner, 1_000_000, g.delay_ns)  # 1 ms of Python in each
    assert step_ms(g) > 17.7
    off, _, _ = reshard_off(g, fs, resharding_units(fs, []))
    assert step_ms(off) == pytest.approx(13.3)


def test_reshard_off_leaves_units_the_manifest_says_keep_their_parameters():
    g, ann = fsdp_graph()
    fs = find_fsdp(None, g, ann)
    units = resharding_units(fs, [ModuleInfo(module="a", cls="Linear", params=(),
                                             reshard_after_forward=True),
                                  ModuleInfo(module="b", cls="Linear", params=(),
                                             reshard_after_forward=False)])
    assert units == {"a"}
    off, _, n = reshard_off(g, fs, units)
    assert n == 1
    # a's prefetched all-gather blocked b's hook: removing it saves its issue op, its
    # transfer and its copy-out
    assert step_ms(off) == pytest.approx(17.7 - 0.1 - 2.0 - 0.1)


def test_reshard_on_adds_what_fsdp_would_and_reproduces_the_resharded_step():
    g, ann = fsdp_graph(reshard=False, ranks=2)
    assert step_ms(g) == pytest.approx(13.3)
    fs = find_fsdp(None, g, ann)
    on, added, notes = reshard_on(g, fs)
    assert added == 2 * 2 * 3 and notes == []
    assert step_ms(on) == pytest.approx(17.7)
    new = np.arange(g.n_nodes, on.n_nodes)
    comm = new[on.kind[new] == NodeKind.COMM]
    assert len(comm) == 4
    # one collective instance per unit across both ranks, each on its rank's comm lane
    assert sorted(np.unique(on.coll_id[comm], return_counts=True)[1].tolist()) == [2, 2]
    assert set(on.lane[comm].tolist()) == {1, 3}
    waits = (on.edge_kind == EdgeKind.HOST_WAIT) & np.isin(on.src, comm)
    # per rank: each all-gather's copy-out waits for it, and the prefetched one also
    # blocks the hook that issued it (a CPU run)
    assert waits.sum() == 2 * (2 + 1)


def test_reshard_parses_and_refuses_other_values():
    (v,) = parse_spec("reshard=off").variants
    assert v.transforms == (Reshard(enabled=False),)
    assert parse_spec("reshard=ON").variants[0].spec == "reshard=on"
    with pytest.raises(TracekitError, match="expected reshard=off or reshard=on"):
        parse_spec("reshard=maybe")
