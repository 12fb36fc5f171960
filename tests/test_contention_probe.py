"""A transfer's sensitivity to busy cores (:mod:`replay.contention_probe`): the
calibration's probe summarized, inverted into ``k`` by the core model's own formula, and
used by core sharing. Hand-computed answers on hand-built inputs."""

from __future__ import annotations

import numpy as np
import pytest
from test_calibration import _raw

from replay.calibration import build_comm_model, load_comm_model, write_comm_model
from replay.contention_probe import sensitivity, summarize_contention, summarize_probe
from replay.interference.cores import slowdown

MB = 1 << 20


def _probe(quiet_ms, busy_ms, reps=5, nbytes=MB):
    ns = lambda per_rank: [[int(v * 1e6)] * reps for v in per_rank]  # noqa: E731
    return {"collective": "all_reduce", "bytes": nbytes, "per_rank_quiet_ns": ns(quiet_ms),
            "per_rank_busy_ns": ns(busy_ms)}


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


def test_the_sensitivity_makes_the_core_models_formula_give_the_measured_ratio():
    """2 ranks on 2 cores, share 0.2: in the probe each rank's computing thread and its
    transfer make 2.4 busy threads; the transfer meets 2.4 / 2 + 0.8 / 2 = 1.6, of which
    the computing threads and its own make 3 / 2 = 1.5. Its CPU part alone gives
    1 + 0.2 * 0.6 = 1.12, so a ratio of 1.12 is k = share (and a smaller one is held at
    share); a ratio of 1.6 puts the other 0.48 on the computing threads' 0.5:
    k = 0.2 + 0.48 / 0.5 = 1.16."""
    entry = {"bytes": MB, "ratio": 1.6}
    assert sensitivity(entry, 0.2, 2, 2) == pytest.approx(1.16)
    assert sensitivity({**entry, "ratio": 1.12}, 0.2, 2, 2) == pytest.approx(0.2)
    assert sensitivity({**entry, "ratio": 1.01}, 0.2, 2, 2) == pytest.approx(0.2)
    assert sensitivity({**entry, "ratio": 4.0}, 0.2, 2, 2) == pytest.approx(0.2 + 2.88 / 0.5)
    assert sensitivity({**entry, "ratio": 99.0}, 0.2, 2, 2) == pytest.approx(10.0)
    assert sensitivity(None, 0.2, 2, 2) is None
    # a host with cores to spare: nothing in the probe shares a core, nothing to invert
    assert sensitivity(entry, 0.2, 2, 64) is None
    # checked against the model's own slowdown: a transfer with k under the probe's load
    start, end = np.zeros(4), np.full(4, 10.0)
    transfer = np.array([False, False, True, True])
    got = slowdown(start, end, np.zeros(4, dtype=np.int64), np.array([2]),
                   np.array([1.0, 1.0, 0.2, 0.2]), sensitivity=np.array([0, 0, 1.16, 1.16]),
                   transfer=transfer)
    assert got[2:].tolist() == pytest.approx([1.6, 1.6])
    # compute is slowed by the transfers' CPU share only, whatever their sensitivity
    assert got[:2].tolist() == pytest.approx([1.2, 1.2])


def test_the_sensitivity_weighs_computing_threads_not_other_transfers():
    """Four transfers of share 0.5 side by side on 2 cores (two buckets of each of two
    ranks after the backward), k = 3: they make 2 busy threads, each meets 2 / 2 + 0.5 / 2
    = 1.25, but no computing thread holds a core while their steps wait for one, so they
    slow by their CPU part only: 1 + 0.5 * 0.25 = 1.125 (with every thread counted as
    computing, as before: 1 + 3 * 0.25 = 1.75). Beside two computing threads the same
    transfer meets (2 + 1) / 2 = 1.5 of them: 1 + 0.5 * met + 2.5 * 0.5."""
    start, end = np.zeros(4), np.full(4, 10.0)
    pool, cores = np.zeros(4, dtype=np.int64), np.array([2])
    share, k = np.full(4, 0.5), np.full(4, 3.0)
    alone = slowdown(start, end, pool, cores, share, sensitivity=k,
                     transfer=np.ones(4, dtype=bool))
    assert alone.tolist() == pytest.approx([1.125] * 4)
    assert slowdown(start, end, pool, cores, share, sensitivity=k).tolist() == pytest.approx(
        [1.75] * 4)
    share2, k2 = np.array([1.0, 1.0, 0.5, 0.5]), np.array([0, 0, 3.0, 3.0])
    beside = slowdown(start, end, pool, cores, share2, sensitivity=k2,
                      transfer=np.array([False, False, True, True]))
    met = (2 + 1) / 2 + 0.5 / 2  # busy 3 on 2 cores, plus the idle half of its own thread
    assert beside[2:].tolist() == pytest.approx([1 + 0.5 * (met - 1) + 2.5 * 0.5] * 2)


def test_calibrate_writes_the_probe_and_the_model_reads_k(tmp_path):
    raw = _raw({"all_reduce": (0.0, 500e6)}, [MB, 4 * MB])
    for m in raw["measurements"]:  # share 0.2 of a core
        m["per_rank_cpu_ns"] = [[int(0.2 * m["per_rank_ns"][0][0])] * m["iters"]] * 2
    raw["cpu_cores"] = 2
    # 1 MB: ratio 1.6 (k 1.16); 4 MB: ratio 1.12, the CPU part alone (k = share, 0.2)
    raw["contention"] = [_probe([8.0, 8.0], [12.8, 12.8]),
                         _probe([32.0, 32.0], [35.84, 35.84], nbytes=4 * MB)]
    model = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "comm.json"))
    assert [e["ratio"] for e in model.doc["contention"]] == pytest.approx([1.6, 1.12])
    assert model.contention_sensitivity(MB) == pytest.approx(1.16)
    assert model.contention_sensitivity(4 * MB) == pytest.approx(0.2)
    # in log size between the probed sizes, the nearest one's outside them
    assert model.contention_sensitivity(2 * MB) == pytest.approx(0.68)
    assert model.contention_sensitivity(64 * 1024) == pytest.approx(1.16)
    assert model.contention_sensitivity(64 * MB) == pytest.approx(0.2)
    assert any(n.startswith("contention: an all-reduce of 1 MB took 12.8/12.8 ms")
               for n in model.notes)
    # a file with one probe (a dict, as first written) reads as one size
    model.doc["contention"] = model.doc["contention"][0]
    assert model.contention_sensitivity(16 * MB) == pytest.approx(1.16)
    del raw["contention"]
    old = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "old.json"))
    assert old.contention_sensitivity(MB) is None
