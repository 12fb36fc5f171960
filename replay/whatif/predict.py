"""Predict one what-if variant: edit the graph, re-time, apply interference, replay.

:func:`build_context` fits everything once per run (collective costs, interference, DDP's
gradient synchronization, the baseline's overlap); :func:`predict` then handles one
:class:`~replay.whatif.spec.Variant`:

1. gradient plan: ``fusion=`` (new buckets), ``overlap=`` (issue points), ``dear``
   (reduce-scatter + all-gather) change a :class:`~replay.whatif.rewrite.GradientPlan`,
   which :func:`~replay.whatif.rewrite.materialize` writes into the graph;
2. network: ``bandwidth=``, ``comm-scale=``, ``workers=`` re-time every comm node;
3. devices: ``compute-scale=`` scales compute nodes;
4. interference: compute nodes are re-timed for the overlap with communication the
   variant produces (:func:`replay.interference.apply_interference`), with the run's
   overall factor (the per-op, per-rank ratios are too noisy to apply one by one): GPU
   runs; on CPU-only runs (the default ``interference="auto"``, or ``"cores"``) every
   node is re-timed for the core sharing the variant's own schedule produces
   (:mod:`replay.contention`: the threads of all ranks on a host share its cores, so
   overlap slows compute *and* communication);
5. the edited graph is replayed (:func:`replay.timeline.replay`).

Transforms combine in that order whatever order the spec gives them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from replay.calibration import CalibratedCostModel, anchor_to_run, load_comm_model
from replay.contention import HostCores, apply_contention, host_cores, slowdown
from replay.cost_model import CommCostModel, FittedCostModel, fit_run_cost_model
from replay.engine import schedule, schedule_full
from replay.interference import (
    InterferenceFit,
    apply_interference,
    fit_interference_graph,
    overlap_fraction,
)
from replay.result import ReplayResult
from replay.timeline import replay
from replay.whatif.dear import plan_dear
from replay.whatif.fusion import plan_fusion
from replay.whatif.gradients import GradientSync, find_gradient_sync
from replay.whatif.overlap import plan_overlap
from replay.whatif.rewrite import GradientPlan, materialize
from replay.whatif.scale import CommRetiming, node_group_sizes, retime_comm, scale_compute
from replay.whatif.spec import (
    Bandwidth,
    CommScale,
    ComputeScale,
    DeAR,
    Fusion,
    Overlap,
    Variant,
    Workers,
)
from replay.whatif.workers import retime_workers
from tracekit.core.run import Run
from tracekit.errors import TracekitError
from tracekit.graph.edit import with_durations
from tracekit.graph.model import Graph, NodeKind
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
    interference: InterferenceFit
    #: overlap fraction of every compute node with comm in the baseline replay
    base_frac: np.ndarray
    #: DDP's gradient sync, or None (then ``sync_error`` says why)
    sync: GradientSync | None
    sync_error: str = ""
    world: int = 1
    #: apply interference (the CLI and benchmarks always do; tests may switch it off)
    use_interference: bool = True
    #: CPU-only runs: hosts and cores for the core-sharing model (None: GPU run, the
    #: compute-beside-comm factor applies instead)
    contention: HostCores | None = None
    #: per node, the slowdown from core sharing in the measured run (CPU-only runs)
    base_slowdown: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


#: the interference models :func:`build_context` accepts ("auto": "cores" for CPU-only
#: runs, "factor" for runs with GPU lanes)
INTERFERENCE_MODELS = ("auto", "factor", "cores")

_NO_COMM_MODEL = ("the run has no collectives with known sizes to fit a cost model from; "
                  "pass --comm-model comm.json from 'tracekit calibrate'")


def _comm_model(run: Run, graph: Graph, comm_model
                ) -> tuple[CommCostModel | None, FittedCostModel | None, list[str]]:
    notes: list[str] = []
    fitted = fit_run_cost_model(run, graph)
    if not fitted.fits:
        fitted = None
    if comm_model is None:
        return fitted, fitted, notes
    model = comm_model if isinstance(comm_model, CommCostModel) else load_comm_model(
        Path(comm_model))
    if isinstance(model, CalibratedCostModel) and fitted is not None:
        ar = [f for (_, c), f in fitted.fits.items() if c == "all_reduce"]
        if ar:
            fit = max(ar, key=lambda f: f.n_points)
            model = anchor_to_run(model, fitted, list(fit.size_range),
                                  max(fit.group_sizes or (run.world_size,)))
            notes.append(model.notes[-1])
    return model, fitted, notes


def build_context(run: Run, graph: Graph, baseline: ReplayResult, *, comm_model=None,
                  use_interference: bool = True, interference: str = "auto"
                  ) -> WhatIfContext:
    """Fit the cost models and find DDP's gradient sync (see module doc).

    ``comm_model``: None (fit from the run), a path to a ``comm.json``, or a model.
    ``interference``: ``"factor"`` (compute slows by the factor fitted from the run while
    comm overlaps it: GPU runs, where NCCL kernels take SMs from compute kernels),
    ``"cores"`` (CPU-only runs: every thread of a host shares its cores, so overlap slows
    communication as well as compute, :mod:`replay.contention`), or ``"auto"`` (the
    default: ``"cores"`` for a CPU-only run, else ``"factor"``; on CPU gloo runs the cores
    model was the more accurate, see the README's figures).
    """
    contention, base_slowdown = None, None
    fit_graph = graph
    if interference not in INTERFERENCE_MODELS:
        raise TracekitError(f"interference must be one of {', '.join(INTERFERENCE_MODELS)}, "
                            f"not {interference!r}")
    cpu_only = graph.n_nodes and not any(ln.kind == "gpu" for ln in graph.lanes)
    if interference == "auto":
        interference = "cores" if cpu_only else "factor"
    sched = schedule_full(graph)
    if interference == "cores" and cpu_only:
        # cost models are fitted on contention-free transfer times, so a collective a
        # what-if creates starts uncontended and is slowed by its own schedule's sharing.
        # The slowdown inside each measured duration is read from the baseline *replay*
        # (as the factor model's overlap is): a variant that changes nothing then stays
        # exactly the baseline, whatever the replay moved by a few microseconds.
        contention = host_cores(run, graph)
        base_slowdown = slowdown(sched.start_ns, sched.end_ns,
                                 contention.host_of_rank[graph.rank], contention.cores)
        comm_nodes = graph.kind == NodeKind.COMM
        alone = np.where(comm_nodes, np.rint(graph.dur_ns / base_slowdown), graph.dur_ns)
        fit_graph = with_durations(graph, alone.astype(np.int64))
    comm, fitted, notes = _comm_model(run, fit_graph, comm_model)
    if contention is not None:
        notes += contention.notes
    sync, sync_error = None, ""
    try:
        sync = find_gradient_sync(run, graph)
    except TracekitError as exc:
        sync_error = str(exc)
    interference = fit_interference_graph(graph)
    comp = np.flatnonzero(graph.kind == NodeKind.COMPUTE)
    comm_nodes = np.flatnonzero(graph.kind == NodeKind.COMM)
    frac = np.zeros(graph.n_nodes)
    frac[comp] = overlap_fraction(sched.start_ns[comp], sched.end_ns[comp], graph.rank[comp],
                                  sched.start_ns[comm_nodes], sched.end_ns[comm_nodes],
                                  graph.rank[comm_nodes])
    world = max(int(run.world_size), 1)
    return WhatIfContext(run=run, graph=graph, baseline=baseline, comm=comm, fitted=fitted,
                         interference=interference, base_frac=frac, sync=sync,
                         sync_error=sync_error, world=world, use_interference=use_interference,
                         contention=contention, base_slowdown=base_slowdown, notes=notes)


def _cost_sources(ctx: WhatIfContext) -> dict[str, str]:
    out = {}
    for coll in ("reduce_scatter", "all_gather"):
        out[coll] = ctx.comm.fit_for(coll, 1 << 20).source
    return out


def predict(ctx: WhatIfContext, variant: Variant) -> tuple[ReplayResult, list[str]]:
    """Replay one variant; returns the result and notes about what was assumed."""
    notes: list[str] = []
    graph, origin = ctx.graph, np.arange(ctx.graph.n_nodes)
    structural = [t for t in variant.transforms if isinstance(t, Fusion | Overlap | DeAR)]
    network = [t for t in variant.transforms if isinstance(t, Bandwidth | CommScale | Workers)]
    if (structural or network) and ctx.comm is None:
        raise TracekitError(f"{variant.spec}: {_NO_COMM_MODEL}")
    if structural:
        if ctx.sync is None:
            raise TracekitError(f"{variant.spec}: {ctx.sync_error}")
        plan = GradientPlan(buckets=ctx.sync.buckets)
        notes += ctx.sync.notes
        for t in structural:
            if isinstance(t, Fusion):
                plan, n = plan_fusion(plan, t, ctx.sync)
            elif isinstance(t, Overlap):
                plan, n = plan_overlap(plan, t)
            else:
                plan, n = plan_dear(plan, _cost_sources(ctx))
            notes += n
        if not plan.same_as(ctx.sync):
            cost = lambda coll, nbytes: ctx.comm.time_ns(coll, nbytes, ctx.world)  # noqa: E731
            rw = materialize(graph, ctx.sync, plan, cost_ns=cost)
            graph, origin = rw.graph, rw.origin
            notes += rw.notes
    dur = graph.dur_ns.copy()
    retiming = CommRetiming()
    for t in variant.transforms:
        if isinstance(t, Bandwidth | CommScale):
            retiming.add(t)
        elif isinstance(t, Workers):
            notes += retime_workers(retiming, t, ctx.world)
    if not retiming.is_identity:
        dur = retime_comm(graph, dur, ctx.comm, retiming, node_group_sizes(graph, ctx.world))
    scale = variant.get(ComputeScale)
    if scale is not None:
        dur = scale_compute(graph, dur, scale)
    graph = with_durations(graph, dur)
    if ctx.use_interference and ctx.contention is not None:
        res = apply_contention(graph=graph, dur_ns=dur, hc=ctx.contention,
                               base_slowdown=_slowdown_inside(ctx, origin),
                               schedule=lambda d: schedule(with_durations(graph, d)))
        graph = with_durations(graph, res.dur_ns)
        if res.last_change > 0.02:
            notes.append(f"core sharing did not settle: the step still moved "
                         f"{res.last_change * 100:.1f}% in the last pass")
    elif ctx.use_interference and ctx.interference.factor > 1.0:
        base_frac = np.where(origin >= 0, ctx.base_frac[np.maximum(origin, 0)], 0.0)
        res = apply_interference(
            dur_ns=dur, rank=graph.rank, is_compute=graph.kind == NodeKind.COMPUTE,
            is_comm=graph.kind == NodeKind.COMM, factor=ctx.interference.factor,
            baseline_frac=base_frac,
            schedule=lambda d: schedule(with_durations(graph, d)))
        graph = with_durations(graph, res.dur_ns)
        if res.last_change > 0.02:
            notes.append(f"interference did not settle: the step still moved "
                         f"{res.last_change * 100:.1f}% in the last pass")
    return replay(ctx.run, graph), notes


def _slowdown_inside(ctx: WhatIfContext, origin: np.ndarray) -> np.ndarray:
    """The core-sharing slowdown already inside each node's duration: measured for nodes
    kept from the run; 1 for nodes a what-if created (collectives are timed by a cost
    model fitted on contention-free transfer times, see :func:`build_context`)."""
    return np.where(origin >= 0, ctx.base_slowdown[np.maximum(origin, 0)], 1.0)
