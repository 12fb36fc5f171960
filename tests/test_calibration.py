"""Calibration: fitting the worker's measurements, the comm.json model, and a real run."""

from __future__ import annotations

import json
import math

import pytest

from replay.calibration import (
    build_comm_model,
    calibration_table,
    load_comm_model,
    parse_sizes,
    run_calibration,
    write_comm_model,
)
from replay.cost_model import comm_volume
from tracekit.errors import TracekitError

KB, MB = 1 << 10, 1 << 20


def _raw(curves: dict[str, tuple[float, float]], sizes, world=2, iters=5) -> dict:
    """Worker output for collectives whose transfer follows alpha/beta exactly; rank 1
    always waits 1 ms longer (it left the barrier first)."""
    ms = []
    for coll, (alpha, beta) in curves.items():
        for b in sizes:
            v = comm_volume(coll, b, world)
            t = int(v.steps * alpha + v.moved_bytes / beta * 1e9)
            ms.append({"collective": coll, "bytes": b, "iters": iters,
                       "per_rank_ns": [[t] * iters, [t + 1_000_000] * iters]})
    return {"format": "tracekit-calibration-raw", "version": 1, "backend": "gloo",
            "world_size": world, "device": "cpu", "torch": "2.13.0", "hosts": ["a", "a"],
            "measurements": ms}


def test_fitted_model_reproduces_measurements_and_interpolates(tmp_path):
    sizes = [KB, 64 * KB, MB, 16 * MB]
    raw = _raw({"all_reduce": (100_000, 1e9), "reduce_scatter": (400_000, 0.2e9)}, sizes)
    path = write_comm_model(build_comm_model(raw, command=["torchrun"]), tmp_path / "comm.json")
    model = load_comm_model(path)
    for b in sizes:  # exact at every measured size; the waiting rank is ignored
        expected = 2 * 100_000 + b / 1e9 * 1e9
        assert model.time_ns("all_reduce", b, 2) == pytest.approx(expected, rel=1e-6)
    mid = 8 * MB  # a straight line between measured sizes
    assert model.time_ns("all_reduce", mid, 2) == pytest.approx(2 * 100_000 + mid, rel=1e-6)
    # beyond the measured range, the last segment extends
    assert model.time_ns("all_reduce", 64 * MB, 2) == pytest.approx(2e5 + 64 * MB, rel=1e-6)
    # another group size follows the ring formula with the calibrated alpha/beta
    assert model.time_ns("all_reduce", 16 * MB, 8) == pytest.approx(
        14 * 100_000 + 1.75 * 16 * MB, rel=1e-6)
    assert model.fit_for("reduce_scatter", MB).source.startswith("calibrated")
    bc = model.fit_for("broadcast", MB)
    assert bc.source == "extrapolated from calibrated all_reduce by formula"


def test_issue_time_is_host_work_before_the_transfer(tmp_path):
    """Each call's issue time (the calling thread until the asynchronous call returned:
    gloo's reduce-scatter clones its input there) is not transfer: the transfer is the
    rest of the call. ``issue_ns`` interpolates linearly in size between the measured
    sizes and grows in proportion beyond them."""
    raw = _raw({"all_reduce": (100_000, 1e9), "reduce_scatter": (400_000, 0.2e9)}, [MB, 4 * MB])
    for m in raw["measurements"]:
        per_call = 2_000 + m["bytes"] // 1000 if m["collective"] == "reduce_scatter" else 2_000
        m["per_rank_issue_ns"] = [[per_call] * m["iters"]] * 2
    path = write_comm_model(build_comm_model(raw), tmp_path / "comm.json")
    model = load_comm_model(path)
    for b in (MB, 4 * MB):
        v = comm_volume("reduce_scatter", b, 2)
        wall = int(v.steps * 400_000 + v.moved_bytes / 0.2e9 * 1e9)
        assert model.time_ns("reduce_scatter", b, 2) == pytest.approx(wall - 2_000 - b // 1000)
        assert model.issue_ns("reduce_scatter", b) == pytest.approx(2_000 + b // 1000)
    assert model.issue_ns("reduce_scatter", 2.5 * MB) == pytest.approx(
        2_000 + (MB // 1000 + 4 * MB // 1000) / 2)
    assert model.issue_ns("reduce_scatter", 8 * MB) == pytest.approx(2 * (2_000 + 4 * MB // 1000))
    assert model.issue_ns("all_reduce", 16 * KB) == pytest.approx(2_000)
    # a comm.json written before issue times were recorded: unknown, not zero
    old = _raw({"all_reduce": (100_000, 1e9)}, [MB])
    assert load_comm_model(write_comm_model(build_comm_model(old), tmp_path / "old.json")
                           ).issue_ns("all_reduce", MB) is None


def test_fsdp_hook_times_pass_through_the_comm_model(tmp_path):
    """The worker's ``fsdp_hooks`` reach comm.json and the model; an older file (or a
    damaged entry) has none: unknown, not zero."""
    raw = _raw({"all_reduce": (100_000, 1e9)}, [MB])
    raw["fsdp_hooks"] = {"units": 8, "forward_ns": 520_000, "backward_ns": 760_000,
                         "per_rank": [{"forward_ns": 500_000, "backward_ns": 700_000},
                                      {"forward_ns": 540_000, "backward_ns": 820_000}]}
    model = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "comm.json"))
    assert model.fsdp_hook_ns() == {"forward": 520_000, "backward": 760_000}
    del raw["fsdp_hooks"]
    assert load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "old.json")
                           ).fsdp_hook_ns() is None
    raw["fsdp_hooks"] = {"units": 8, "forward_ns": "fast"}
    assert load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "bad.json")
                           ).fsdp_hook_ns() is None


