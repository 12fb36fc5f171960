"""Interference: interval geometry, the fit on hand-made op instances, and the apply loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replay.interference.factor import (
    apply_interference,
    deflate,
    fit_from_instances,
    inflate,
    overlap_fraction,
    solve_factor,
)


def fit_interference(rows: list[dict]):
    """The fit on op instances: rank, name, dur_ns and frac (overlapped fraction)."""
    return fit_from_instances(pd.DataFrame(rows, columns=["rank", "name", "dur_ns", "frac"]))


def op(name, dur, frac=0.0, rank=0):
    return {"rank": rank, "name": name, "dur_ns": dur, "frac": frac}


# --------------------------------------------------------------------------- geometry


def test_overlap_fraction_is_per_rank():
    start, end = np.array([0, 0]), np.array([10, 10])
    frac = overlap_fraction(start, end, np.array([0, 1]), np.array([5]), np.array([20]),
                            np.array([0]))
    assert list(frac) == [0.5, 0.0]


def test_inflate_deflate_and_solve_are_consistent():
    base, f = np.array([4.0]), 2.0
    assert inflate(base, np.array([1.0]), f)[0] == pytest.approx(8.0)
    assert inflate(base, np.array([0.0]), f)[0] == pytest.approx(4.0)
    d = inflate(base, np.array([0.6]), f)
    assert deflate(d, np.array([0.6]), f)[0] == pytest.approx(4.0)
    assert solve_factor(4.0, d, np.array([0.6]))[0] == pytest.approx(2.0)
    # factors below one are treated as no interference when applied
    assert inflate(base, np.array([1.0]), 0.5)[0] == pytest.approx(4.0)


# --------------------------------------------------------------------------- fit


def _two_regimes(alone_ns=1_200_000, beside_ns=5_600_000, n=4, rank=0):
    return ([op("aten::mm", alone_ns, 0.0, rank=rank) for _ in range(n)]
            + [op("aten::mm", beside_ns, 1.0, rank=rank) for _ in range(n)])


def test_fit_recovers_the_design_example():
    fit = fit_interference(_two_regimes())
    assert fit.factor == pytest.approx(5.6 / 1.2)
    assert fit.per_rank == {0: pytest.approx(5.6 / 1.2)}
    row = fit.per_op.iloc[0]
    assert (row["name"], row["n_alone"], row["n_beside"]) == ("aten::mm", 4, 4)
    assert fit.n_samples == 8
    assert "4.67x slower" in fit.describe()


def test_partial_overlap_is_solved_with_the_model():
    # beside instances overlap comm for 60 % of their span: base 1 ms, factor 3
    base, f, x = 1_000_000, 3.0, 0.6
    d = int(base / (1 - x * (1 - 1 / f)))
    rows = [op("aten::mm", base)] * 3 + [op("aten::mm", d, x)] * 3
    fit = fit_interference(rows)
    assert fit.factor == pytest.approx(f, rel=1e-3)


def test_instances_barely_beside_comm_do_not_count():
    # overlapped for less than BESIDE_FRACTION of their span: neither alone nor beside
    rows = [op("aten::mm", 1000)] * 3 + [op("aten::mm", 5000, 0.2)] * 3
    assert fit_interference(rows).factor == 1.0


def test_factor_is_weighted_by_time_over_ranks_and_ops():
    rows = _two_regimes(1_000_000, 2_000_000, rank=0)       # factor 2, 8 ms beside
    rows += _two_regimes(1_000, 10_000, rank=1)             # factor 10, but only 40 us
    fit = fit_interference(rows)
    assert fit.per_rank[0] == pytest.approx(2.0) and fit.per_rank[1] == pytest.approx(10.0)
    assert fit.factor == pytest.approx(2.0)


def test_too_few_samples_gives_no_factor_and_says_so():
    fit = fit_interference(_two_regimes(n=2))
    assert fit.factor == 1.0
    assert "too few" in fit.notes[0]
    assert fit_interference([op("aten::mm", 10)]).factor == 1.0


# --------------------------------------------------------------------------- apply


def test_apply_reaches_the_processor_sharing_fixed_point():
    """Node 0: compute on rank 0, 4 ms of work, measured alone. Node 1: comm on rank 0
    over [0, 5 ms). Beside comm the op runs at half speed: 5 ms do 2.5 ms of work, the
    remaining 1.5 ms run alone: 6.5 ms."""
    is_compute, is_comm = np.array([True, False]), np.array([False, True])

    def schedule(dur):
        return np.array([0, 0]), np.array([dur[0], 5_000_000])

    kw = dict(dur_ns=np.array([4e6, 5e6]), rank=np.array([0, 0]), is_compute=is_compute,
              is_comm=is_comm, factor=2.0, baseline_frac=np.array([0.0, 0.0]),
              schedule=schedule)
    res = apply_interference(**kw, passes=30)
    assert res.end_ns[0] == pytest.approx(6.5e6, rel=1e-3)
    assert res.frac[0] == pytest.approx(5 / 6.5, rel=1e-3)
    assert res.last_change < 1e-3
    # the default few passes already land within a few percent
    assert apply_interference(**kw).end_ns[0] == pytest.approx(6.5e6, rel=0.05)


def test_apply_removes_baseline_interference_when_overlap_goes_away():
    """Measured at 8 ns fully beside comm with factor 2: alone it takes 4 ns."""
    def schedule(dur):  # the variant moved comm away from the op
        return np.array([0, 100]), np.array([dur[0], 105])

    res = apply_interference(dur_ns=np.array([8.0, 5.0]), rank=np.array([0, 0]),
                             is_compute=np.array([True, False]),
                             is_comm=np.array([False, True]), factor=2.0,
                             baseline_frac=np.array([1.0, 0.0]), schedule=schedule)
    assert res.dur_ns[0] == 4
    assert res.dur_ns[1] == 5  # comm untouched
