"""What a replay returns; every view and the CLI consume these, measured or predicted.

``timeline`` is an event table with the columns of
:data:`tracekit.core.schema.EVENT_COLUMNS` (so every view draws measured and predicted
runs the same way), plus three columns appended at the end:

    node (int64)       graph node id of the row
    critical (bool)    on the critical path of its step
    measured_ts_ns     the measured start of the same node (-1 for synthetic nodes)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True, kw_only=True)
class CriticalPath:
    """The longest chain of dependent work through one step (or the whole replay)."""

    #: node ids in execution order
    nodes: list[int]
    #: ns on the path per node kind name ('compute', 'comm', 'launch', 'sync', 'host',
    #: 'memcpy') plus 'gap' for edge delays between path nodes
    by_kind_ns: dict[str, int]
    #: ns on the path per lane name, e.g. {'rank0 cpu main': 41_000_000}
    by_lane_ns: dict[str, int]
    total_ns: int
    #: ns on the path per rank (a gap between two path nodes counts for the later one's
    #: rank), summing to ``total_ns``: through which rank the path runs
    by_rank_ns: dict[int, int] = field(default_factory=dict)


class ReplayResult:
    """One replay of one graph (baseline or a what-if variant).

    The predicted ``timeline`` is built on first access (``timeline_factory``): a command
    that prints step times never pays for a table of every node.
    """

    def __init__(self, *, step_ms: dict[int, float], measured_step_ms: dict[int, float],
                 timeline: pd.DataFrame | None = None,
                 timeline_factory: Callable[[], pd.DataFrame] | None = None,
                 critical_path: CriticalPath | None = None,
                 notes: list[str] | None = None, schedule=None, graph=None) -> None:
        #: predicted step time per step, ms (slowest rank)
        self.step_ms = step_ms
        #: measured step time per step, ms (slowest rank), for the same steps
        self.measured_step_ms = measured_step_ms
        self.critical_path = critical_path
        #: statements worth printing next to the numbers (assumptions, fallbacks)
        self.notes = list(notes) if notes is not None else []
        self._timeline = timeline
        self._factory = timeline_factory
        #: the graph replayed and the engine's schedule of it (replay.engine.Schedule),
        #: when the replay kept them (what-if fitting reuses the baseline's)
        self.graph = graph
        self.schedule = schedule

    @property
    def timeline(self) -> pd.DataFrame | None:
        """Predicted timeline (event-table columns + node, critical, measured_ts_ns)."""
        if self._timeline is None and self._factory is not None:
            self._timeline, self._factory = self._factory(), None
        return self._timeline

    @timeline.setter
    def timeline(self, value: pd.DataFrame | None) -> None:
        self._timeline, self._factory = value, None

    def __repr__(self) -> str:
        return (f"ReplayResult(step_ms={self.step_ms!r}, "
                f"measured_step_ms={self.measured_step_ms!r}, notes={self.notes!r})")

    @property
    def median_step_ms(self) -> float:
        v = sorted(self.step_ms.values())
        return float(pd.Series(v).median()) if v else float("nan")

    @property
    def median_measured_ms(self) -> float:
        v = sorted(self.measured_step_ms.values())
        return float(pd.Series(v).median()) if v else float("nan")

    @property
    def error_pct(self) -> float:
        """Signed error of the median predicted step vs the median measured step, %."""
        m = self.median_measured_ms
        return (self.median_step_ms - m) / m * 100.0 if m else float("nan")


@dataclass(kw_only=True)
class WhatIfResult:
    """One what-if variant, predicted."""

    #: the spec as given, e.g. 'fusion=64MB+dear'
    spec: str
    result: ReplayResult
    #: baseline replay's median step / this variant's median step (> 1 is faster)
    speedup: float
    #: for a sweep: every point, (spec, step_ms), in sweep order; [] otherwise
    sweep: list[tuple[str, float]] = field(default_factory=list)
    #: for a sweep: the best point's spec; '' otherwise
    best_spec: str = ""
    #: what this variant assumed (its own notes)
    notes: list[str] = field(default_factory=list)
    #: notes every what-if of the run shares (cost models, interference), said once
    shared_notes: list[str] = field(default_factory=list)
    #: 95% intervals of the variant's median step (ms) and of the speedup
    #: (:mod:`replay.intervals`); NaN when not computed
    step_ms_lo: float = float("nan")
    step_ms_hi: float = float("nan")
    speedup_lo: float = float("nan")
    speedup_hi: float = float("nan")
    #: the baseline median step (ms) the speedup is against: the baseline replay, without
    #: the profiler's cost when the run says what it was (:mod:`replay.profiler_overhead`)
    baseline_ms: float = float("nan")
