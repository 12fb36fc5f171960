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
