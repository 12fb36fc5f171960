"""The event table as plain numpy arrays, extracted once for graph assembly.

String columns stay categorical codes (a GPU trace has kernel names a thousand characters
long: never expand them per event); name tests run once per distinct name.

Before: ``Run.events`` (pandas, see :mod:`tracekit.core.schema`). After::

    EventArrays(row=[0, 1, ...], rank=[0, 0, ...], is_gpu=[False, ...],
                kind=[EventKind index, ...], name=[code, ...], names=['aten::mm', ...], ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tracekit.core.schema import EventKind

KIND_INDEX = {k.value: i for i, k in enumerate(EventKind)}


def kind_code(kind: EventKind) -> int:
    """The integer used for ``kind`` in :class:`EventArrays`."""
    return KIND_INDEX[kind.value]


@dataclass(frozen=True, kw_only=True)
class EventArrays:
    """Selected rows of an event table as numpy arrays (one entry per kept event)."""

    row: np.ndarray  #: int64 row index into Run.events
    rank: np.ndarray  #: int64
    is_gpu: np.ndarray  #: bool
    lane: np.ndarray  #: int64 thread or stream id
    ts: np.ndarray  #: int64 ns
    end: np.ndarray  #: int64 ns
    step: np.ndarray  #: int64
    kind: np.ndarray  #: int8, index into EventKind (see kind_code)
    name: np.ndarray  #: int32 code into names
    names: list[str]
    collective: np.ndarray  #: int32 code into collectives ('' is a code too)
    collectives: list[str]
    pg_name: np.ndarray  #: int32 code into pg_names
    pg_names: list[str]
    correlation: np.ndarray  #: int64
    comm_bytes: np.ndarray  #: int64
    group_size: np.ndarray  #: int64
    seq: np.ndarray  #: int64
    wait_on_stream: np.ndarray  #: int64
    wait_on_corr: np.ndarray  #: int64

    def __len__(self) -> int:
        return len(self.row)

    def name_matches(self, pattern: re.Pattern, idx: np.ndarray | None = None) -> np.ndarray:
        """``pattern.search(name)`` for every event (or the events at ``idx``)."""
        hit = np.array([bool(pattern.search(n)) for n in self.names] or [False], dtype=bool)
        codes = self.name if idx is None else self.name[idx]
        return hit[codes]

    def has_collective(self) -> np.ndarray:
        """True where the event carries a collective name (issue ops and comm work)."""
        empty = np.array([c == "" for c in self.collectives] or [True], dtype=bool)
        return ~empty[self.collective]


def _codes(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int32)
        cats = [str(c) for c in series.cat.categories]
        if (codes < 0).any():  # NaN -> ''
            cats = cats + [""]
            codes = np.where(codes < 0, len(cats) - 1, codes).astype(np.int32)
        return codes, cats
    codes, uniques = pd.factorize(series.fillna("").astype(str))
    return codes.astype(np.int32), [str(u) for u in uniques]


def event_arrays(events: pd.DataFrame, keep: np.ndarray | None = None) -> EventArrays:
    """Extract the columns graph assembly needs for the rows where ``keep`` is True."""
    idx = np.arange(len(events)) if keep is None else np.flatnonzero(keep)
    sub = events.iloc[idx]
    kind_codes, kind_cats = _codes(sub["kind"])
    remap = np.array([KIND_INDEX.get(c, KIND_INDEX[EventKind.CPU_OP.value]) for c in kind_cats]
                     or [0], dtype=np.int8)
    name, names = _codes(sub["name"])
    coll, colls = _codes(sub["collective"])
    pg, pgs = _codes(sub["pg_name"])

    def ints(col: str) -> np.ndarray:
        return sub[col].to_numpy().astype(np.int64, copy=True)

    return EventArrays(
        row=idx.astype(np.int64),
        rank=ints("rank"),
        is_gpu=(sub["lane_kind"].astype(str) == "gpu").to_numpy(),
        lane=ints("lane"),
        ts=ints("ts_ns"),
        end=ints("end_ns"),
        step=ints("step"),
        kind=remap[kind_codes],
        name=name,
        names=names,
        collective=coll,
        collectives=colls,
        pg_name=pg,
        pg_names=pgs,
        correlation=ints("correlation"),
        comm_bytes=ints("comm_bytes"),
        group_size=ints("group_size"),
        seq=ints("seq"),
        wait_on_stream=ints("wait_on_stream"),
        wait_on_corr=ints("wait_on_corr"),
    )
