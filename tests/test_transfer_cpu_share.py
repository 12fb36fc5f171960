"""A transfer's CPU share: measured by the calibration, used by core sharing and by the
bandwidth what-ifs (a faster wire cannot beat the transfer's CPU work). Hand-computed
answers on hand-built inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_calibration import _raw
from test_replay_engine import make_graph

from replay.calibration import build_comm_model, load_comm_model, write_comm_model
from replay.engine import schedule
from replay.interference.cores import CoreSharing, HostCores, apply_contention, slowdown
from replay.scaled_cost import ScaledCostModel
from tracekit.graph.edit import with_durations
from tracekit.graph.model import NodeKind

KB, MB = 1 << 10, 1 << 20


def _model(tmp_path, share: dict[int, float] | None):
    """An all-reduce calibration (alpha 0, 500 MB/s bus bandwidth: 2 ms per MB) whose
    transfers keep ``share[bytes]`` of a core busy (None: an older file, no CPU times)."""
    raw = _raw({"all_reduce": (0.0, 500e6)}, [MB, 4 * MB, 16 * MB])
    for m in raw["measurements"]:
        if share is not None:
            t = m["per_rank_ns"][0][0]
            m["per_rank_cpu_ns"] = [[int(share[m["bytes"]] * t)] * m["iters"]] * 2
    path = tmp_path / "comm.json"
    write_comm_model(build_comm_model(raw), path)
    return load_comm_model(path)


def test_calibration_records_the_cpu_share_and_interpolates_it_in_log_size(tmp_path):
    model = _model(tmp_path, {MB: 0.8, 4 * MB: 0.4, 16 * MB: 0.2})
    points = model.doc["collectives"]["all_reduce"]["points"]
    assert [round(p["cpu_share"], 3) for p in points] == [0.8, 0.4, 0.2]
    assert model.cpu_share("all_reduce", 2 * MB) == pytest.approx(0.6)  # half-way in log2
    assert model.cpu_share("all_reduce", KB) == pytest.approx(0.8)  # the nearest end
    assert model.cpu_share("gloo:all_reduce", 16 * MB) == pytest.approx(0.2)
    # a collective not calibrated takes the reference's share
    assert model.cpu_share("reduce_scatter", 4 * MB) == pytest.approx(0.4)
    assert _model(tmp_path, None).cpu_share("all_reduce", MB) is None


def test_a_faster_wire_stops_at_the_transfers_cpu_time(tmp_path):
    model = _model(tmp_path, {MB: 0.3, 4 * MB: 0.3, 16 * MB: 0.3})
    base = model.time_ns("all_reduce", 16 * MB, 2)
    assert ScaledCostModel(base=model, bandwidth_factor=2.0).time_ns(
        "all_reduce", 16 * MB, 2) == pytest.approx(base / 2)
    # 4x would be 0.25 of the time, below the CPU work (0.3 of it): CPU-bound
    faster = ScaledCostModel(base=model, bandwidth_factor=4.0)
    assert faster.time_ns("all_reduce", 16 * MB, 2) == pytest.approx(0.3 * base)
    assert faster.cpu_share("all_reduce", 16 * MB) == pytest.approx(1.0)
    # a slower wire is not floored; without CPU times nothing is
    assert ScaledCostModel(base=model, bandwidth_factor=0.5).time_ns(
        "all_reduce", 16 * MB, 2) == pytest.approx(2 * base)
    old = _model(tmp_path, None)
    assert ScaledCostModel(base=old, bandwidth_factor=4.0).time_ns(
        "all_reduce", 16 * MB, 2) == pytest.approx(old.time_ns("all_reduce", 16 * MB, 2) / 4)


def test_a_wire_bound_transfer_takes_only_its_share_of_the_cores():
    # 2 cores over [0, 10): two compute threads and two transfers
    start, end = np.zeros(4), np.full(4, 10.0)
    host = np.zeros(4, dtype=np.int64)
    cores = np.array([2])
    # CPU-bound transfers (share 1): 4 busy on 2 cores, everything at half speed
    assert slowdown(start, end, host, cores).tolist() == pytest.approx([2.0] * 4)
    # wire-bound transfers (share 0.25): busy 2.5 -> compute 1.25; only a quarter of each
    # transfer is CPU work, and only that part runs slower, among the others' 2.25 busy
    # threads and itself: (2.25 + 1) / 2 = 1.625 -> 1 + 0.25 * 0.625
    got = slowdown(start, end, host, cores, np.array([1.0, 1.0, 0.25, 0.25]))
    assert got.tolist() == pytest.approx([1.25, 1.25, 1.15625, 1.15625])
    # more CPU work: share 0.8, busy 3.6 -> (2.8 + 1) / 2 = 1.9 -> 1 + 0.8 * 0.9
    got = slowdown(start, end, host, cores, np.array([1.0, 1.0, 0.8, 0.8]))
    assert got.tolist() == pytest.approx([1.8, 1.8, 1.72, 1.72])
    # no sharing at all when everything fits: one compute thread, one light transfer
    got = slowdown(start[:2], end[:2], host[:2], cores, np.array([1.0, 0.25]))
    assert got.tolist() == pytest.approx([1.0, 1.0])


def _two_rank_overlap():
    """A compute op on rank 0 beside a transfer on rank 1, both [0, 20), one host with one
    core."""
    g = make_graph(lanes=[(0, "cpu"), (1, "cpu")], lane=[0, 1], dur=[20, 20], start=[0, 0],
                   edges=[], kind=[NodeKind.COMPUTE, NodeKind.COMM])
    return g, HostCores(host_of_rank=np.array([0, 0]), cores=np.array([1]), names=["a"])


def test_compute_beside_a_wire_bound_transfer_is_hardly_deflated():
    """Measured durations are deflated by the sharing they had: with the transfer counted
    as a full thread the compute's own work is taken as 10 (half of 20), with share 0.1
    as 20 / 1.1."""
    g, hc = _two_rank_overlap()
    s, e = g.start_ns, g.start_ns + g.dur_ns
    full = slowdown(s, e, np.array([0, 0]), hc.cores)
    light = slowdown(s, e, np.array([0, 0]), hc.cores, np.array([1.0, 0.1]))
    assert full.tolist() == pytest.approx([2.0, 2.0])
    assert light.tolist() == pytest.approx([1.1, 1.1])
    # the compute alone (the transfer moved away) runs at its own speed: 20 / 1.1
    res = apply_contention(graph=g, dur_ns=np.array([20, 20]), base_slowdown=light, hc=hc,
                           share=np.array([1.0, 0.1]),
                           schedule=lambda d: schedule(with_durations(g, d)))
    assert res.dur_ns.tolist() == [20, 20]  # unchanged graph: a fixed point


def test_a_kept_transfer_made_faster_takes_a_larger_share(tmp_path):
    """bandwidth=2x halves a kept transfer's time: the same CPU work in half the time."""
    g, _ = _two_rank_overlap()
    model = _model(tmp_path, {MB: 0.2, 4 * MB: 0.2, 16 * MB: 0.2})
    g = dataclasses.replace(g, bytes=np.array([0, 4 * MB]), names=["op", "gloo:all_reduce"])

    class Run:
        manifest = None

    cs = CoreSharing(Run(), g, g.start_ns, g.start_ns + g.dur_ns, comm_model=model)
    assert cs.base_share.tolist() == pytest.approx([1.0, 0.2])
    assert any("0.20-0.20 of a core" in n for n in cs.notes)
    faster = with_durations(g, np.array([20, 10]))
    assert cs.variant_shares(faster, np.array([0, 1])).tolist() == pytest.approx([1.0, 0.4])
    # a transfer a what-if created has the calibrated share at its size
    assert cs.variant_shares(faster, np.array([0, -1])).tolist() == pytest.approx([1.0, 0.2])


