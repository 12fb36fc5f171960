"""Prediction intervals: how far a predicted step time or speedup can be trusted.

Two sources of uncertainty are combined (in log space, in quadrature):

1. **step-to-step spread.** The median over a handful of steps moves when other steps are
   drawn. A paired bootstrap over the replayed steps (the same resampled steps for the
   baseline and the variant) gives the spread of the median step and of the ratio of
   medians; its 2.5 and 97.5 percentiles bound the point estimate.
2. **cost-model residuals.** A variant whose collectives are re-timed by a cost model
   inherits the model's error on the part of its step those collectives decide: the
   fit's median relative residual ``m`` is turned into a standard deviation
   (``m / 0.6745``, the median absolute deviation of a normal), scaled by the share of the
   variant's critical path that is communication, and taken at 1.96 sigma.

Before/after (4 steps; fitted all-reduce with median residual 10%; 30% of the variant's
critical path in comm)::

    baseline steps  [24.0, 23.5, 24.4, 23.9] ms   variant [20.1, 19.8, 20.6, 20.0] ms
    speedup 1.196, bootstrap 2.5-97.5%: [1.177, 1.212]
    comm: 1.96 * 0.10 / 0.6745 * 0.30 = 0.087 (log)
    -> speedup 1.196x [1.09-1.32]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from replay.result import ReplayResult

#: two-sided 95%
Z95 = 1.96
#: bootstrap resamples (deterministic: a fixed seed)
N_BOOT = 2000
_MAD_TO_SIGMA = 0.6745


@dataclass(frozen=True, kw_only=True)
class Interval:
    """A point estimate and its 95% interval."""

    value: float
    lo: float
    hi: float

    def text(self, fmt: str = ".3f", unit: str = "") -> str:
        """``'1.196x [1.09-1.32]'``-style text."""
        return f"{self.value:{fmt}}{unit} [{self.lo:{fmt}}-{self.hi:{fmt}}]"


def _paired(a: ReplayResult, b: ReplayResult | None) -> tuple[np.ndarray, np.ndarray]:
    steps = sorted(set(a.step_ms) & set(b.step_ms)) if b is not None else sorted(a.step_ms)
    x = np.array([a.step_ms[s] for s in steps], dtype=float)
    y = np.array([b.step_ms[s] for s in steps], dtype=float) if b is not None else x
    return x, y


def _boot_log_spread(x: np.ndarray, y: np.ndarray | None) -> tuple[float, float]:
    """Below/above-the-point widths, in log space, of the bootstrap median of ``x`` (or of
    median(x) / median(y), resampled in pairs)."""
    n = len(x)
    if n < 2:
        return 0.0, 0.0
    idx = np.random.default_rng(0).integers(0, n, size=(N_BOOT, n))
    stat = np.median(x[idx], axis=1)
    point = float(np.median(x))
    if y is not None:
        stat = stat / np.median(y[idx], axis=1)
        point = point / float(np.median(y))
    ok = stat > 0
    if not ok.any() or point <= 0:
        return 0.0, 0.0
    lo, hi = np.percentile(np.log(stat[ok]), [2.5, 97.5])
    return max(math.log(point) - float(lo), 0.0), max(float(hi) - math.log(point), 0.0)


def comm_log_width(result: ReplayResult, median_rel_residual: float) -> float:
    """The cost-model part of the interval (see module doc), in log space."""
    if not math.isfinite(median_rel_residual) or result.critical_path is None:
        return 0.0
    cp = result.critical_path
    share = cp.by_kind_ns.get("comm", 0) / cp.total_ns if cp.total_ns > 0 else 0.0
    return Z95 * median_rel_residual / _MAD_TO_SIGMA * share


def _widen(point: float, below: float, above: float, extra: float) -> Interval:
    lo = math.exp(math.log(point) - math.hypot(below, extra))
    hi = math.exp(math.log(point) + math.hypot(above, extra))
    return Interval(value=point, lo=lo, hi=hi)


def step_interval(result: ReplayResult, comm_width: float = 0.0) -> Interval:
    """The median predicted step time of ``result`` with its interval."""
    point = result.median_step_ms
    if not point > 0:
        return Interval(value=point, lo=point, hi=point)
    x, _ = _paired(result, None)
    below, above = _boot_log_spread(x, None)
    return _widen(point, below, above, comm_width)


def speedup_interval(baseline: ReplayResult, variant: ReplayResult, speedup: float,
                     comm_width: float = 0.0) -> Interval:
    """``speedup`` (baseline median / variant median) with its interval."""
    if not speedup > 0 or not math.isfinite(speedup):
        return Interval(value=speedup, lo=speedup, hi=speedup)
    x, y = _paired(baseline, variant)
    below, above = _boot_log_spread(x, y)
    return _widen(speedup, below, above, comm_width)
