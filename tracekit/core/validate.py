"""Which duration events of a trace can be used: the checks every ``"ph": "X"`` event
passes before it becomes a row of the event table (:mod:`tracekit.core.kineto`).

An event that cannot be used is dropped, never repaired into a plausible number, and
the drops of one file are said in one warning (:func:`tracekit.core.warnings.warn`)::

    rank0.json: 3 events dropped (2 with a negative dur, 1 with ts not a number)

An event is dropped when

- ``ts``, ``dur``, ``pid`` or ``tid`` is missing or not a number (``"ts": "12"`` is a
  string, not a time; ``pid``/``tid`` are ids: integers, or the strings old Kineto
  wrote for them, ``"tid": "1890023232"`` and ``"tid": "stream 7"``; a missing one is
  not thread 0);
- ``ts`` is not finite or beyond any clock (:data:`MAX_ABS_TS_US`, or its nanoseconds
  on the trace's base time beyond int64's comfortable range);
- ``dur`` is NaN or infinite, negative, longer than a day (:data:`MAX_DUR_US`), or
  orders of magnitude longer than the trace's whole span (:func:`_too_long`);
- it starts far outside the trace's time range: more than :data:`FAR_GAP_US` (or the
  profiler's own span, when longer) away from the events around it (:func:`_far_away`).

Kineto's own ``"pid": "Spans"`` event (``"Traces"`` in older Kineto: the profiler's
recording window) is not an operation: it is skipped without a word. When every duration event is dropped,
:func:`usable_events` raises :class:`~tracekit.errors.TracekitError` saying why.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from tracekit.core.warnings import warn
from tracekit.errors import TracekitError

#: µs: timestamps beyond this (about 285 years) are damage, not time
MAX_ABS_TS_US = 9e15
#: µs: no profiled operation lasts a day
MAX_DUR_US = 86_400e6
#: µs: a start this far from every other event is not part of the same recording
FAR_GAP_US = 3_600e6
#: a duration may exceed the trace's whole span W up to SPAN_FACTOR * W + SPAN_SLACK_US:
#: real steps overrun the profiler's window (torch.compile's first step: 13 s in a 0.36 s
#: window), damage is orders of magnitude off
SPAN_FACTOR, SPAN_SLACK_US = 10.0, 60e6
#: ns: every time must stay well inside int64 after adding the trace's base time
_MAX_ABS_NS = 2.0**62
#: Kineto's own recording-window event: ``"pid": "Spans"`` (``"Traces"`` before 2022)
_SPAN_PIDS = frozenset({"Spans", "Traces"})
#: ids written as text: an integer, or old Kineto's GPU ``"tid": "stream 7"``
_INT_TEXT = re.compile(r"^(?:stream )?-?[0-9]{1,18}$")

_OK, _SKIP = 0, 1
#: up to this many odd values (or dropped events) are found and handled one by one
_FEW = 64
#: reason code -> how the warning names it ("N with <reason>")
_REASONS = {
    2: "pid missing or not an integer", 3: "tid missing or not an integer", 4: "no ts", 5: "ts not a number",
    6: "no dur (a complete 'X' event needs one)", 7: "dur not a number",
    8: "ts not finite or beyond any clock", 9: "dur NaN or infinite", 10: "a negative dur",
    11: "dur longer than a day", 12: "a start far outside the trace's time range",
    13: "dur longer than the trace's whole span",
}
_PID_TYPE, _TID_TYPE, _NO_TS, _TS_TYPE, _NO_DUR, _DUR_TYPE = 2, 3, 4, 5, 6, 7
_TS_RANGE, _DUR_NAN, _NEG_DUR, _DAY, _FAR, _LONG = 8, 9, 10, 11, 12, 13


@dataclass(frozen=True)
class UsableEvents:
    """The duration events that pass every check, and the columns the checks read."""

    #: the decoded ``Event`` structs kept, in order
    events: list
    #: their ``ts`` and ``dur`` in µs (float64)
    ts_us: np.ndarray
    dur_us: np.ndarray
    #: their ``pid`` / ``tid`` (int64) when every one of them is an int; None when some
    #: are id text (``"tid": "stream 7"``), which the caller reads its own way
    pid: np.ndarray | None
    tid: np.ndarray | None

    def take(self, keep: np.ndarray) -> UsableEvents:
        """Only the events at positions ``keep`` (ascending)."""
        n_gone = len(self.events) - len(keep)
        if n_gone <= _FEW:  # usually Kineto's one Spans event: delete, not rebuild
            events = list(self.events)
            gone = np.ones(len(events), dtype=bool)
            gone[keep] = False
            for i in reversed(np.flatnonzero(gone).tolist()):
                del events[i]
        else:
            events = [self.events[i] for i in keep.tolist()]
        return UsableEvents(events=events,
                            ts_us=self.ts_us[keep], dur_us=self.dur_us[keep],
                            pid=None if self.pid is None else self.pid[keep],
                            tid=None if self.tid is None else self.tid[keep])


def usable_events(xs: list, path: Path, base_ns: int = 0) -> list:
    """The duration events of ``xs`` (decoded ``Event`` structs, see
    :mod:`tracekit.core.kineto_json`) that pass every check of the module doc, in order;
    one warning names what was dropped and why."""
    return usable_columns(xs, path, base_ns).events


def usable_columns(xs: list, path: Path, base_ns: int = 0) -> UsableEvents:
    """:func:`usable_events`, with the kept events' times and ids as arrays (read once,
    here, for the checks and for the event table)."""
    n = len(xs)
    codes = np.zeros(n, dtype=np.int8)
    pid = _check_ints([e.pid for e in xs], _PID_TYPE, codes, spans=True)
    tid = _check_ints([e.tid for e in xs], _TID_TYPE, codes)
    ts = _floats([e.ts for e in xs], _NO_TS, _TS_TYPE, codes)
    dur = _floats([e.dur for e in xs], _NO_DUR, _DUR_TYPE, codes)
    found = UsableEvents(events=xs, ts_us=ts, dur_us=dur, pid=pid, tid=tid)
    if not n:
        return found
    span_us = _profiler_span(xs, codes, ts, dur)
    with np.errstate(invalid="ignore", over="ignore"):
        _mark(codes, ~np.isfinite(ts) | ~(np.abs(ts) < MAX_ABS_TS_US)
              | ~(np.abs(ts * 1e3 + base_ns) < _MAX_ABS_NS), _TS_RANGE)
        _mark(codes, ~np.isfinite(dur), _DUR_NAN)
        _mark(codes, dur < 0, _NEG_DUR)
        _mark(codes, dur > MAX_DUR_US, _DAY)
    _far_away(codes, ts, span_us)
    _too_long(codes, ts, dur, span_us)
    dropped = codes > _SKIP
    if not dropped.any():
        return found if not (codes == _SKIP).any() else found.take(np.flatnonzero(codes == _OK))
    why = _why(codes)
    keep = np.flatnonzero(codes == _OK)
    if not len(keep):
        raise TracekitError(
            f"none of its {int(dropped.sum())} duration events can be used ({why}); "
            "re-export the trace with torch.profiler (export_chrome_trace)", path=str(path))
    warn(f"{path}: {int(dropped.sum())} events dropped ({why})")
    return found.take(keep)


def _why(codes: np.ndarray) -> str:
    found, counts = np.unique(codes[codes > _SKIP], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return ", ".join(f"{int(counts[i])} with {_REASONS[int(found[i])]}" for i in order)


def _mark(codes: np.ndarray, bad: np.ndarray, code: int) -> None:
    """Give ``code`` to the bad events that have no reason yet."""
    codes[bad & (codes == _OK)] = code


def _check_ints(values: list[Any], code: int, codes: np.ndarray,
                spans: bool = False) -> np.ndarray | None:
    """Mark ids that are not integers within ±2**62 (bools are not; a string of an integer
    is); with ``spans``, Kineto's ``"Spans"`` pid is skipped silently instead. Returns the
    ids as int64 when every one is an int (the usual case), else None."""
    types = list(map(type, values))
    text = False  # some id kept is text: its int is read by the caller
    odd_types = set(types) - {int}
    if odd_types:  # usually one "Spans" event: look at the odd ones only
        values = list(values)
        for i in _non_int_positions(types, odd_types):
            v = values[i]
            if v.__class__ is str and _INT_TEXT.match(v):
                values[i] = int(v.rpartition(" ")[2])
                text = True
                continue
            values[i] = 0
            if codes[i] == _OK:
                codes[i] = _SKIP if spans and v.__class__ is str and v in _SPAN_PIDS else code
    try:
        arr = np.fromiter(values, dtype=np.int64, count=len(values))
    except OverflowError:  # an int beyond int64: find it
        for i, v in enumerate(values):
            if not -(2**62) <= v <= 2**62:
                _mark_one(codes, i, code)
        return None
    _mark(codes, (arr > 2**62) | (arr < -(2**62)), code)
    return None if text else arr


def _non_int_positions(types: list[type], odd: set[type]) -> list[int]:
    """Ascending positions in ``types`` of the non-int types (``odd``: the set of them):
    by ``list.index`` (a C scan) while there are at most :data:`_FEW`, else by one
    comparison per element."""
    found: list[int] = []
    for t in odd:
        i = types.index(t)
        while True:
            found.append(i)
            if len(found) > _FEW:
                return np.flatnonzero(np.fromiter(map(operator.is_not, types, repeat(int)),
                                                  dtype=bool, count=len(types))).tolist()
            try:
                i = types.index(t, i + 1)
            except ValueError:
                break
    return sorted(found)


def _mark_one(codes: np.ndarray, i: int, code: int) -> None:
    if codes[i] == _OK:
        codes[i] = code


def _floats(values: list[Any], missing: int, wrong: int, codes: np.ndarray) -> np.ndarray:
    """float64 of int/float values; NaN (and a reason code) for anything else."""
    kinds = set(map(type, values))
    if kinds <= {float, int}:
        if kinds == {int}:  # via int64: numpy makes a float object of each int otherwise
            try:
                return np.fromiter(values, dtype=np.int64, count=len(values)).astype(np.float64)
            except OverflowError:  # an int beyond int64: float64 may still hold it
                pass
        try:
            return np.fromiter(values, dtype=np.float64, count=len(values))
        except OverflowError:  # an int beyond float64
            pass
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        t = type(v)
        if t is float or t is int:
            try:
                out[i] = v
                continue
            except OverflowError:
                pass
        if codes[i] == _OK:
            codes[i] = missing if v is None else wrong
    return out


def _profiler_span(xs: list, codes: np.ndarray, ts: np.ndarray, dur: np.ndarray) -> float:
    """µs: the longest plausible recording window of Kineto's ``Spans`` events, else 0."""
    spans = np.flatnonzero(codes == _SKIP)
    best = 0.0
    for i in spans.tolist():
        d = dur[i]
        if np.isfinite(d) and 0 < d < MAX_DUR_US and np.isfinite(ts[i]):
            best = max(best, float(d))
    return best