def test_transfers_side_by_side_share_the_link():
    """Two transfers over [0, 10) on one host: each keeping the link busy all the time
    (link share 1) takes twice as long beside the other, 0.75 takes 1.5x, 0.5 none; the
    compute beside them is not on the wire."""
    start, end = np.zeros(3), np.full(3, 10.0)
    host, cores = np.zeros(3, dtype=np.int64), np.array([8])
    share = np.array([1.0, 0.1, 0.1])
    for link, want in ((1.0, 2.0), (0.75, 1.5), (0.5, 1.0)):
        got = slowdown(start, end, host, cores, share, np.array([0.0, link, link]))
        assert got.tolist() == pytest.approx([1.0, want, want])


def test_link_share_comes_from_two_transfers_timed_side_by_side(tmp_path):
    """A pair that took 1.8x one call, on a host whose cores the pair does not saturate,
    keeps the link busy 0.9 of the time; without pair timings there is no link share."""
    raw = _raw({"all_reduce": (0.0, 500e6)}, [MB, 16 * MB])
    raw["cpu_cores"] = 8
    for m in raw["measurements"]:
        t = m["per_rank_ns"][0][0]
        m["per_rank_cpu_ns"] = [[int(0.2 * t)] * m["iters"]] * 2
        m["per_rank_pair_ns"] = [[int(1.8 * t)] * m["iters"], [int(1.8 * t) + 5] * m["iters"]]
    path = tmp_path / "pair.json"
    write_comm_model(build_comm_model(raw), path)
    model = load_comm_model(path)
    assert model.link_share("all_reduce", 4 * MB) == pytest.approx(0.9, rel=1e-3)
    assert _model(tmp_path, {MB: 0.2, 4 * MB: 0.2, 16 * MB: 0.2}).link_share(
        "all_reduce", MB) is None
    # on 1 core, two ranks' CPU-bound transfers (share 1) explain a 2x pair by sharing
    # the cores: 0.5, two of them side by side fit on the link (no link slowdown)
    raw["cpu_cores"] = 1
    for m in raw["measurements"]:
        t = m["per_rank_ns"][0][0]
        m["per_rank_cpu_ns"] = [[t] * m["iters"]] * 2
        m["per_rank_pair_ns"] = [[2 * t] * m["iters"]] * 2
    write_comm_model(build_comm_model(raw), path)
    assert load_comm_model(path).link_share("all_reduce", MB) == pytest.approx(0.5)


