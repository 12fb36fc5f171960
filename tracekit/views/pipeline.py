"""From a loaded run to what the views draw: replay, what-ifs, summary.

The views only depend on the result contracts (:mod:`replay.result`); this module calls
the engines that produce them (the report also takes
``tracekit.analysis.breakdown.summarize(run)``):

- ``tracekit.graph.build.build_graph(run)`` and ``replay.timeline.replay(run, graph)``
  -> the baseline :class:`~replay.result.ReplayResult`;
- ``replay.whatif.evaluate(run, graph, baseline, specs, comm_model=None)``
  -> one :class:`~replay.result.WhatIfResult` per spec;
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from replay.result import ReplayResult, WhatIfResult
from replay.timeline import replay
from replay.whatif import evaluate
from tracekit.core.run import Run
from tracekit.errors import TracekitError
from tracekit.graph.build import build_graph


@dataclass(frozen=True, kw_only=True)
class Replayed:
    """A run with its baseline replay and the graph it replayed (for what-ifs)."""

    run: Run
    graph: Any
    baseline: ReplayResult


def replay_baseline(run: Run) -> Replayed:
    """Build the run's global graph and replay it."""
    graph = build_graph(run)
    baseline = replay(run, graph)
    return Replayed(run=run, graph=graph, baseline=baseline)


def evaluate_whatifs(replayed: Replayed, specs: Sequence[str], *,
                     comm_model: Any = None) -> list[WhatIfResult]:
    """Predict every what-if ``spec`` against the baseline replay."""
    if not specs:
        return []
    return list(evaluate(replayed.run, replayed.graph, replayed.baseline, list(specs),
                         comm_model=comm_model))


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
