"""Pooling the measured rounds of several jobs (benchmarks/measured_speedups.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from measured_speedups import as_jobs, half_width_pct, load_jobs, pooled_median_ci  # noqa: E402


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
