"""Collective cost model: formulas, fitting from samples and event tables, scaling."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from replay.cost_model import (
    DEFAULT_STEP_LATENCY_NS,
    Algorithm,
    FittedCostModel,
    comm_samples,
    comm_volume,
    fit_cost_model,
)
from replay.scaled_cost import ScaledCostModel
from tracekit.core.schema import check_schema, events_from_rows
from tracekit.errors import TracekitError

MB = 1 << 20


def make_events(rows: list[dict]) -> pd.DataFrame:
    """An event table with the exact schema from a few hand-written rows."""
    df = events_from_rows(rows)
    check_schema(df)
    return df



def synthetic_samples(alpha_ns: float, beta: float, sizes, n: int = 2,
                      coll: str = "all_reduce", repeats: int = 3, pg: str = "0",
                      noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for b in sizes:
        v = comm_volume(coll, b, n)
        t = v.steps * alpha_ns + v.moved_bytes / beta * 1e9
        for _ in range(repeats):
            rows.append({"pg": pg, "collective": coll, "nbytes": b, "group_size": n,
                         "transfer_ns": int(t * (1 + noise * rng.standard_normal()))})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- formulas


def test_ring_and_tree_step_structure():
    v = comm_volume("all_reduce", 1000, 4)
    assert (v.steps, v.moved_bytes) == (6, 1500)  # 2(n-1) steps, 2(n-1)/n bytes
    v = comm_volume("reduce_scatter", 1000, 4)
    assert (v.steps, v.moved_bytes) == (3, 750)
    v = comm_volume("all_gather", 1000, 4)
    assert (v.steps, v.moved_bytes) == (3, 750)
    v = comm_volume("all_to_all", 1000, 4)
    assert (v.steps, v.moved_bytes) == (3, 750)
    assert comm_volume("all_reduce", 1000, 8, Algorithm.TREE).steps == 6  # 2*log2(8)
    assert comm_volume("broadcast", 1000, 8).moved_bytes == 1000
    assert comm_volume("all_reduce", 1000, 1) == comm_volume("barrier", 0, 1)
    # kernel names and other spellings are normalized
    assert comm_volume("ncclKernel_AllReduce_RING_LL_Sum_float", 1000, 4).steps == 6
    with pytest.raises(TracekitError, match="no cost formula"):
        comm_volume("shuffle", 10, 2)


# --------------------------------------------------------------------------- fitting


def test_fit_recovers_alpha_and_beta_exactly():
    samples = synthetic_samples(50_000, 2e9, [MB, 4 * MB, 16 * MB, 64 * MB])
    model = fit_cost_model(samples, backend="gloo")
    fit = model.fits[("0", "all_reduce")]
    assert fit.alpha_ns == pytest.approx(50_000, rel=1e-6)
    assert fit.beta_bytes_per_s == pytest.approx(2e9, rel=1e-6)
    assert fit.source == "fitted"
    assert (fit.n_points, fit.n_sizes) == (12, 4)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.median_rel_residual == pytest.approx(0.0, abs=1e-9)


def test_fit_quality_reflects_noise():
    samples = synthetic_samples(50_000, 2e9, [MB, 4 * MB, 16 * MB], repeats=20, noise=0.2)
    fit = fit_cost_model(samples).fits[("0", "all_reduce")]
    assert 0.1 < fit.median_rel_residual < 0.3
    assert 0.5 < fit.r2 < 1.0
    assert fit.beta_bytes_per_s == pytest.approx(2e9, rel=0.25)


def test_workers_retimes_with_the_ring_formula():
    model = fit_cost_model(synthetic_samples(50_000, 2e9, [MB, 8 * MB]))
    for n in (2, 4, 16):
        expected = 2 * (n - 1) * 50_000 + 2 * (n - 1) / n * 8 * MB / 2e9 * 1e9
        assert model.time_ns("all_reduce", 8 * MB, n) == pytest.approx(expected, rel=1e-6)
    assert model.time_ns("all_reduce", 8 * MB, 1) == 0.0


def test_other_types_are_extrapolated_by_formula_and_say_so():
    model = fit_cost_model(synthetic_samples(50_000, 2e9, [MB, 8 * MB]))
    rs = model.terms("reduce_scatter", 8 * MB, 4)
    assert rs.source == "extrapolated from all_reduce by formula"
    assert rs.total_ns == pytest.approx(3 * 50_000 + 0.75 * 8 * MB / 2e9 * 1e9, rel=1e-6)
    # by formula, a ring reduce-scatter costs half an all-reduce
    assert rs.total_ns == pytest.approx(model.time_ns("all_reduce", 8 * MB, 4) / 2, rel=1e-6)
    assert model.fit_for("all_gather").source == "extrapolated from all_reduce by formula"


def test_single_size_borrows_latency_from_another_type():
    both = pd.concat([
        synthetic_samples(40_000, 1e9, [MB, 8 * MB], coll="all_reduce"),
        synthetic_samples(40_000, 1e9, [2 * MB], coll="all_gather"),
    ])
    fit = fit_cost_model(both).fits[("0", "all_gather")]
    assert fit.source == "one size"
    assert fit.alpha_ns == pytest.approx(40_000, rel=1e-6)
    assert fit.beta_bytes_per_s == pytest.approx(1e9, rel=1e-6)
    assert "all_reduce fit" in fit.assumption


def test_single_size_alone_assumes_the_backend_default_latency():
    fit = fit_cost_model(synthetic_samples(1_000_000, 1e9, [4 * MB]), backend="gloo").fits[
        ("0", "all_reduce")]
    assert fit.alpha_ns == DEFAULT_STEP_LATENCY_NS["gloo"]
    assert "one size only" in fit.assumption and "gloo default" in fit.assumption
    t = fit.terms("all_reduce", 4 * MB, 2).total_ns
    assert t == pytest.approx(2 * 1_000_000 + 4 * MB, rel=1e-6)  # reproduces what was seen
    assert math.isnan(fit.r2)


def test_model_without_collectives_refuses_with_an_actionable_message():
    model = FittedCostModel(fits={})
    with pytest.raises(TracekitError, match="tracekit calibrate"):
        model.time_ns("all_reduce", MB, 2)


def test_scaled_model_changes_only_what_it_says():
    base = fit_cost_model(synthetic_samples(50_000, 2e9, [MB, 8 * MB]))
    t = base.terms("all_reduce", 8 * MB, 2)
    fast = ScaledCostModel(base=base, bandwidth_factor=2.0).terms("all_reduce", 8 * MB, 2)
    assert fast.latency_ns == t.latency_ns
    assert fast.bandwidth_ns == pytest.approx(t.bandwidth_ns / 2)
    link = ScaledCostModel(base=base, bandwidth_bytes_per_s=8e9).terms("all_reduce", 8 * MB, 2)
    assert link.bandwidth_ns == pytest.approx(8 * MB / 8e9 * 1e9)
    half = ScaledCostModel(base=base, time_factor=0.5)
    assert half.time_ns("all_reduce", 8 * MB, 2) == pytest.approx(t.total_ns / 2)


def test_auto_algorithm_picks_tree_for_small_messages_on_many_ranks():
    samples = synthetic_samples(50_000, 2e9, [MB, 8 * MB])
    auto = fit_cost_model(samples, algorithm="auto")
    small = auto.terms("all_reduce", 1024, 64)
    assert small.algorithm == "tree" and small.steps == 12
    assert auto.terms("all_reduce", 1 << 30, 2).algorithm == "ring"


# --------------------------------------------------------------------------- event table


def _comm(rank, ts, dur, nbytes, step=1, lane=None):
    return {"rank": rank, "lane_kind": "cpu", "lane": lane or 100 + rank,
            "lane_name": "pt_gloo_runloop", "name": "gloo:all_reduce", "kind": "comm",
            "ts_ns": ts, "dur_ns": dur, "step": step, "collective": "all_reduce",
            "comm_bytes": nbytes}


def test_samples_take_the_last_arrivals_duration():
    ev = make_events([
        # instance 1: rank 0 arrives at 0 and waits; rank 1 arrives at 3000 -> transfer 7000
        _comm(0, 0, 10_000, MB), _comm(1, 3_000, 7_000, MB),
        # instance 2 (another size), rank 0 last
        _comm(0, 20_000, 4_000, 2 * MB), _comm(1, 18_000, 6_000, 2 * MB),
        # a rank-0-only instance (rank 1's trace lost it): dropped
        _comm(0, 40_000, 1_000, 4 * MB),
    ])
    s = comm_samples(ev, world_size=2).sort_values("nbytes")
    assert list(s["transfer_ns"]) == [7_000, 4_000]
    assert list(s["wait_ns"]) == [3_000, 2_000]
    assert list(s["group_size"]) == [2, 2]
    assert any("not seen on every rank" in n for n in s.attrs["notes"])


def test_samples_match_by_size_when_worker_threads_swap_order():
    # rank 1's two gloo threads start the 2 MB bucket before the 1 MB one
    ev = make_events([
        _comm(0, 0, 5_000, MB, lane=100), _comm(0, 1_000, 9_000, 2 * MB, lane=101),
        _comm(1, 1_500, 8_000, 2 * MB, lane=200), _comm(1, 2_000, 3_000, MB, lane=201),
    ])
    s = comm_samples(ev).set_index("nbytes")
    assert s.loc[MB, "transfer_ns"] == 3_000
    assert s.loc[2 * MB, "transfer_ns"] == 8_000


def test_fit_from_events_end_to_end():
    rows = []
    t = 0
    for step in range(3):
        for nbytes in (MB, 8 * MB):
            transfer = int(2 * 30_000 + nbytes / 1e9 * 1e9)
            rows += [_comm(0, t, transfer + 500, nbytes, step), _comm(1, t + 500, transfer,
                                                                      nbytes, step)]
            t += 10 * transfer
    model = fit_cost_model(comm_samples(make_events(rows)), backend="gloo")
    fit = model.fits[("", "all_reduce")]
    assert fit.alpha_ns == pytest.approx(30_000, rel=1e-3)
    assert fit.beta_bytes_per_s == pytest.approx(1e9, rel=1e-3)
    assert fit.n_points == 6
    assert "latency 30 us/step" in fit.describe()
