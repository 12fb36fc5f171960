"""Pooling the measured rounds of several jobs (benchmarks/measured_speedups.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from measured_speedups import (  # noqa: E402
    as_jobs,
    half_width_pct,
    load_jobs,
    measurement_floor,
    pooled_median_ci,
)


def test_the_median_is_over_every_round_of_every_job():
    med, lo, hi = pooled_median_ci([[1.0, 1.1, 1.2], [1.3, 1.4]])
    assert med == pytest.approx(1.2)
    assert lo <= med <= hi


def test_more_rounds_narrow_the_interval():
    rng = np.random.default_rng(1)
    few = [list(1.1 + 0.05 * rng.standard_normal(5)) for _ in range(3)]
    many = [list(1.1 + 0.05 * rng.standard_normal(40)) for _ in range(3)]
    assert half_width_pct(many) < half_width_pct(few) / 1.8


def test_jobs_that_disagree_widen_the_interval_however_many_rounds_they_have():
    """Rounds of one job share its luck: 3 jobs at 1.0, 1.1, 1.2 with 200 tight rounds each
    do not settle the speedup to within a percent."""
    rng = np.random.default_rng(2)
    jobs = [list(m + 0.005 * rng.standard_normal(200)) for m in (1.0, 1.1, 1.2)]
    assert half_width_pct(jobs) > 4.0
    agreeing = [list(1.1 + 0.005 * rng.standard_normal(200)) for _ in range(3)]
    assert half_width_pct(agreeing) < 0.5


def test_the_older_form_reads_as_jobs_of_one_round(tmp_path):
    path = tmp_path / "measured_jobs.json"
    path.write_text(json.dumps({"dear": [0.55, 0.57], "fusion=1MB": [[1.0, 1.1], [0.9]]}))
    assert load_jobs(path) == {"dear": [[0.55], [0.57]], "fusion=1MB": [[1.0, 1.1], [0.9]]}
    assert load_jobs(tmp_path / "none.json") == {}
    assert as_jobs([2]) == [[2.0]]


def test_no_rounds_is_an_error_not_a_number():
    with pytest.raises(ValueError, match="no measured rounds"):
        pooled_median_ci([[], []])


def test_measurement_floor_of_exact_measurements_is_zero():
    floor = measurement_floor([(1.1, 1.1, 1.1), (0.9, 0.9, 0.9)])
    assert floor == {"mean_pct": 0.0, "p_worst_5": 1.0, "tight": 2}


def test_measurement_floor_matches_a_model_without_error_measured_with_noise():
    """A CI of +-5% is an sd of 2.55%: a model that is exactly right still shows a mean
    |error| of 2.04% against such measurements, and each error is within 5% 95% of the
    time (checked here by drawing the measurements)."""
    floor = measurement_floor([(1.0, 0.95, 1.05)] * 4)
    sd = 10 / 3.92
    errors = np.abs(np.random.default_rng(3).normal(0, sd, size=(20000, 4)))
    assert floor["mean_pct"] == pytest.approx(errors.mean(), rel=0.02)
    assert floor["p_worst_5"] == pytest.approx((errors.max(axis=1) <= 5).mean(), abs=0.01)
    assert floor["tight"] == 0


def test_measurement_floor_needs_measurements():
    with pytest.raises(ValueError, match="no measured speedups"):
        measurement_floor([])
