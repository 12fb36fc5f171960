"""What-if predictions: edit the replay graph the way an optimization would change the
run, re-time it with cost models fitted on the run, and replay.

The one entry point is :func:`evaluate` (the library's front door,
:class:`tracekit.api.Session`, calls it). Each what-if is one module here that registers
itself (:mod:`replay.whatif.registry`: ``fusion``, ``overlap``, ``dear``, ``bandwidth``,
``comm_scale``, ``workers``, ``compute_scale``, ``stragglers``, ``slow_rank``,
``reshard``, ``fsdp``); SPEC strings are parsed by :mod:`replay.whatif.spec`; the
gradient re-planning the DDP what-ifs share is in ``gradients``, ``bucketing``,
``rewrite`` and ``splice``, the FSDP ones' in ``fsdp_gather`` and ``fsdp_plan``, network
re-timing in ``retiming``, the per-variant pipeline in ``predict``.

Example::

    >>> from replay.whatif import evaluate
    >>> res = evaluate(run, graph, baseline, ["fusion=4MB", "fusion=1MB..64MB"])  # doctest: +SKIP
    >>> res[0].spec, round(res[0].speedup, 3), res[1].best_spec                  # doctest: +SKIP
    ('fusion=4MB', 1.042, 'fusion=16MB')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from replay.interference import NoInterference
from replay.intervals import comm_log_width, speedup_interval, step_interval
from replay.result import ReplayResult, WhatIfResult
from replay.validated_error import validated_error
from replay.whatif.predict import WhatIfContext, build_context, predict
from replay.whatif.spec import Variant, WhatIfSpec, parse_spec
from tracekit.core.run import Run
from tracekit.graph.model import Graph
from tracekit.log import get_logger

log = get_logger(__name__)

__all__ = ["evaluate", "evaluate_in", "build_context", "predict", "parse_spec", "WhatIfContext"]


def _speedup(baseline: ReplayResult, result: ReplayResult) -> float:
    v = result.median_step_ms
    return baseline.median_step_ms / v if v > 0 else float("nan")


def evaluate(run: Run, graph: Graph, baseline: ReplayResult, specs: Sequence[str | WhatIfSpec],
             *, comm_model=None, interference: str = "auto") -> list[WhatIfResult]:
    """Predict every spec (one :class:`WhatIfResult` per spec, in order).

    Args:
        run, graph, baseline: the run, its graph (from ``build_graph``) and the graph's
            baseline replay; speedups are ``baseline.median_step_ms / variant``.
        specs: SPEC strings (``'fusion=4MB'``, ``'fusion=64MB+dear'``,
            ``'fusion=1MB..256MB'``) or parsed :class:`WhatIfSpec`.
        comm_model: a ``comm.json`` path from ``tracekit calibrate`` or a cost model;
            None fits the collectives of the run itself.
        interference: how overlap slows work down in each variant: ``"auto"`` (default:
            ``"cores"`` for CPU-only runs, core sharing as in
            :mod:`replay.interference.cores`; ``"factor"`` when the run has GPU lanes, the
            compute-beside-comm factor of :mod:`replay.interference.factor`), either by
            name, or ``"none"`` (durations as the what-ifs set them).

    A sweep's result is its best point (lowest median step time); ``sweep`` lists every
    point and ``best_spec`` names the best.
    """
    parsed = [s if isinstance(s, WhatIfSpec) else parse_spec(s) for s in specs]
    ctx = build_context(run, graph, baseline, comm_model=comm_model, interference=interference)
    return evaluate_in(ctx, parsed)


def evaluate_in(ctx: WhatIfContext, specs: Sequence[str | WhatIfSpec]) -> list[WhatIfResult]:
    """:func:`evaluate` with the run's context already built (:func:`build_context`)."""
    parsed = [s if isinstance(s, WhatIfSpec) else parse_spec(s) for s in specs]
    shared = shared_notes(ctx)
    out = []
    for spec in parsed:
        points = []
        for variant in spec.variants:
            result, notes = predict(ctx, variant)
            points.append((variant, result, notes))
            log.info("what-if %s: %.3f ms", variant.spec, result.median_step_ms)
        best_v, best_r, best_n = min(points, key=lambda p: p[1].median_step_ms)
        out.append(_result(ctx, spec, best_v, best_r, best_n, shared,
                           [(v.spec, r.median_step_ms) for v, r, _ in points]
                           if spec.is_sweep else []))
    return out


def shared_notes(ctx: WhatIfContext) -> list[str]:
    """What every what-if of the run assumes: cost models and the interference model."""
    common = list(ctx.notes)
    if ctx.comm is not None:
        common.append(f"collective costs: {ctx.comm.fit_for('all_reduce', 1 << 20).describe()}")
    if not isinstance(ctx.interference, NoInterference):
        common.append(ctx.interference.describe())
    return common


def _comm_residual(ctx: WhatIfContext, variant: Variant) -> float:
    """The largest median relative residual of the collectives the variant re-times by
    model (NaN: none are, or the model has no residual)."""
    if ctx.comm is None or not any(t.needs_comm_model for t in variant.transforms):
        return float("nan")
    colls = ("all_reduce", "reduce_scatter", "all_gather")
    res = [ctx.comm.fit_for(c, 1 << 20).median_rel_residual for c in colls]
    res = [r for r in res if math.isfinite(r)]
    return max(res) if res else float("nan")


def _result(ctx: WhatIfContext, spec: WhatIfSpec, variant: Variant, result: ReplayResult,
            notes: list[str], shared: list[str], sweep: list[tuple[str, float]]
            ) -> WhatIfResult:
    speedup = _speedup(ctx.baseline, result)
    width = comm_log_width(result, _comm_residual(ctx, variant))
    measured = validated_error(t.key for t in variant.transforms)
    if measured is not None:
        width = max(width, measured.log_width)
        notes = [*notes, measured.note()]
    else:
        notes = [*notes, "interval from the model alone: no prediction of this kind has been "
                         "checked against measured runs"]
    step = step_interval(result, width)
    sp = speedup_interval(ctx.baseline, result, speedup, width)
    return WhatIfResult(spec=spec.text, result=result, speedup=speedup, sweep=sweep,
                        best_spec=variant.spec if spec.is_sweep else "", notes=list(notes),
                        shared_notes=shared, step_ms_lo=step.lo, step_ms_hi=step.hi,
                        speedup_lo=sp.lo, speedup_hi=sp.hi,
                        baseline_ms=ctx.baseline.median_step_ms)
