"""From a loaded run to what the views draw: replay, what-ifs, summary.

The views only depend on the result contracts (:mod:`replay.result`); this module calls
the engines that produce them, imported lazily so that a build without one of them still
draws what it can and says clearly what is missing:

- ``tracekit.graph.build.build_graph(run)`` and ``replay.timeline.replay(run, graph)``
  -> the baseline :class:`~replay.result.ReplayResult`;
- ``replay.whatif.evaluate(run, graph, baseline, specs, comm_model=None)``
  -> one :class:`~replay.result.WhatIfResult` per spec;
- ``tracekit.analysis.breakdown.summarize(run)`` -> the per-rank, per-step summary.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from replay.result import ReplayResult, WhatIfResult
from tracekit.core.run import Run
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)


def _engine(module: str, attr: str, what: str, hint: str) -> Callable:
    """``module.attr``, or a TracekitError saying that ``what`` is missing from this build."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise TracekitError(f"{what} ({module}) is not part of this tracekit build; "
                                f"install a complete tracekit, or {hint}") from None
        raise
    fn = getattr(mod, attr, None)
    if fn is None:
        raise TracekitError(f"{what} ({module}.{attr}) is missing from this tracekit build; "
                            f"install a complete tracekit, or {hint}")
    return fn


@dataclass(frozen=True, kw_only=True)
class Replayed:
    """A run with its baseline replay and the graph it replayed (for what-ifs)."""

    run: Run
    graph: Any
    baseline: ReplayResult


def replay_baseline(run: Run, *, hint: str = "pass --measured-only") -> Replayed:
    """Build the run's global graph and replay it."""
    build_graph = _engine("tracekit.graph.build", "build_graph", "the graph builder", hint)
    replay = _engine("replay.timeline", "replay", "the replay engine", hint)
    graph = build_graph(run)
    baseline = replay(run, graph)
    return Replayed(run=run, graph=graph, baseline=baseline)


def evaluate_whatifs(replayed: Replayed, specs: Sequence[str], *,
                     comm_model: Any = None) -> list[WhatIfResult]:
    """Predict every what-if ``spec`` against the baseline replay."""
    if not specs:
        return []
    evaluate = _engine("replay.whatif", "evaluate", "the what-if engine",
                       "leave out --what-if to draw the baseline replay")
    return list(evaluate(replayed.run, replayed.graph, replayed.baseline, list(specs),
                         comm_model=comm_model))


def summarize_run(run: Run) -> Any | None:
    """The run's per-rank, per-step summary, or None (logged) when the analysis module is
    not part of this build."""
    try:
        summarize = _engine("tracekit.analysis.breakdown", "summarize", "the summary", "")
    except TracekitError as exc:
        log.warning("%s", exc)
        return None
    return summarize(run)


def parse_ranks(text: str | None) -> list[int] | None:
    """``'0,1'`` -> [0, 1]; ``'0-3,8'`` -> [0, 1, 2, 3, 8]; None -> None."""
    if text is None or not text.strip():
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise TracekitError(f"--ranks {text!r} is not a list of ranks; write e.g. 0,1 or "
                            "0-3,8") from None
    return sorted(set(out))
