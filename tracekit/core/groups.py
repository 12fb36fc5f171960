"""Group positions by value with one sort: the loop-over-ranks pattern without a scan
per rank.

``for r in np.unique(rank): sel = rank == r`` touches every entry once per rank, so its
cost grows with the square of the world; :func:`groups` sorts once and hands out each
value's positions::

    >>> import numpy as np
    >>> [(int(v), p.tolist()) for v, p in groups(np.array([1, 0, 1, 2]))]
    [(0, [1]), (1, [0, 2]), (2, [3])]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def groups(values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(value, positions)`` for every distinct value, ascending; positions in order."""
    values = np.asarray(values)
    if len(values) == 0:
        return
    o = np.argsort(values, kind="stable")
    v = values[o]
    cut = np.flatnonzero(np.concatenate([[True], v[1:] != v[:-1], [True]]))
    for a, b in zip(cut[:-1].tolist(), cut[1:].tolist()):
        yield v[a], o[a:b]


def member_of(values: np.ndarray, members) -> np.ndarray:
    """``np.isin(values, members)`` for small non-negative integers such as ranks, by a
    lookup table: ``np.isin`` against a list of ranks loops over the list, once per rank
    (quadratic in the world)."""
    values = np.asarray(values)
    members = np.asarray(sorted(members) if isinstance(members, set) else members,
                         dtype=np.int64)
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    if len(members) == 0:
        return np.zeros(len(values), dtype=bool)
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi > 1 << 24 or members.min() < 0:
        return np.isin(values, members, kind="sort")
    table = np.zeros(max(hi, int(members.max())) + 1, dtype=bool)
    table[members] = True
    return table[values]