def _far_away(codes: np.ndarray, ts: np.ndarray, span_us: float) -> None:
    """Starts split off from the rest by a gap of more than :data:`FAR_GAP_US` (or the
    profiler's span, when longer): every cluster but the one holding most events goes."""
    ok = np.flatnonzero(codes == _OK)
    if len(ok) < 2:
        return
    order = ok[np.argsort(ts[ok], kind="stable")]
    t = ts[order]
    cuts = np.flatnonzero(np.diff(t) > max(FAR_GAP_US, span_us)) + 1
    if not len(cuts):
        return
    bounds = np.concatenate([[0], cuts, [len(t)]])
    sizes = np.diff(bounds)
    main = int(np.argmax(sizes))  # the first of equal clusters wins
    far = np.ones(len(t), dtype=bool)
    far[bounds[main]:bounds[main + 1]] = False
    codes[order[far]] = _FAR


def _too_long(codes: np.ndarray, ts: np.ndarray, dur: np.ndarray, span_us: float) -> None:
    """Durations beyond :data:`SPAN_FACTOR` times the trace's whole span W (the
    profiler's window, or the spread of the starts when longer) plus :data:`SPAN_SLACK_US`."""
    ok = np.flatnonzero(codes == _OK)
    if not len(ok):
        return
    width = max(float(ts[ok].max() - ts[ok].min()), span_us)
    codes[ok[dur[ok] > SPAN_FACTOR * width + SPAN_SLACK_US]] = _LONG
