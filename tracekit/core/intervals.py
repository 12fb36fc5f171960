"""Interval arithmetic on half-open time intervals ``[start, end)`` in integer ns.

Every length tracekit reports over several events (compute, comm, overlap, idle, the
part of an op that ran beside communication) is the length of a *union* of intervals, so
that time covered by two events at once (two streams, two threads, nested ops) counts
once. The functions here are numpy-vectorized: no Python loop over intervals.

Rules shared by all of them:

- an interval with ``end <= start`` covers nothing and is dropped;
- intervals that overlap, nest or touch (``a.end == b.start``) merge into one;
- a union is two sorted int64 arrays ``(starts, ends)`` of disjoint, non-touching
  intervals, as :func:`union` returns.

Before / after (ns)::

    intervals      [0, 3)  [2, 4)  [5, 7)  [7, 9)  [6, 6)
    union          [0, 4)                  [5, 9)          # touching merged, empty dropped
    union_length   4 + 4 = 8
    covered_length of the query [3, 6): 1 (from [0, 4)) + 1 (from [5, 9)) = 2
"""

from __future__ import annotations

import numpy as np

Intervals = tuple[np.ndarray, np.ndarray]


def union(starts: np.ndarray, ends: np.ndarray) -> Intervals:
    """Merge intervals ``[start, end)`` into sorted, disjoint ones.

    >>> union(np.array([5, 0, 2]), np.array([7, 3, 4]))
    (array([0, 5]), array([4, 7]))
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if len(starts) == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    new = np.empty(len(s), dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(s) - 1)
    return s[first], reach[last]


def union_length(starts: np.ndarray, ends: np.ndarray) -> int:
    """Total length covered by the intervals (overlaps counted once).

    >>> union_length(np.array([0, 2, 10]), np.array([5, 3, 12]))
    7
    """
    s, e = union(starts, ends)
    return int((e - s).sum())


def difference(a: Intervals, b: Intervals) -> Intervals:
    """``a`` minus ``b``, both sorted disjoint interval sets (as :func:`union` returns).

    >>> difference((np.array([0]), np.array([10])), (np.array([2, 6]), np.array([4, 7])))
    (array([0, 4, 7]), array([ 2,  6, 10]))
    """
    (a_s, a_e), (b_s, b_e) = a, b
    if len(a_s) == 0 or len(b_s) == 0:
        return a_s, a_e
    cuts = np.unique(np.concatenate([a_s, a_e, b_s, b_e]))
    left, right = cuts[:-1], cuts[1:]
    keep = _inside(left, a_s, a_e) & ~_inside(left, b_s, b_e)
    return union(left[keep], right[keep])


def _inside(points: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Per point: is it inside one of the sorted disjoint intervals ``[s, e)``?"""
    idx = np.searchsorted(s, points, side="right") - 1
    inside = idx >= 0
    inside[inside] = points[inside] < e[idx[inside]]
    return inside


def clip(starts: np.ndarray, ends: np.ndarray, lo: int, hi: int) -> Intervals:
    """Intervals cut to the window ``[lo, hi)``; those outside it become empty (and
    disappear in :func:`union`).

    >>> clip(np.array([0, 5, 20]), np.array([8, 9, 30]), 4, 10)
    (array([ 4,  5, 10]), array([ 8,  9, 10]))
    """
    return np.clip(starts, lo, hi), np.clip(ends, lo, hi)


def covered_length(starts: np.ndarray, ends: np.ndarray, u_starts: np.ndarray,
                   u_ends: np.ndarray) -> np.ndarray:
    """Per query interval ``[starts[i], ends[i])``: how much of it the union
    ``(u_starts, u_ends)`` (as :func:`union` returns) covers. One binary search per
    query end, through the running total of the union's lengths.

    >>> covered_length(np.array([0, 15]), np.array([5, 35]), np.array([0, 10, 30]),
    ...                np.array([8, 20, 40]))
    array([ 5, 10])
    """
    if len(u_starts) == 0:
        return np.zeros(len(starts), dtype=np.int64)
    total = np.concatenate([[0], np.cumsum(u_ends - u_starts)])

    def up_to(x: np.ndarray) -> np.ndarray:
        """Length of the union before the point ``x``."""
        i = np.searchsorted(u_starts, x, side="right") - 1
        j = np.maximum(i, 0)
        part = np.where(i >= 0, np.minimum(x, u_ends[j]) - u_starts[j], 0)
        return np.where(i >= 0, total[j] + part, 0)

    return up_to(np.asarray(ends)) - up_to(np.asarray(starts))
