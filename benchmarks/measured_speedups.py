"""Measured speedups of an accuracy cell: per-round ratios pooled over jobs, with a
bootstrap interval that respects both sources of noise.

``benchmarks/ab_worker.py`` prints, per variant, the ratio baseline/variant of every round
of one job. One job's rounds share that job's luck (the memory each side's copy of the
model got, where the threads landed), so rounds of one job are not independent samples
of the speedup, and neither is one number per job enough (a median of three jobs has a
bootstrap interval as wide as their range). ``measured_jobs.json`` therefore keeps every
round of every job::

    {"fusion=1MB": [[1.02, 0.97, ...],    # job 1: one ratio per round
                    [1.05, 1.01, ...]],   # job 2
     ...}

and :func:`pooled_median_ci` gives the median of all rounds with a two-level bootstrap:
resample jobs, then rounds within each resampled job. With one job it is a bootstrap over
rounds; with many it widens by however much the jobs disagree.

Files of the older form (one median per job: ``{"dear": [0.55, 0.57]}``) read as jobs of
one round each.

This module imports only numpy: ``predict_cell.py`` may run with another checkout.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

Jobs = list[list[float]]


def as_jobs(values: list) -> Jobs:
    """A spec's entry of ``measured_jobs.json`` as a list of jobs of rounds (a bare number,
    the older form, is a job of one round)."""
    return [list(map(float, v)) if isinstance(v, list) else [float(v)] for v in values]


def load_jobs(path: Path) -> dict[str, Jobs]:
    """``measured_jobs.json`` (either form); {} when there is none."""
    if not path.exists():
        return {}
    return {spec: as_jobs(v) for spec, v in json.loads(path.read_text()).items()}


def pooled_median_ci(jobs: Jobs, n_boot: int = 2000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Median of every round of every job, and its 95% two-level bootstrap interval
    (jobs resampled, then rounds within each)."""
    jobs = [np.asarray(j, dtype=float) for j in jobs if len(j)]
    if not jobs:
        raise ValueError("no measured rounds: run at least one job")
    med = float(np.median(np.concatenate(jobs)))
    rng = np.random.default_rng(seed)
    meds = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, len(jobs), size=len(jobs))
        meds[b] = np.median(np.concatenate(
            [jobs[i][rng.integers(0, len(jobs[i]), size=len(jobs[i]))] for i in picked]))
    lo, hi = np.percentile(meds, [2.5, 97.5])
    return med, float(lo), float(hi)


def half_width_pct(jobs: Jobs) -> float:
    """The interval's larger half, in % of the median."""
    med, lo, hi = pooled_median_ci(jobs)
    return max(med - lo, hi - med) / med * 100


def measurement_floor(cis: list[tuple[float, float, float]]) -> dict[str, float]:
    """What the measurement's own noise alone puts into the errors: with each measured
    speedup's 95% CI ``(median, lo, hi)`` read as a normal error of sd ``(hi - lo) / 3.92``
    (in % of the median), the mean |error| a model without error would still show
    (``sd * sqrt(2 / pi)`` averaged), the probability that all of its errors are within
    5% (issue 11's worst), and how many CIs are within +-1.5% (the benchmark's aim)."""
    if not cis:
        raise ValueError("no measured speedups to read the measurement floor from")
    sds = [(hi - lo) / 3.92 / m * 100 for m, lo, hi in cis]
    p_within = [math.erf(5.0 / (sd * math.sqrt(2))) if sd > 0 else 1.0 for sd in sds]
    return {"mean_pct": statistics.mean(sd * math.sqrt(2 / math.pi) for sd in sds),
            "p_worst_5": math.prod(p_within),
            "tight": sum(max(m - lo, hi - m) / m * 100 <= 1.5 for m, lo, hi in cis)}
