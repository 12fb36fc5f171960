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
   variant for the overlap its own schedule produces; on a link with a burst credit
   (:mod:`replay.link_credit`) every schedule it reads is the one with each collective
   credited for the idle time before it, and the variant's collectives keep that credit;
5. the edited graph is replayed (:func:`replay.timeline.replay`).

On such a link the what-ifs edit the run's graph with every collective's duration as on
a busy link (the measured one plus the credit the run's own schedule gave it), the
durations the calibrated curves give new collectives too.

No stage knows which what-ifs exist: each what-if says which stage it belongs to and what
it needs (:mod:`replay.whatif.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from replay.anchored_cost import anchor_to_run
from replay.calibration import CalibratedCostModel, load_comm_model
from replay.cost_model import CommCostModel, FittedCostModel, fit_run_cost_model
from replay.engine import schedule, schedule_full
from replay.interference import InterferenceModel, Retimed, choose_interference
from replay.interference.model import from_origin
from replay.link_credit import LinkCredit, busy_durations, run_link_credit, wire_shares
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
    #: the link's burst credit (None: a link without one, or no calibration measured it)
    credit: LinkCredit | None = None
    #: with ``credit``: ``graph`` with every collective's busy-link duration (what the
    #: what-ifs edit), and per node what the baseline's schedule credited it
    busy_graph: Graph | None = None
    credit_saved: np.ndarray | None = None

    @property
    def edit_graph(self) -> Graph:
        """The graph the what-ifs edit: the busy-link one where the link has a credit."""
        return self.busy_graph if self.busy_graph is not None else self.graph


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
    credit = run_link_credit(run, graph, given)
    busy, saved = graph, None
    if credit is not None:
        dur, saved = busy_durations(graph, credit, sched.start_ns, sched.end_ns)
        busy = with_durations(graph, np.rint(dur).astype(np.int64))
    model = choose_interference(interference, run, busy, sched.start_ns, sched.end_ns,
                                comm_model=given)
    comm, fitted, notes = _comm_model(run, model.cost_fit_graph(busy), given)
    notes += given.link_notes if given is not None else []
    if credit is not None:
        steps = max(len(np.unique(graph.step[graph.step >= 0])), 1)
        notes.append(f"link credit: the run's collectives were credited "
                     f"{saved.sum() / 1e6 / steps:.1f} ms per step by the link's bucket; "
                     "what-ifs re-credit theirs from their own idle gaps")
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
                         world=max(int(run.world_size), 1), notes=notes, credit=credit,
                         busy_graph=busy if credit is not None else None,
                         credit_saved=saved)


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
        if ctx.credit is not None:  # the same bucket of bytes at the variant's wire
            edit.link_burst_ns = edit.retiming.scaled(ctx.comm).link_burst_ns()
    edit.retiming = None


def _devices_stage(edit: VariantEdit, what_ifs) -> None:
    for t in what_ifs:
        t.apply(edit)


_STAGES = {Stage.GRADIENTS: _gradients_stage, Stage.NETWORK: _network_stage,
           Stage.DEVICES: _devices_stage}


def _retime(ctx: WhatIfContext, edit: VariantEdit, graph: Graph) -> tuple[np.ndarray, Retimed]:
    """The variant's final durations: interference for its own schedule and, on a link
    with a burst credit, each collective credited for the idle time before it in that
    schedule (every schedule the interference model reads is the credited one); with
    the interference model's :class:`Retimed` (its notes)."""
    plain = lambda d, g=graph: schedule(with_durations(g, d))  # noqa: E731
    if ctx.credit is None:
        timed = ctx.interference.retime(graph, edit.origin, plain)
        return timed.dur_ns, timed
    credit = replace(ctx.credit, wire_share=wire_shares(graph, ctx.comm, ctx.world))
    if edit.link_burst_ns is not None:  # the variant's wire
        credit = replace(credit, burst_ns=edit.link_burst_ns)
    saved = from_origin(ctx.credit_saved, edit.origin, 0.0)  # exact for kept nodes

    def credited(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal saved
        saved, start, end = credit.settle(graph, d, plain, start=saved)
        return start, end

    timed = ctx.interference.retime(graph, edit.origin, credited)
    saved = credit.settle(graph, timed.dur_ns, plain, start=saved)[0]
    return np.rint(timed.dur_ns - saved).astype(np.int64), timed


def predict(ctx: WhatIfContext, variant: Variant) -> tuple[ReplayResult, list[str]]:
    """Replay one variant; returns the result and notes about what was assumed."""
    _check_needs(ctx, variant)
    edit = VariantEdit(ctx=ctx, graph=ctx.edit_graph, origin=np.arange(ctx.graph.n_nodes),
                       fsdp=ctx.fsdp)
    for stage in Stage:
        what_ifs = [t for t in variant.transforms if t.stage is stage]
        if stage is Stage.NETWORK:  # durations are edited from here on
            edit.dur_ns = edit.graph.dur_ns.copy()
        if what_ifs:
            _STAGES[stage](edit, what_ifs)
    check_total_ns(edit.dur_ns, variant.spec)
    graph = with_durations(edit.graph, edit.dur_ns)
    dur, timed = _retime(ctx, edit, graph)
    check_total_ns(dur, variant.spec)
    notes = [*edit.notes, *timed.notes]
    final = with_durations(graph, dur)
    del edit, graph, timed  # the edit's per-node arrays go before the replay's own
    return replay(ctx.run, final), notes
