"""The library's front door: one run, loaded once, replayed once, what-ifs on demand.

Every command that replays or predicts (``tracekit replay``, ``timeline``, ``report``)
goes through a :class:`Session`, so the same :class:`PredictionOptions` give the same
numbers everywhere::

    >>> from tracekit.api import PredictionOptions, Session
    >>> s = Session("runs/mlp", PredictionOptions(interference="factor"))  # doctest: +SKIP
    >>> s.baseline.median_step_ms, s.baseline.error_pct                    # doctest: +SKIP
    (23.9, 0.29)
    >>> [(w.spec, round(w.speedup, 3)) for w in s.what_ifs(["fusion=4MB", "dear"])]  # doctest: +SKIP
    [('fusion=4MB', 1.255), ('dear', 0.651)]

Pipeline: :func:`tracekit.core.run.load_run` -> :func:`tracekit.graph.build.build_graph`
-> :func:`replay.timeline.replay` (the baseline, with its error against the measured
steps) -> :func:`replay.whatif.evaluate_in` (each what-if against that baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from replay.interference import INTERFERENCE_MODELS, check_interference_name
from replay.result import ReplayResult, WhatIfResult
from replay.timeline import replay
from replay.whatif import WhatIfContext, build_context, evaluate_in, parse_spec
from tracekit.analysis.breakdown import summarize
from tracekit.core.ingest import IngestOptions
from tracekit.core.run import Run, load_run
from tracekit.errors import TracekitError
from tracekit.graph.build import build_graph
from tracekit.graph.model import Graph
from tracekit.log import get_logger

log = get_logger(__name__)

__all__ = ["INTERFERENCE_MODELS", "IngestOptions", "PredictionOptions", "Session"]


@dataclass(frozen=True, kw_only=True)
class PredictionOptions:
    """How a run is replayed and its what-ifs predicted: the same for every command."""

    #: replay only these steps (None: every step present on every rank)
    steps: tuple[int, ...] | None = None
    #: collective costs: a ``comm.json`` written by ``tracekit calibrate``, or None to fit
    #: them on the run's own collectives
    comm_model: str | Path | None = None
    #: how overlap slows work down in a what-if: "auto" (core sharing on CPU-only runs,
    #: the fitted factor on GPU runs), "cores", "factor" or "none"
    interference: str = "auto"

    def __post_init__(self) -> None:
        check_interference_name(self.interference)
        if self.steps is not None:
            steps = tuple(self.steps)
            if not steps:
                object.__setattr__(self, "steps", None)
            elif any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in steps):
                raise TracekitError(f"steps must be step numbers >= 0, not {list(steps)}; "
                                    "e.g. --step 6 (the N of ProfilerStep#N)")
            else:
                object.__setattr__(self, "steps", steps)
        if self.comm_model is not None and not Path(self.comm_model).is_file():
            raise TracekitError(f"--comm-model {self.comm_model}: no such file; write one with "
                                "'tracekit calibrate --out comm.json -- torchrun "
                                "--nproc_per_node 2'")


class Session:
    """One run with its graph, its baseline replay and a what-if context, each built
    once on first use (see module doc)."""

    def __init__(self, source: Run | str | Path | Sequence[str | Path],
                 options: PredictionOptions | None = None, *, progress: bool = False,
                 ingest: IngestOptions | None = None) -> None:
        """``source``: a loaded :class:`Run`, a run folder, one trace file, or a list of
        trace files; ``progress`` logs one line per file parsed and per stage; ``ingest``:
        worker processes, cache and Dask cluster for reading the traces
        (:class:`~tracekit.core.ingest.IngestOptions`)."""
        self.options = options or PredictionOptions()
        self._progress = progress
        if isinstance(source, Run):
            self.run = source
        else:
            paths = list(source) if isinstance(source, list | tuple) else source
            if isinstance(paths, list) and len(paths) == 1:
                paths = paths[0]
            self.run = load_run(paths, progress=progress, ingest=ingest)

    @cached_property
    def graph(self) -> Graph:
        """The global dataflow graph of the replayed steps."""
        if self._progress:
            log.info("building the dataflow graph")
        steps = list(self.options.steps) if self.options.steps else None
        return build_graph(self.run, steps=steps)

    @cached_property
    def baseline(self) -> ReplayResult:
        """The graph replayed as recorded: predicted vs measured step, with the error."""
        if self._progress:
            log.info("replaying %d nodes", self.graph.n_nodes)
        return replay(self.run, self.graph)

    @cached_property
    def context(self) -> WhatIfContext:
        """Cost models, interference model and gradient sync, fitted once for the run."""
        return build_context(self.run, self.graph, self.baseline,
                             comm_model=self.options.comm_model,
                             interference=self.options.interference)

    def what_ifs(self, specs: Sequence[str]) -> list[WhatIfResult]:
        """Predict every spec against the baseline, in order (see
        :func:`replay.whatif.evaluate`)."""
        if not specs:
            return []
        parsed = [parse_spec(s) for s in specs]  # a typo fails before anything is fitted
        if self._progress:
            log.info("predicting %d what-if(s)", len(specs))
        return evaluate_in(self.context, parsed)

    def summary(self):
        """Per-rank, per-step time breakdown (:func:`tracekit.analysis.breakdown.summarize`)."""
        return summarize(self.run)
