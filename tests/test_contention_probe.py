"""The contended chain (:mod:`replay.contention_probe`): the calibration's probe
summarized, fitted into ``C(bytes, met) = (a + b * bytes) * (met - 1)``, and used by core
sharing as the least time a transfer takes beside busy cores. Hand-computed answers on
hand-built inputs."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from test_calibration import _raw
from test_replay_engine import make_graph

from replay.calibration import build_comm_model, load_comm_model, write_comm_model
from replay.contention_probe import (
    BOUND_MARGIN,
    fit_chain,
    probe_met,
    summarize_contention,
    summarize_probe,
)
from replay.engine import schedule
from replay.interference.cores import (
    CoreSharing,
    _measured_contention,
    run_chain_scale,
    slowdown,
)
from tracekit.graph.edit import with_durations
from tracekit.graph.model import NodeKind

KB, MB = 1 << 10, 1 << 20


def _probe(quiet_ms, busy_ms, reps=5, nbytes=MB):
    ns = lambda per_rank: [[int(v * 1e6)] * reps for v in per_rank]  # noqa: E731
    return {"collective": "all_reduce", "bytes": nbytes, "per_rank_quiet_ns": ns(quiet_ms),
            "per_rank_busy_ns": ns(busy_ms)}


def _entry(quiet, busy, nbytes):
    return summarize_probe(_probe([quiet] * 2, [busy] * 2, nbytes=nbytes))


def test_the_probe_is_each_ranks_median_and_their_mean_ratio():
    entry = summarize_probe(_probe([8.0, 8.0], [10.0, 14.0]))
    assert entry["quiet_ms"] == [8.0, 8.0] and entry["busy_ms"] == [10.0, 14.0]
    assert entry["ratio"] == pytest.approx((10 / 8 + 14 / 8) / 2)
    assert summarize_probe({"per_rank_quiet_ns": "slow"}) is None
    # the sizes come out in order; damaged ones are left out; none at all is None
    both = summarize_contention([_probe([8.0] * 2, [9.0] * 2, nbytes=8 * MB), {},
                                 _probe([8.0] * 2, [10.0] * 2)])
    assert [e["bytes"] for e in both] == [MB, 8 * MB]
    assert summarize_contention({}) is None and summarize_contention([]) is None


def test_the_chain_is_fitted_on_the_sizes_their_cpu_part_does_not_explain():
    """2 ranks on 2 cores, share 0.2: each rank's computing thread and its transfer make
    2.4 busy threads, the transfer meets 2.4 / 2 + 0.8 / 2 = 1.6. 256 KB took 12.2 ms and
    1 MB 12.8 ms beside compute (their CPU part explains 1.12x: chain bound), per unit of
    load 20.33 and 21.33 ms: a = 20 ms, b = 1 ms per 0.75 MB. 4 MB lost what its CPU
    part says (wire bound): it only caps b."""
    assert probe_met(0.2, 2, 2) == pytest.approx(1.6)
    entries = [_entry(2.0, 12.2, MB // 4), _entry(8.0, 12.8, MB), _entry(32.0, 36.0, 4 * MB)]
    chain = fit_chain(entries, [0.2] * 3, 2, 2)
    assert chain.bound_bytes == (MB // 4, MB)
    assert chain.fixed_ns == pytest.approx(20e6, rel=1e-6)
    assert chain.per_byte_ns * 0.75 * MB == pytest.approx(1e6, rel=1e-6)
    assert chain.floor_ns(MB, 1.6) == pytest.approx(12.8e6, rel=1e-6)
    assert chain.floor_ns(MB, 1.0) == 0.0  # cores with room to spare: no chain to wait on
    # a wire-bound size smaller than the line says caps its slope: 4 MB took 13.2 ms where
    # its CPU part explains 13.44 (12 * 1.12): the chain took at most 22 ms per load there
    capped = fit_chain([*entries[:2], _entry(12.0, 13.2, 4 * MB)], [0.2] * 3, 2, 2)
    assert capped.per_load_ns(4 * MB) == pytest.approx(22e6, rel=1e-6)
    # one chain-bound size: a constant chain
    one = fit_chain(entries[1:], [0.2] * 2, 2, 2)
    assert one.per_load_ns(16 * MB) == pytest.approx(one.per_load_ns(MB))
    # nothing beyond the CPU part (within the probe's noise): no chain
    quiet = fit_chain([_entry(8.0, 8.96 * (1 + BOUND_MARGIN) - 0.01, MB)], [0.2], 2, 2)
    assert quiet.bound_bytes == () and quiet.floor_ns(MB, 1.6) == 0.0
    # a host with cores to spare: nothing in the probe shared a core, nothing to fit
    assert fit_chain(entries, [0.2] * 3, 2, 64) is None
    assert fit_chain(None, [], 2, 2) is None


def test_a_transfer_takes_at_least_its_chain_and_compute_only_its_cpu_share():
    start, end = np.zeros(4), np.full(4, 10e6)
    pool, cores = np.zeros(4, dtype=np.int64), np.array([2])
    share = np.array([1.0, 1.0, 0.2, 0.2])
    per_load = np.array([0.0, 0.0, 21.33e6, 21.33e6])
    got = slowdown(start, end, pool, cores, share, chain_per_load=per_load,
                   base_ns=np.full(4, 8e6))
    # the transfers meet 1.6: chain 12.8 ms over their 8 ms alone; the CPU part's 1.12 less
    assert got[2:].tolist() == pytest.approx([12.8 / 8] * 2, rel=1e-3)
    assert got[:2].tolist() == pytest.approx([1.2, 1.2])
    # a transfer whose wire path is longer than the chain is slowed by its CPU part only
    got = slowdown(start, end, pool, cores, share, chain_per_load=per_load,
                   base_ns=np.full(4, 40e6))
    assert got[2:].tolist() == pytest.approx([1.12, 1.12])


def test_a_measured_duration_is_split_into_contention_free_time_and_chain():
    dur = np.array([12e6, 40e6, 12e6])
    cpu = np.array([1.1, 1.1, 1.1])
    floor = np.array([11.5e6, 11.5e6, 11.5e6])
    busy = np.array([8e6, 8e6, np.nan])
    slow, scale = _measured_contention(dur, cpu, floor, busy)
    # chain bound: alone is the calibrated 8 ms, the chain scaled to give 12 ms
    assert slow[0] == pytest.approx(1.5) and scale[0] == pytest.approx(12 / 11.5)
    # the wire path is longer than the chain: its CPU part only
    assert slow[1] == pytest.approx(1.1) and scale[1] == 1.0
    # bound but not priced by the calibration: what the CPU part leaves
    assert slow[2] == pytest.approx(1.1)


def _model(tmp_path, contention):
    """A calibration of 125 MB/s (8.4 ms per MB on 2 ranks) whose transfers keep 0.2 of
    a core busy, 2 ranks on 2 cores, with ``contention`` probes."""
    raw = _raw({"all_reduce": (0.0, 125e6)}, [MB // 4, MB, 4 * MB, 16 * MB])
    for m in raw["measurements"]:
        m["per_rank_cpu_ns"] = [[int(0.2 * m["per_rank_ns"][0][0])] * m["iters"]] * 2
    raw["cpu_cores"] = 2
    if contention:
        raw["contention"] = contention
    return load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "comm.json"))


def test_calibrate_writes_the_probe_and_the_model_reads_the_chain(tmp_path):
    model = _model(tmp_path, [_probe([8.0, 8.0], [12.8, 12.8]),
                              _probe([2.0, 2.0], [12.2, 12.2], nbytes=MB // 4)])
    assert [e["bytes"] for e in model.doc["contention"]] == [MB // 4, MB]
    chain = model.contended_chain()
    assert chain.bound_bytes == (MB // 4, MB)
    assert chain.floor_ns(MB, 1.6) == pytest.approx(12.8e6, rel=1e-3)
    assert any(n.startswith("contention: all-reduces beside compute") and "0.25 MB" in n
               for n in model.notes)
    # a file with one probe (a dict, as first written) reads as one size
    model.doc["contention"] = model.doc["contention"][1]
    assert model.contended_chain().bound_bytes == (MB,)
    assert _model(tmp_path, None).contended_chain() is None


def _overlapped():
    """Two ranks on one 2-core host; each computes for 30 ms while its 1 MB all-reduce
    (one collective) runs its measured 12.8 ms beside it."""
    g = make_graph(lanes=[(0, "cpu"), (0, "comm"), (1, "cpu"), (1, "comm")],
                   lane=[0, 1, 2, 3], dur=[30_000_000, 12_800_000] * 2, start=[0] * 4,
                   edges=[], coll=[-1, 0, -1, 0],
                   kind=[NodeKind.COMPUTE, NodeKind.COMM] * 2)
    g = dataclasses.replace(g, bytes=np.array([-1, MB, -1, MB]),
                            names=["mm", "gloo:all_reduce", "mm", "gloo:all_reduce"])
    run = SimpleNamespace(manifest=SimpleNamespace(hosts={0: "h", 1: "h"},
                                                   cpu_cores={0: 2, 1: 2}, cpu_sets={}))
    return g, run


def test_core_sharing_keeps_a_chain_bound_transfer_at_its_chain(tmp_path):
    """The run's all-reduce took 12.8 ms beside compute where the busy link takes 8.4:
    the chain explains it. An unchanged variant gives it back exactly; a twice faster
    wire leaves it at its chain (a ratio model would halve it); with the compute gone
    from beside it, it takes its busy-link time."""
    model = _model(tmp_path, [_probe([8.4, 8.4], [12.8, 12.8]),
                              _probe([2.1, 2.1], [12.2, 12.2], nbytes=MB // 4)])
    g, run = _overlapped()
    cs = CoreSharing(run, g, g.start_ns, g.start_ns + g.dur_ns, comm_model=model)
    busy_link = model.time_ns("all_reduce", MB, 2)
    assert cs.base_slowdown[1] == pytest.approx(12.8e6 / busy_link)
    ident = np.arange(g.n_nodes)
    sched = lambda d: schedule(with_durations(g, d))  # noqa: E731
    assert cs.retime(g, ident, sched).dur_ns.tolist() == g.dur_ns.tolist()
    faster = with_durations(g, np.array([30_000_000, 6_400_000] * 2))
    got = cs.retime(faster, ident, lambda d: schedule(with_durations(faster, d))).dur_ns
    # at least its chain (the same CPU work in half the wire time: share 0.4, it meets 1.7
    # rather than 1.6, so its chain is 12.8 * 0.7 / 0.6)
    assert got[1] == pytest.approx(12.8e6 * 0.7 / 0.6, rel=0.02)
    alone = with_durations(g, np.array([100_000, 12_800_000] * 2))
    got = cs.retime(alone, ident, lambda d: schedule(with_durations(alone, d))).dur_ns
    assert got[1] == pytest.approx(busy_link, rel=0.02)
    # without a probe the same run is read by the CPU part alone: no chain to keep
    plain = CoreSharing(run, g, g.start_ns, g.start_ns + g.dur_ns,
                        comm_model=_model(tmp_path, None))
    got = plain.retime(faster, ident, lambda d: schedule(with_durations(faster, d))).dur_ns
    assert got[1] < 8e6


def test_a_collective_of_fewer_ring_steps_has_a_shorter_chain(tmp_path):
    """The probe timed all-reduces (2 ring steps on 2 ranks); an all-gather is one step,
    each waiting for a core as often: half the chain. A name with no cost formula keeps
    the all-reduce's."""
    model = _model(tmp_path, [_probe([8.4, 8.4], [12.8, 12.8]),
                              _probe([2.1, 2.1], [12.2, 12.2], nbytes=MB // 4)])
    g, run = _overlapped()
    g = dataclasses.replace(g, names=["mm", "gloo:all_gather", "mm", "mystery_op"])
    cs = CoreSharing(run, g, g.start_ns, g.start_ns + g.dur_ns, comm_model=model)
    per_load = cs.chain_per_load(g)
    chain = model.contended_chain().per_load_ns(MB)
    assert per_load.tolist() == pytest.approx([0.0, chain / 2, 0.0, chain])


def test_the_runs_own_chain_bound_transfers_rescale_the_chain():
    """Three transfers the probe's chain says were chain bound (floor 10 ms over a 3 ms
    busy link slowed 1.7x) took 5, 6 and 4 ms: the chain is half the probe's beside this
    job's work. A wire-bound one (busy link 30 ms) and one the model cannot price say
    nothing; with fewer than three the probe's chain stands."""
    floor = np.array([10e6, 10e6, 10e6, 10e6, 10e6])
    busy = np.array([3e6, 3e6, 3e6, 30e6, np.nan])
    cpu = np.full(5, 1.7)
    dur = np.array([5e6, 6e6, 4e6, 40e6, 1e6])
    assert run_chain_scale(dur, cpu, floor, busy) == (pytest.approx(0.5), 3)
    assert run_chain_scale(dur[:2], cpu[:2], floor[:2], busy[:2]) == (1.0, 2)
    # a kept transfer that was not chain bound takes the run's scale, at most so far that
    # its chain stays below its measured time; a bound one keeps its own
    _, scale = _measured_contention(np.array([40e6, 20e6, 5e6]), np.full(3, 1.1),
                                    np.array([10e6, 15e6, 10e6]), np.full(3, 3e6),
                                    run_scale=1.5)
    assert scale.tolist() == pytest.approx([1.5, 20 / 15, 0.5])