def test_last_rank_time_comes_from_the_ranks_end_times(tmp_path):
    """Every rank's end time on one clock says when the last rank had the result: from
    the last rank's issue (the transfer cannot start before) to the last rank's end. The
    docstring's figures, then a model: ``last_ratio`` interpolates in log size and is at
    least 1; without end times, or across hosts, it is unknown."""
    import numpy as np

    from replay.calibration_fit import _last_rank

    got = _last_rank(np.array([[9000, 9000], [8000, 8500]], float), np.zeros((2, 2)),
                     [[20000, 40000], [21000, 41500]], 8000)
    assert got == {"last_ns": 8250.0, "last_ratio": 1.03125}
    raw = _raw({"all_gather": (100_000, 1e9)}, [MB, 4 * MB], iters=3)
    for m in raw["measurements"]:  # rank 0 issues 1 ms later, rank 1 is done 2 ms later
        t0 = m["per_rank_ns"][0][0]
        m["per_rank_issue_ns"] = [[0] * 3] * 2
        m["per_rank_ns"] = [[t0] * 3, [t0 + 3_000_000] * 3]
        m["per_rank_end_ns"] = [[10**9 + k * 10**8 + t0 for k in range(3)],
                                [10**9 + k * 10**8 + t0 + 2_000_000 for k in range(3)]]
    model = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "comm.json"))
    for b in (MB, 4 * MB):
        t0 = model.time_ns("all_gather", b, 2)
        assert model.last_rank_ratio("all_gather", b) == pytest.approx((t0 + 2e6) / t0)
    lo, hi = (model.last_rank_ratio("all_gather", b) for b in (MB, 4 * MB))
    assert lo > model.last_rank_ratio("all_gather", 2 * MB) > hi
    assert model.last_rank_ratio("all_gather", 64 * MB) == pytest.approx(hi)
    raw["hosts"] = ["a", "b"]  # two clocks: end times cannot be compared
    assert load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "two.json")
                           ).last_rank_ratio("all_gather", MB) is None
    old = _raw({"all_gather": (100_000, 1e9)}, [MB])
    assert load_comm_model(write_comm_model(build_comm_model(old), tmp_path / "old.json")
                           ).last_rank_ratio("all_gather", MB) is None


def test_a_chain_of_blocking_calls_costs_its_mean_period(tmp_path):
    """Calls timed back to back (each waited for before the next) give ``chain_ns``, the
    mean period over calls and ranks (a tail counts in full: a chain pays it), and
    ``chain_ratio`` against the transfer; the model interpolates the ratio in log size;
    a file without chains answers None."""
    raw = _raw({"all_reduce": (100_000, 1e9)}, [MB, 4 * MB], iters=4)
    for m in raw["measurements"]:
        t = m["per_rank_ns"][0][0]
        m["per_rank_chain_ns"] = [[t, t, t, 5 * t], [t, t, t, 5 * t]]  # one call's tail
    doc = build_comm_model(raw)
    point = doc["collectives"]["all_reduce"]["points"][0]
    assert point["chain_ns"] == pytest.approx(2 * point["median_ns"])  # mean, not median
    assert point["chain_ratio"] == pytest.approx(2.0)
    model = load_comm_model(write_comm_model(doc, tmp_path / "comm.json"))
    assert model.chain_ratio("all_reduce", 2 * MB) == pytest.approx(2.0)
    assert model.chain_ratio("all_gather", MB) == pytest.approx(2.0)  # its reference's
    old = _raw({"all_reduce": (100_000, 1e9)}, [MB])
    assert load_comm_model(write_comm_model(build_comm_model(old), tmp_path / "old.json")
                           ).chain_ratio("all_reduce", MB) is None


