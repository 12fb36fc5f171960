"""Prediction intervals (replay/intervals.py) on replay results whose spread is known."""

from __future__ import annotations

import math

import pytest

from replay.intervals import Z95, comm_log_width, speedup_interval, step_interval
from replay.result import CriticalPath, ReplayResult


def result(steps: list[float], comm_share: float = 0.0) -> ReplayResult:
    cp = CriticalPath(nodes=[], by_kind_ns={"comm": int(comm_share * 1000),
                                            "compute": int((1 - comm_share) * 1000)},
                      by_lane_ns={}, total_ns=1000)
    return ReplayResult(timeline=None, step_ms=dict(enumerate(steps)),
                        measured_step_ms=dict(enumerate(steps)), critical_path=cp)


def test_a_variant_that_scales_every_step_has_no_step_spread_in_its_speedup():
    """Paired resampling: every step 20% faster gives exactly 1.25x whichever steps are
    drawn, however much the steps themselves vary."""
    base = result([10.0, 20.0, 15.0, 30.0])
    var = result([8.0, 16.0, 12.0, 24.0])
    band = speedup_interval(base, var, 1.25)
    assert band.lo == pytest.approx(1.25) and band.hi == pytest.approx(1.25)
    # ...while the median step time itself is uncertain
    step = step_interval(var)
    assert step.lo < 12.0 * 1.2 and step.lo <= step.value <= step.hi and step.hi > step.lo


def test_steps_that_move_differently_widen_the_speedup_interval():
    base = result([10.0, 10.0, 10.0, 10.0, 10.0])
    steady = speedup_interval(base, result([8.0, 8.0, 8.0, 8.0, 8.0]), 1.25)
    noisy = speedup_interval(base, result([7.0, 9.0, 8.0, 6.5, 9.5]), 1.25)
    assert steady.hi - steady.lo == pytest.approx(0.0)
    assert noisy.lo < 1.25 < noisy.hi


def test_the_cost_model_part_is_its_residual_on_the_comm_share_of_the_path():
    r = result([10.0, 10.0], comm_share=0.3)
    width = comm_log_width(r, 0.10)
    assert width == pytest.approx(Z95 * 0.10 / 0.6745 * 0.3)
    band = speedup_interval(r, r, 1.0, width)
    assert band.lo == pytest.approx(math.exp(-width)) and band.hi == pytest.approx(math.exp(width))
    assert comm_log_width(r, float("nan")) == 0.0  # a model without residuals adds nothing
    assert comm_log_width(result([10.0], comm_share=0.0), 0.5) == 0.0


def test_text_and_degenerate_inputs():
    band = speedup_interval(result([10.0]), result([5.0]), 2.0)
    assert (band.lo, band.hi) == (2.0, 2.0)  # one step: no spread to resample
    assert band.text() == "2.000 [2.000-2.000]"
    nan = speedup_interval(result([10.0]), result([5.0]), float("nan"))
    assert math.isnan(nan.lo)
