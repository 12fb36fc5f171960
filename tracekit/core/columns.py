"""Tests on event-table columns that never expand a categorical column into strings.

``events["kind"].to_numpy().astype(str) == "comm"`` builds one Python string per row
(seconds for a 100-rank run); :func:`equals` compares the integer codes against the code
of ``"comm"`` instead, decided once per distinct value.

Example::

    >>> import pandas as pd
    >>> s = pd.Series(pd.Categorical(["cpu", "gpu", "cpu"]))
    >>> equals(s, "gpu").tolist(), isin(s, ["cpu", "x"]).tolist()
    ([False, True, False], [True, False, True])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd


def _codes_and_table(series: pd.Series, test: Callable[[str], bool]) -> np.ndarray:
    cats = series.cat.categories
    table = np.fromiter((bool(test(str(c))) for c in cats), dtype=bool, count=len(cats))
    codes = series.cat.codes.to_numpy()
    # code -1 (missing) reads as '' like the parser's empty strings
    table = np.append(table, bool(test("")))
    return table[codes]


def matches(series: pd.Series, test: Callable[[str], bool]) -> np.ndarray:
    """``test(value)`` per row, decided once per distinct value for a categorical column."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return _codes_and_table(series, test)
    values = series.to_numpy()
    uniq, inv = np.unique(values.astype(str), return_inverse=True)
    table = np.fromiter((bool(test(str(u))) for u in uniq), dtype=bool, count=len(uniq))
    return table[inv.ravel()] if len(uniq) else np.zeros(len(values), dtype=bool)


def equals(series: pd.Series, value: str) -> np.ndarray:
    """Rows whose value is ``value`` (a bool array)."""
    value = str(value)
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = series.cat.categories
        codes = series.cat.codes.to_numpy()
        if value == "":
            hit = np.flatnonzero(cats == "")
            return (codes == -1) | (codes == hit[0] if len(hit) else False)
        try:
            return codes == cats.get_loc(value)
        except KeyError:
            return np.zeros(len(series), dtype=bool)
    return series.to_numpy().astype(str) == value


def isin(series: pd.Series, values: Iterable[str]) -> np.ndarray:
    """Rows whose value is one of ``values`` (a bool array)."""
    wanted = {str(v) for v in values}
    return matches(series, wanted.__contains__)


def strings(series: pd.Series) -> np.ndarray:
    """The column as an array of Python strings, built once per distinct value ('' for a
    missing value); for the few rows that really need their text."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = np.array([str(c) for c in series.cat.categories] + [""], dtype=object)
        return cats[series.cat.codes.to_numpy()]
    return series.to_numpy().astype(str).astype(object)