def _credit(busy_ms, idle_ms):
    ms = lambda v: [int(x * 1e6) for x in v]  # noqa: E731
    # rank 1 left the barrier first and waited 1 ms longer: the fastest rank's time counts
    return {"collective": "all_reduce", "bytes": 8 * MB, "idle_s": 0.25,
            "per_rank_drained_ns": [ms(busy_ms), ms([b + 1 for b in busy_ms])],
            "per_rank_idle_ns": [ms(idle_ms), ms([i + 1 for i in idle_ms])]}


def test_the_links_burst_credit_is_the_idle_calls_saving(tmp_path):
    raw = _raw({"all_reduce": (100_000, 1e9)}, [MB])
    raw["link_credit"] = _credit([36.1, 35.8, 36.4, 36.0, 35.9], [34.2, 34.0, 34.3, 33.9, 34.1])
    model = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "comm.json"))
    credit = model.doc["link_credit"]
    # the median of what each idle call saved on the busy call before it
    assert credit["burst_s"] == pytest.approx(1.9 / 1e3)
    assert credit["busy_ms"] == pytest.approx(36.0) and not credit["lower_bound"]
    assert any("burst credit worth 1.9 ms" in n for n in model.notes)


def test_no_burst_credit_unless_idle_calls_win_more_pairs_than_chance(tmp_path):
    """Counted when a link without credit would win that many pairs once in 20 runs or
    less: of 10 pairs 9 (p = 0.011), not 8 (p = 0.055)."""
    from replay.link_credit import win_chance

    assert win_chance(9, 10) == pytest.approx(11 / 1024)
    assert win_chance(20, 30) < 0.05 < win_chance(19, 30)
    raw = _raw({"all_reduce": (100_000, 1e9)}, [MB])
    busy = [36.1, 35.8, 36.4, 36.0, 35.9] * 2
    idle = [34.2, 34.0, 34.3, 33.9, 34.1] * 2
    # one idle call slower than the busy one before it: 9 of 10 pairs still count
    raw["link_credit"] = _credit(busy, idle[:2] + [36.5] + idle[3:])
    got = build_comm_model(raw)["link_credit"]
    assert got["burst_s"] > 0 and (got["wins"], got["pairs"]) == (9, 10)
    # two: 8 of 10 is what a link without a bucket shows once in 18 runs
    raw["link_credit"] = _credit(busy, idle[:1] + [36.0, 36.5] + idle[3:])
    doc = build_comm_model(raw)
    assert doc["link_credit"]["burst_s"] == 0.0
    model = load_comm_model(write_comm_model(doc, tmp_path / "comm.json"))
    assert any(n.startswith("link: no burst credit") for n in model.notes)
    # an idle call mostly inside the burst only bounds it from below
    raw["link_credit"] = _credit([40.0] * 5, [5.0] * 5)
    assert build_comm_model(raw)["link_credit"]["lower_bound"] is True
    # older files and damaged entries have none
    raw["link_credit"] = {"per_rank_drained_ns": "fast"}
    assert "link_credit" not in build_comm_model(raw)
    del raw["link_credit"]
    assert "link_credit" not in build_comm_model(raw)


def test_table_shows_reduce_scatter_against_half_an_all_reduce(tmp_path):
    raw = _raw({"all_reduce": (100_000, 1e9), "reduce_scatter": (400_000, 0.25e9)}, [MB])
    model = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "c.json"))
    table = calibration_table(model)
    ar = 2 * 100_000 + MB
    rs = 400_000 + MB / 2 / 0.25e9 * 1e9
    assert table.loc[MB, "rs_over_half_ar"] == pytest.approx(rs / (ar / 2), rel=1e-6)
    assert table.loc[MB, "all_reduce"] == pytest.approx(ar / 1e3, rel=1e-6)


def test_noisy_falling_segment_is_flat_not_negative(tmp_path):
    raw = _raw({"all_reduce": (100_000, 1e9)}, [KB, 2 * KB])
    raw["measurements"][1]["per_rank_ns"] = [[150_000] * 5, [160_000] * 5]  # faster than 1 KB
    model = load_comm_model(write_comm_model(build_comm_model(raw), tmp_path / "c.json"))
    t1, t2 = model.time_ns("all_reduce", KB, 2), model.time_ns("all_reduce", 2 * KB, 2)
    assert t1 == pytest.approx(t2) and t1 > 0
    assert math.isinf(model.fit_for("all_reduce", KB).beta_bytes_per_s)


