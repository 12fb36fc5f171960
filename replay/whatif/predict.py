"""Predict one what-if variant: edit the graph, re-time, apply interference, replay.

:func:`build_context` fits everything once per run (collective costs, the interference
model, DDP's gradient synchronization); :func:`predict` then handles one
:class:`~replay.whatif.spec.Variant`, stage by stage
(:class:`~replay.whatif.registry.Stage`), whatever order the spec gives its what-ifs in:

1. ``GRADIENTS``: what-ifs edit a :class:`~replay.whatif.rewrite.GradientPlan` (fusion's
   buckets, overlap's issue points, DeAR's sync mode), which
   :func:`~replay.whatif.rewrite.materialize` then writes into the graph;
2. ``NETWORK``: what-ifs edit a :class:`~replay.whatif.retiming.CommRetiming`
   (bandwidth, comm-scale, workers), then every comm node is re-timed;
3. ``DEVICES``: what-ifs re-time compute nodes (compute-scale, stragglers, slow-rank);
4. interference: the run's :class:`~replay.interference.InterferenceModel` re-times the
   variant for the overlap its own schedule produces;
5. the edited graph is replayed (:func:`replay.timeline.replay`).

No stage knows which what-ifs exist: each what-if says which stage it belongs to and what
it needs (:mod:`replay.whatif.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from replay.calibration import CalibratedCostModel, anchor_to_run, load_comm_model
from replay.cost_model import CommCostModel, FittedCostModel, fit_run_cost_model
from replay.engine import schedule, schedule_full
from replay.interference import InterferenceModel, choose_interference
from replay.profiler_overhead import estimate as estimate_profiler_overhead
from replay.result import ReplayResult
from replay.timeline import replay
from replay.whatif.gradients import GradientSync, find_gradient_sync
from replay.whatif.registry import Stage
from replay.whatif.retiming import CommRetiming, node_group_sizes, retime_comm
from replay.whatif.rewrite import GradientPlan, materialize
from replay.whatif.spec import Variant
from replay.whatif.values import check_total_ns
from replay.whatif.variant_edit import VariantEdit
from tracekit.core.run import Run
from tracekit.errors import TracekitError
from tracekit.graph.edit import with_durations
from tracekit.graph.fsdp import FSDPGraph, find_fsdp
from tracekit.graph.model import Graph
from tracekit.log import get_logger

log = get_logger(__name__)


@dataclass(kw_only=True)
class WhatIfContext:
    """Everything fitted once per run, shared by all variants."""

    run: Run
    graph: Graph
    baseline: ReplayResult
    #: the collective cost model used (calibrated when given, else fitted from the run);
    #: None when the run has no collectives and no calibration was given
    comm: CommCostModel | None
    #: the model fitted from the run (always; a calibrated model may override it)
    fitted: FittedCostModel | None
    #: how overlap slows work down in this run (chosen once, see build_context)
    interference: InterferenceModel
    #: DDP's gradient sync, or None (then ``sync_error`` says why)
    sync: GradientSync | None
    sync_error: str = ""
    #: FSDP2's collectives in the graph (None: not an FSDP run)
    fsdp: FSDPGraph | None = None
    world: int = 1
    #: notes about the cost models and the interference fit, shared by every variant
    notes: list[str] = field(default_factory=list)


_NO_COMM_MODEL = ("the run has no collectives with known sizes to fit a cost model from; "
                  "pass --comm-model comm.json from 'tracekit calibrate'")


def _load(comm_model) -> CommCostModel | None:
    """None, a ``comm.json`` path or a model -> the model."""
    if comm_model is None or isinstance(comm_model, CommCostModel):
        return comm_model
    return load_comm_model(Path(comm_model))


def _comm_model(run: Run, graph: Graph, model: CommCostModel | None
                ) -> tuple[CommCostModel | None, FittedCostModel | None, list[str]]:
    notes: list[str] = []
    fitted = fit_run_cost_model(run, graph)
    if not fitted.fits:
        fitted = None
    if model is None:
        return fitted, fitted, notes
    if isinstance(model, CalibratedCostModel) and fitted is not None:
        ar = [f for (_, c), f in fitted.fits.items() if c == "all_reduce"]
        if ar:
            fit = max(ar, key=lambda f: f.n_points)
            model = anchor_to_run(model, fitted, list(fit.size_range),
                                  max(fit.group_sizes or (run.world_size,)))
            notes.append(model.notes[-1])
    return model, fitted, notes


def build_context(run: Run, graph: Graph, baseline: ReplayResult, *, comm_model=None,
                  interference: str = "auto",
                  without_profiler: bool = True) -> WhatIfContext:
    """Fit the cost models, the interference model and find DDP's gradient sync.

    ``comm_model``: None (fit from the run), a path to a ``comm.json``, or a model.
    ``interference``: a name of :data:`replay.interference.INTERFERENCE_MODELS`
    (:func:`replay.interference.choose_interference` says how ``"auto"`` chooses).
    ``without_profiler``: take the profiler's own cost out of the host nodes first
    (:mod:`replay.profiler_overhead`); the context's graph and baseline are then that
    graph and its replay, which every speedup is against.
    """
    overhead_note = ""
    if without_profiler:
        overhead, why = estimate_profiler_overhead(run, graph)
        if overhead is not None:
            graph = with_durations(graph, graph.dur_ns - overhead.removed_ns)
            baseline = replay(run, graph)
            overhead_note = overhead.note(baseline.median_step_ms)
        elif run.manifest is not None:
            overhead_note = why
    reuse = getattr(baseline, "graph", None) is graph and baseline.schedule is not None
    sched = baseline.schedule if reuse else schedule_full(graph)
    given = _load(comm_model)
    model = choose_interference(interference, run, graph, sched.start_ns, sched.end_ns,
                                comm_model=given)
    comm, fitted, notes = _comm_model(run, model.cost_fit_graph(graph), given)
    notes += model.notes
    if overhead_note:
        notes.append(overhead_note)
    sync, sync_error = None, ""
    try:
        sync = find_gradient_sync(run, graph)
    except TracekitError as exc:
        sync_error = str(exc)
    fsdp = find_fsdp(run, graph)
    if fsdp is not None:
        notes.append(fsdp.describe())
    return WhatIfContext(run=run, graph=graph, baseline=baseline, comm=comm, fitted=fitted,
                         interference=model, sync=sync, sync_error=sync_error, fsdp=fsdp,
                         world=max(int(run.world_size), 1), notes=notes)


def _check_needs(ctx: WhatIfContext, variant: Variant) -> None:
    if any(t.needs_comm_model for t in variant.transforms) and ctx.comm is None:
        raise TracekitError(f"{variant.spec}: {_NO_COMM_MODEL}")
    if any(t.needs_gradient_sync for t in variant.transforms) and ctx.sync is None:
        if ctx.fsdp is not None:
            raise TracekitError(f"{variant.spec}: this run is already an FSDP2 run, without "
                                "DDP's gradient all-reduces; re-plan it with reshard=off or "
                                "reshard=on")
        raise TracekitError(f"{variant.spec}: {ctx.sync_error}")


def _gradients_stage(edit: VariantEdit, what_ifs) -> None:
    ctx = edit.ctx
    if ctx.sync is not None:
        edit.plan = GradientPlan(buckets=ctx.sync.buckets)
        if any(t.needs_gradient_sync for t in what_ifs):
            edit.notes += ctx.sync.notes
    for t in sorted(what_ifs, key=lambda t: t.apply_order):
        t.apply(edit)
    if edit.plan is not None and not edit.plan.same_as(ctx.sync):
        cost = lambda coll, nbytes: ctx.comm.time_ns(coll, nbytes, ctx.world)  # noqa: E731
        rw = materialize(edit.graph, ctx.sync, edit.plan, cost_ns=cost,
                         contention=ctx.interference.comm_contention(edit.graph),
                         issue_ns=ctx.comm.issue_ns)
        edit.graph, edit.origin = rw.graph, rw.origin
        edit.notes += rw.notes
    edit.plan = None


def _network_stage(edit: VariantEdit, what_ifs) -> None:
    ctx = edit.ctx
    edit.retiming = CommRetiming()
    for t in what_ifs:
        t.apply(edit)
    if not edit.retiming.is_identity:
        edit.dur_ns = retime_comm(edit.graph, edit.dur_ns, ctx.comm, edit.retiming,
                                  node_group_sizes(edit.graph, ctx.world))
    edit.retiming = None


def _devices_stage(edit: VariantEdit, what_ifs) -> None:
    for t in what_ifs:
        t.apply(edit)


_STAGES = {Stage.GRADIENTS: _gradients_stage, Stage.NETWORK: _network_stage,
           Stage.DEVICES: _devices_stage}


def predict(ctx: WhatIfContext, variant: Variant) -> tuple[ReplayResult, list[str]]:
    """Replay one variant; returns the result and notes about what was assumed."""
    _check_needs(ctx, variant)
    edit = VariantEdit(ctx=ctx, graph=ctx.graph, origin=np.arange(ctx.graph.n_nodes),
                       fsdp=ctx.fsdp)
    for stage in Stage:
        what_ifs = [t for t in variant.transforms if t.stage is stage]
        if stage is Stage.NETWORK:  # durations are edited from here on
            edit.dur_ns = edit.graph.dur_ns.copy()
        if what_ifs:
            _STAGES[stage](edit, what_ifs)
    check_total_ns(edit.dur_ns, variant.spec)
    graph = with_durations(edit.graph, edit.dur_ns)
    timed = ctx.interference.retime(graph, edit.origin,
                                    lambda d, g=graph: schedule(with_durations(g, d)))
    check_total_ns(timed.dur_ns, variant.spec)
    notes = [*edit.notes, *timed.notes]
    final = with_durations(graph, timed.dur_ns)
    del edit, graph, timed  # the edit's per-node arrays go before the replay's own
    return replay(ctx.run, final), notes
