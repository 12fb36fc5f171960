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
    transfer make 2.4 busy threads; the transfer meets 2.4 / 2 + 0.8 / 2 = 1.6. A ratio of
    1.6 is k = 1; the CPU part alone would give 1 + 0.2 * 0.6 = 1.12, so a ratio of 1.12
    is k = share, and a smaller one is held at share."""
    entry = {"bytes": MB, "ratio": 1.6}
    assert sensitivity(entry, 0.2, 2, 2) == pytest.approx(1.0)
    assert sensitivity({**entry, "ratio": 1.12}, 0.2, 2, 2) == pytest.approx(0.2)
    assert sensitivity({**entry, "ratio": 1.01}, 0.2, 2, 2) == pytest.approx(0.2)
    assert sensitivity({**entry, "ratio": 4.0}, 0.2, 2, 2) == pytest.approx(3 / 0.6)
    assert sensitivity({**entry, "ratio": 99.0}, 0.2, 2, 2) == pytest.approx(10.0)
    assert sensitivity(None, 0.2, 2, 2) is None
    # a host with cores to spare: nothing in the probe shares a core, nothing to invert
    assert sensitivity(entry, 0.2, 2, 64) is None
    # checked against the model's own slowdown: a transfer with k under the probe's load
    start, end = np.zeros(4), np.full(4, 10.0)
    got = slowdown(start, end, np.zeros(4, dtype=np.int64), np.array([2]),
                   np.array([1.0, 1.0, 0.2, 0.2]), sensitivity=np.array([0, 0, 1.0, 1.0]))
    assert got[2:].tolist() == pytest.approx([1.6, 1.6])
    # compute is slowed by the transfers' CPU share only, whatever their sensitivity
    assert got[:2].tolist() == pytest.approx([1.2, 1.2])


def test_calibrate_writes_the_probe_and_the_model_reads_k(tmp_path):
    raw = _raw({"all_reduce": (0.0, 500e6)}, [MB, 4 * MB])
    for m in raw["measurements"]:  # share 0.2 of a core
        m["per_rank_cpu_ns"] = [[int(0.2 * m["per_rank_ns"][0][0])] * m["iters"]] * 2
    raw["cpu_cores"] = 2
    # 1 MB: ratio 1.6 (k 1); 4 MB: ratio 1.12, the CPU part alone (k = share, 0.2)
    raw["contention"] = [_probe([8.0, 8.0], [12.8, 12.8]),
                         _probe([32.0, 32.0], [35.84, 35.84], nbytes=4 * MB)]
    model = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "comm.json"))
    assert [e["ratio"] for e in model.doc["contention"]] == pytest.approx([1.6, 1.12])
    assert model.contention_sensitivity(MB) == pytest.approx(1.0)
    assert model.contention_sensitivity(4 * MB) == pytest.approx(0.2)
    # in log size between the probed sizes, the nearest one's outside them
    assert model.contention_sensitivity(2 * MB) == pytest.approx(0.6)
    assert model.contention_sensitivity(64 * 1024) == pytest.approx(1.0)
    assert model.contention_sensitivity(64 * MB) == pytest.approx(0.2)
    assert any(n.startswith("contention: an all-reduce of 1 MB took 12.8/12.8 ms")
               for n in model.notes)
    # a file with one probe (a dict, as first written) reads as one size
    model.doc["contention"] = model.doc["contention"][0]
    assert model.contention_sensitivity(16 * MB) == pytest.approx(1.0)
    del raw["contention"]
    old = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "old.json"))
    assert old.contention_sensitivity(MB) is None
