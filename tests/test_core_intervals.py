"""Interval union, covered length, difference and clipping (tracekit.core.intervals)."""

from __future__ import annotations

import breakdown_check as bc
import numpy as np
from hypothesis import given, settings

from tracekit.core.intervals import clip, covered_length, difference, union, union_length


def a(*xs):
    return np.array(xs, dtype=np.int64)


def test_overlapping_nested_and_touching_intervals_merge():
    #           overlap      nested           touching        apart
    s, e = union(a(0, 2, 10, 11, 20, 25, 40), a(3, 5, 19, 12, 25, 30, 41))
    assert s.tolist() == [0, 10, 20, 40] and e.tolist() == [5, 19, 30, 41]
    assert union_length(a(0, 2, 10, 11, 20, 25, 40), a(3, 5, 19, 12, 25, 30, 41)) == 5 + 9 + 10 + 1


def test_empty_and_reversed_intervals_cover_nothing():
    s, e = union(a(5, 7, 1), a(5, 3, 2))  # [5, 5) and [7, 3) are empty
    assert s.tolist() == [1] and e.tolist() == [2]
    s, e = union(a(), a())
    assert len(s) == len(e) == 0 and s.dtype == np.int64
    assert union_length(a(4), a(4)) == 0


def test_union_is_sorted_whatever_the_input_order():
    s, e = union(a(30, 0, 10), a(35, 5, 12))
    assert s.tolist() == [0, 10, 30] and e.tolist() == [5, 12, 35]


def test_difference_cuts_holes_and_keeps_the_rest():
    d = difference((a(0, 20), a(10, 30)), (a(2, 8, 25), a(4, 22, 40)))
    assert d[0].tolist() == [0, 4, 22] and d[1].tolist() == [2, 8, 25]
    # nothing to subtract / nothing to subtract from
    assert difference((a(0), a(5)), (a(), a()))[0].tolist() == [0]
    assert len(difference((a(), a()), (a(0), a(5)))[0]) == 0


def test_clip_to_a_window():
    s, e = clip(a(0, 5, 20), a(8, 9, 30), 4, 10)
    assert s.tolist() == [4, 5, 10] and e.tolist() == [8, 9, 10]
    assert union_length(s, e) == 5  # [20, 30) became the empty [10, 10)


def test_covered_length_of_queries():
    us, ue = union(a(10, 0, 5, 30), a(20, 8, 12, 40))  # [0, 20) [30, 40)
    got = covered_length(a(0, 15, 25, 35, 20), a(5, 35, 28, 100, 20), us, ue)
    assert got.tolist() == [5, 10, 0, 5, 0]
    assert covered_length(a(0, 3), a(9, 4), a(), a()).tolist() == [0, 0]


intervals, grid, arrays = bc.interval_lists, bc.grid, bc.as_arrays


@settings(max_examples=200, deadline=None)
@given(intervals, intervals)
def test_covered_length_matches_brute_force(pairs, queries):
    us, ue = union(*arrays(pairs))
    qs, qe = arrays([(min(x, y), max(x, y)) for x, y in queries])
    cover = grid(pairs)
    got = covered_length(qs, qe, us, ue)
    assert got.tolist() == [int(cover[s:e].sum()) for s, e in zip(qs, qe)]
