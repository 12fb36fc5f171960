"""The event table as plain numpy arrays, extracted once for graph assembly.

String columns stay categorical codes (a GPU trace has kernel names a thousand characters
long: never expand them per event); name tests run once per distinct name.

Before: ``Run.events`` (pandas, see :mod:`tracekit.core.schema`). After::

    EventArrays(row=[0, 1, ...], rank=[0, 0, ...], is_gpu=[False, ...],
                kind=[EventKind index, ...], name=[code, ...], names=['aten::mm', ...], ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

from tracekit.core.columns import equals
from tracekit.core.schema import EventKind

KIND_INDEX = {k.value: i for i, k in enumerate(EventKind)}


def kind_code(kind: EventKind) -> int:
    """The integer used for ``kind`` in :class:`EventArrays`."""
    return KIND_INDEX[kind.value]


#: ``EventArrays.kind`` of a row outside the graph's steps: no module looks at it
EXCLUDED = -1


@dataclass(frozen=True, kw_only=True)
class EventArrays:
    """Every row of an event table as numpy arrays (entry ``i`` is row ``i``); rows
    outside the graph's steps have ``kind`` :data:`EXCLUDED` and are never looked at."""

    rank: np.ndarray  #: int32
    is_gpu: np.ndarray  #: bool
    lane: np.ndarray  #: int64 thread or stream id
    ts: np.ndarray  #: int64 ns
    end: np.ndarray  #: int64 ns
    step: np.ndarray  #: int32
    kind: np.ndarray  #: int8, index into EventKind (see kind_code), EXCLUDED (-1)
    name: np.ndarray  #: int32 code into names
    names: list[str]
    collective: np.ndarray  #: int32 code into collectives ('' is a code too)
    collectives: list[str]
    pg_name: np.ndarray  #: int32 code into pg_names
    pg_names: list[str]
    correlation: np.ndarray  #: int64
    comm_bytes: np.ndarray  #: int64
    group_size: np.ndarray  #: int32
    seq: np.ndarray  #: int64
    wait_on_stream: np.ndarray  #: int64
    wait_on_corr: np.ndarray  #: int64

    def __len__(self) -> int:
        return len(self.kind)

    def rows(self, lo: int, hi: int) -> EventArrays:
        """Rows ``lo..hi-1`` (views; entry ``i`` of the result is row ``lo + i``)."""
        sliced = {f.name: getattr(self, f.name)[lo:hi] for f in fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        return replace(self, **sliced)

    def rank_chunks(self, rows: int = 500_000) -> list[tuple[int, int]]:
        """Row ranges ``(lo, hi)`` of whole ranks, about ``rows`` rows each (one range
        when the rows are not sorted by rank): stages that need several arrays per event
        work one chunk at a time, so their scratch memory does not grow with the world."""
        rank = self.rank
        n = len(rank)
        if n <= rows or not bool((rank[1:] >= rank[:-1]).all()):
            return [(0, n)]
        starts = np.flatnonzero(np.concatenate([[True], rank[1:] != rank[:-1]]))
        out, lo = [], 0
        for s in starts[1:].tolist():
            if s - lo >= rows:
                out.append((lo, s))
                lo = s
        out.append((lo, n))
        return out

    @property
    def in_graph(self) -> np.ndarray:
        """Rows of the graph's steps (kind is not :data:`EXCLUDED`)."""
        return self.kind != EXCLUDED

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
        codes = series.cat.codes.to_numpy()  # int8 / int16 / int32: indexes all the same
        cats = [str(c) for c in series.cat.categories]
        if len(codes) and codes.min() < 0:  # NaN -> ''
            cats = cats + [""]
            codes = np.where(codes < 0, len(cats) - 1, codes).astype(np.int32)
        return codes, cats
    codes, uniques = pd.factorize(series.fillna("").astype(str))
    return codes.astype(np.int32), [str(u) for u in uniques]


def event_arrays(events: pd.DataFrame, keep: np.ndarray | None = None) -> EventArrays:
    """The columns graph assembly needs, as read-only views of the event table (no copy:
    a 256-rank run's table is not duplicated while its graph is built); rows where
    ``keep`` is False get kind :data:`EXCLUDED`."""

    def view(values: np.ndarray) -> np.ndarray:
        out = values.view()
        out.flags.writeable = False
        return out

    def ints(col: str) -> np.ndarray:
        values = events[col].to_numpy()
        return view(values) if values.dtype == np.int64 else values.astype(np.int64)

    kind_codes, kind_cats = _codes(events["kind"])
    remap = np.array([KIND_INDEX.get(c, KIND_INDEX[EventKind.CPU_OP.value]) for c in kind_cats]
                     or [0], dtype=np.int8)
    kind = remap[kind_codes]
    if keep is not None:
        kind[~np.asarray(keep, dtype=bool)] = EXCLUDED
    name, names = _codes(events["name"])
    coll, colls = _codes(events["collective"])
    pg, pgs = _codes(events["pg_name"])
    return EventArrays(
        rank=view(events["rank"].to_numpy()),
        is_gpu=equals(events["lane_kind"], "gpu"),
        lane=ints("lane"),
        ts=ints("ts_ns"),
        end=ints("end_ns"),
        step=view(events["step"].to_numpy()),
        kind=kind,
        name=name,
        names=names,
        collective=coll,
        collectives=colls,
        pg_name=pg,
        pg_names=pgs,
        correlation=ints("correlation"),
        comm_bytes=ints("comm_bytes"),
        group_size=view(events["group_size"].to_numpy()),
        seq=ints("seq"),
        wait_on_stream=ints("wait_on_stream"),
        wait_on_corr=ints("wait_on_corr"),
    )