def test_one_collective_loads_the_link_once_whatever_its_ranks():
    """Both ranks' nodes of one all-reduce (same coll_id, one host) carry half of its link
    share each: alone, it is not slowed; two collectives side by side are (2x)."""
    from replay.interference.cores import link_shares

    class Model:
        def link_share(self, coll, nbytes):
            return 1.0

    g = make_graph(lanes=[(0, "cpu"), (1, "cpu")], lane=[0, 1, 0, 1], dur=[10] * 4,
                   edges=[], kind=[NodeKind.COMM] * 4, coll=[7, 7, 8, 8])
    link, _ = link_shares(g, Model(), np.zeros(4, dtype=np.int64))
    assert link.tolist() == pytest.approx([0.5] * 4)
    start, end = np.zeros(4), np.full(4, 10.0)
    share = np.full(4, 0.1)
    host, cores = np.zeros(4, dtype=np.int64), np.array([8])
    alone = slowdown(start[:2], end[:2], host[:2], cores, share[:2], link[:2])
    assert alone.tolist() == pytest.approx([1.0, 1.0])
    assert slowdown(start, end, host, cores, share, link).tolist() == pytest.approx([2.0] * 4)


def test_a_share_above_the_hosts_cores_is_capped(tmp_path):
    """A short call can record more process CPU time than its wall time allows (other
    threads around it): the share is at most the cores the rank may run on."""
    raw = _raw({"all_reduce": (0.0, 500e6)}, [MB])
    raw["cpu_cores"] = 2
    for m in raw["measurements"]:
        m["per_rank_cpu_ns"] = [[8 * m["per_rank_ns"][0][0]] * m["iters"]] * 2
    write_comm_model(build_comm_model(raw), tmp_path / "c.json")
    assert load_comm_model(tmp_path / "c.json").cpu_share("all_reduce", MB) == 2.0


def test_ranks_pinned_apart_do_not_explain_a_slow_pair_by_sharing_each_others_cores(
        tmp_path):
    """Each rank on one core (``cpu_sets`` [0] and [1]), transfers keeping half a core
    busy, a pair 1.8x one call: on its own core a rank's two transfers slow each other
    1.25x, so the link explains the rest (0.72). Had both ranks shared one core (no
    sets recorded), the cores would explain more (1.75x) and the link less (0.643)."""
    raw = _raw({"all_reduce": (0.0, 500e6)}, [MB, 16 * MB])
    raw["cpu_cores"] = 1
    for m in raw["measurements"]:
        t = m["per_rank_ns"][0][0]
        m["per_rank_cpu_ns"] = [[int(0.5 * t)] * m["iters"]] * 2
        m["per_rank_pair_ns"] = [[int(1.8 * t)] * m["iters"]] * 2
    path = tmp_path / "pinned.json"
    write_comm_model(build_comm_model(raw), path)
    assert load_comm_model(path).link_share("all_reduce", MB) == pytest.approx(0.643, abs=1e-3)
    raw["cpu_sets"] = [[0], [1]]
    write_comm_model(build_comm_model(raw), path)
    assert load_comm_model(path).link_share("all_reduce", MB) == pytest.approx(0.72, abs=1e-3)