def test_load_errors_are_actionable(tmp_path):
    with pytest.raises(TracekitError, match="tracekit calibrate"):
        load_comm_model(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TracekitError, match="not valid JSON"):
        load_comm_model(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(TracekitError, match="not a tracekit calibration file"):
        load_comm_model(other)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "tracekit-comm-model", "version": 99}))
    with pytest.raises(TracekitError, match="version 99"):
        load_comm_model(future)


def test_parse_sizes():
    assert parse_sizes("1KB..8KB") == [KB, 2 * KB, 4 * KB, 8 * KB]
    assert parse_sizes("1MB,1KB,64KB") == [KB, 64 * KB, MB]
    with pytest.raises(TracekitError, match="--sizes"):
        parse_sizes("lots")


def test_launcher_problems_are_reported():
    with pytest.raises(TracekitError, match="no launcher"):
        run_calibration([], sizes=[KB])
    with pytest.raises(TracekitError, match="not found"):
        run_calibration(["no-such-launcher-xyz"], sizes=[KB])
    with pytest.raises(TracekitError, match="cannot calibrate"):
        run_calibration(["torchrun"], sizes=[KB], collectives=("gossip",))


@pytest.mark.torch
@pytest.mark.slow
def test_real_calibration_under_torchrun(tmp_path):
    pytest.importorskip("torch")
    from tracekit.cli import main

    out = tmp_path / "comm.json"
    rc = main(["calibrate", "--out", str(out), "--sizes", "1KB,256KB", "--iters", "3",
               "--budget", "0.2", "--json", "--", "torchrun", "--nproc_per_node", "2"])
    assert rc == 0
    model = load_comm_model(out)
    assert sorted(model.collectives) == sorted(
        ["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast"])
    assert model.backend == "gloo" and model.doc["world_size"] == 2
    for coll in model.collectives:
        med = model.median_ns(coll)
        assert list(med.index) == [KB, 256 * KB]
        assert (med > 0).all()
        # the model passes through the medians made non-decreasing in size
        t_small, t_big = model.time_ns(coll, KB, 2), model.time_ns(coll, 256 * KB, 2)
        assert t_small <= t_big
        if med[KB] <= med[256 * KB]:
            assert (t_small, t_big) == pytest.approx((med[KB], med[256 * KB]), rel=1e-6)
        else:
            assert t_small == pytest.approx(med.mean(), rel=1e-6)
    raw = model.doc["raw"]
    assert all(len(m["per_rank_ns"]) == 2 and m["iters"] >= 3 for m in raw)
    # CPU time of every call on every rank, and the share it is of the wall time
    assert all(len(m["per_rank_cpu_ns"]) == 2 and len(m["per_rank_cpu_ns"][0]) == m["iters"]
               for m in raw)
    for coll in model.collectives:
        share = model.cpu_share(coll, 256 * KB)
        assert share is not None and 0.0 < share <= model.doc["cpu_cores"], (coll, share)
    # every call's issue time on every rank: part of the call, not all of it
    for m in raw:
        assert len(m["per_rank_issue_ns"]) == 2 and len(m["per_rank_issue_ns"][0]) == m["iters"]
        assert all(0 < i <= w for ri, rw in zip(m["per_rank_issue_ns"], m["per_rank_ns"])
                   for i, w in zip(ri, rw)), m["collective"]
    assert all(model.issue_ns(coll, 256 * KB) > 0 for coll in model.collectives)
    # every call's end on every rank (one host, one clock): the last rank had the result
    # no sooner than the first
    assert all(len(m["per_rank_end_ns"][1]) == m["iters"] for m in raw)
    # the same number of calls back to back: every call's period on every rank
    assert all(len(m["per_rank_chain_ns"][0]) == m["iters"] for m in raw)
    assert all(model.chain_ratio(coll, 256 * KB) > 0 for coll in model.collectives)
    assert all(model.last_rank_ratio(coll, 256 * KB) >= 1.0 for coll in model.collectives)
    # FSDP2's own host work per unit, every rank's (a small model on a mesh of one rank:
    # no collective in it), is time on this CPU: positive and below a step of its own
    hooks = model.doc["fsdp_hooks"]
    assert len(hooks["per_rank"]) == 2 and hooks["units"] > 0
    got = model.fsdp_hook_ns()
    assert got is not None and 0 < got["forward"] < 50e6 and 0 < got["backward"] < 50e6
    # the link's burst credit was timed (plain loopback: no token bucket to find)
    credit = model.doc["link_credit"]
    assert credit["bytes"] > 0 and credit["busy_ms"] > 0 and credit["burst_s"] >= 0
