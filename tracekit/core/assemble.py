"""One run's event table from its ranks' parts, each column allocated once.

A part is a rank's table (a DataFrame, from a parse) or a cache entry
(:class:`~tracekit.core.cache.EntryReader`, whose columns are read straight from the file).
:func:`assemble` sizes every column of the run from the parts' row counts, then fills
it rank by rank: an entry's column is read straight into the run's array (the compact
table's rows are stored first in every column of an entry, so that table is a prefix:
no scratch copy, no selection), a DataFrame's column is copied and dropped;
categorical codes are mapped onto the union of the ranks' categories. An integer column
that holds one value on every row of every part (``comm_bytes`` of a trace without
collective sizes, ``wait_on_stream`` of one without ``cuda_sync`` events: -1) is that value
once, broadcast over the rows (a read-only view, no memory per row); an entry says so in
its header, so such a column is not even read. So the run is
never held twice (per-rank tables and their concatenation), and no memory but the run's
own is touched for the first time: on a 128-rank run that is most of the loading time.

Example::

    >>> table = assemble([(0, frame0), (1, entry1)], compact=False)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tracekit.core.cache import DamagedEntry, EntryReader, column_constant
from tracekit.core.schema import EVENT_COLUMNS

Part = pd.DataFrame | EntryReader


class PartDamaged(Exception):
    """An entry failed a check while it was read (internal: the caller parses that rank
    again and assembles anew)."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(why)
        self.index = index


def part_rows(part: Part, compact: bool) -> int:
    if isinstance(part, pd.DataFrame):
        return len(part)
    return part.graph_rows if compact and part.graph_rows is not None else part.rows


def _code_dtype(n_categories: int) -> np.dtype:
    for dt in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _categories(part: Part, col: str) -> list:
    if isinstance(part, pd.DataFrame):
        return list(part[col].cat.categories)
    return part.categories(col) or []


class _Scratch:
    """One reusable array per dtype, as long as the longest part."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._arrays: dict[np.dtype, np.ndarray] = {}

    def get(self, dtype: np.dtype, n: int) -> np.ndarray:
        arr = self._arrays.get(dtype)
        if arr is None:
            arr = self._arrays[dtype] = np.empty(self.rows, dtype=dtype)
        return arr[:n]


def _values(part: Part, i: int, col: str, compact: bool, scratch: _Scratch,
            out: np.ndarray | None = None) -> np.ndarray | None:
    """Part ``i``'s column ``col`` (codes for a categorical; of the compact table's rows
    with ``compact``): an array, or None when it was read straight into ``out``."""
    if isinstance(part, pd.DataFrame):
        series = part[col]
        return (series.cat.codes.to_numpy() if isinstance(series.dtype, pd.CategoricalDtype)
                else series.to_numpy())
    graph = compact and part.graph_rows is not None
    read = part.read_graph if graph else part.read
    n = part.graph_rows if graph else part.rows
    try:
        if out is not None and out.dtype == part.dtype(col):
            read(col, out=out)
            return None
        return read(col, out=scratch.get(part.dtype(col), n))
    except DamagedEntry as exc:
        raise PartDamaged(i, str(exc)) from None


def assemble(parts: Sequence[tuple[int, Part]], *, compact: bool) -> pd.DataFrame:
    """The run's table from ``(rank, part)`` pairs in rank order (see module doc); with
    ``compact``, an entry contributes only the compact table's rows (a DataFrame part is
    taken as it is). Raises :class:`PartDamaged` for an entry that fails a check."""
    ranks = [r for r, _ in parts]
    tables = [p for _, p in parts]
    counts = [part_rows(p, compact) for p in tables]
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(bounds[-1])
    scratch = _Scratch(max([p.rows for p in tables if isinstance(p, EntryReader)] or [0]))
    columns = {}
    for col, (dt, _) in EVENT_COLUMNS.items():
        if col == "rank":
            columns[col] = np.repeat(np.asarray(ranks, dtype=np.int32), counts)
            continue
        if dt == "category":
            columns[col] = _fill_categorical(tables, col, bounds, compact, scratch)
        elif (value := _constant(tables, counts, col, compact)) is not None:
            columns[col] = np.broadcast_to(np.array(value, dtype=dt), (total,))
        else:
            out = np.empty(total, dtype=dt)
            for i, p in enumerate(tables):
                dest = out[bounds[i]:bounds[i + 1]]
                got = _values(p, i, col, compact, scratch, out=dest)
                if got is not None:
                    dest[...] = got
            columns[col] = out
        for p in tables:
            if isinstance(p, pd.DataFrame):
                del p[col]  # copied: let it go
    return pd.DataFrame(columns, copy=False)


def _constant(tables: list, counts: list[int], col: str, compact: bool) -> int | None:
    """The one value column ``col`` holds on every row of every part (parts without rows
    aside), else None."""
    values = set()
    for p, n in zip(tables, counts):
        if n == 0:
            continue
        if isinstance(p, pd.DataFrame):
            v = column_constant(p[col].to_numpy())
        else:
            v = p.constant(col, graph=compact and p.graph_rows is not None)
        if v is None:
            return None
        values.add(v)
    return values.pop() if len(values) == 1 else None


def _fill_categorical(tables: list, col: str, bounds: np.ndarray, compact: bool,
                      scratch: _Scratch) -> pd.Categorical:
    union: dict = {}
    remaps = []
    for p in tables:
        cats = _categories(p, col)
        for c in cats:
            union.setdefault(c, len(union))
        # code -1 (missing) stays -1: it indexes the remap's last entry
        remaps.append(np.array([union[c] for c in cats] + [-1], dtype=np.int64))
    codes = np.empty(int(bounds[-1]), dtype=_code_dtype(len(union)))
    for i, p in enumerate(tables):
        dest = codes[bounds[i]:bounds[i + 1]]
        if len(remaps[i]) - 1 == len(union) and (remaps[i][:-1] == np.arange(len(union))).all():
            # the rank's categories are the union's, in order: its codes are already right
            got = _values(p, i, col, compact, scratch, out=dest)
            if got is not None:
                dest[...] = got
            continue
        got = _values(p, i, col, compact, scratch)
        np.take(remaps[i].astype(codes.dtype), got, out=dest)
    return pd.Categorical.from_codes(codes, list(union), validate=False)
