"""``dear``: DeAR's decoupled all-reduce (ICDCS 2023).

Each bucket's all-reduce becomes a reduce-scatter issued as soon as its gradients are
ready (overlapping backward; nothing waits for it at the end of backward) and an
all-gather issued in the next step's forward just before the first module that uses the
bucket's parameters, which waits for it. No extra bytes move: a ring reduce-scatter plus
all-gather move what a ring all-reduce moves. This is what ``samples/train_dear.py``
does, so a prediction can be checked against a real run.

The costs of the two halves come from the cost model: with ``--comm-model comm.json``
they are measured (on gloo a reduce-scatter costs far more than half an all-reduce);
without it they are extrapolated from the run's all-reduces by formula, and the notes
say so.

DeAR has no optimizer step at the end: each bucket's parameters are updated in the
next forward, right after its all-gather, on the training thread (``train_dear.py``'s
``finish_bucket``). So the baseline's ``Optimizer.step#`` work (its ops and the gaps
between them) is taken out of the end of the step, where it would hide behind the
reduce-scatters still in flight, and put back as one ``dear:update`` node after each
all-gather, its share of the time in proportion to the bucket's bytes. Without an
``Optimizer.step#`` annotation (or when the optimizer launches device work) the update
stays where the baseline had it, and the notes say so.

Before/after, rank 0 of step 6, two buckets (:class:`DearSync` in
:func:`replay.whatif.rewrite.materialize`)::

    backward: AccumulateGrad -> c10d::allreduce_ -> gloo:all_reduce --HOST_WAIT--> finalize
    dear:     AccumulateGrad -> c10d::reduce_scatter_ -> gloo:reduce_scatter  (not waited)
              step 7 forward: c10d::allgather_ -> gloo:all_gather --PARAM_READY--> fwd:layer0
              gloo:reduce_scatter (step 6) --COMM_DONE--> gloo:all_gather (step 7)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from replay.whatif.gradients import GradientSync, RankStepSync
from replay.whatif.overlap import Overlap
from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.rewrite import GradientRewrite, StepBuild, SyncMode
from replay.whatif.variant_edit import VariantEdit
from tracekit.errors import TracekitError
from tracekit.graph.edit import with_durations
from tracekit.graph.model import EdgeKind, Graph, NodeKind


def _first_use(sync: GradientSync, bucket: tuple[int, ...]) -> str:
    params = {sync.params[i].index for i in bucket}
    for module, ps in sync.forward_order:
        if params & set(ps):
            return module
    raise TracekitError(
        "dear needs to know which module first uses each bucket's parameters, and the "
        "manifest has no forward order for them; record the run with 'tracekit profile'")


class DearSync(SyncMode):
    """DeAR's sync mode: a reduce-scatter in backward, an all-gather before first use in
    the next forward (see module doc)."""

    collectives = ("reduce_scatter", "all_gather")
    backward = "reduce_scatter"
    backward_issue = "c10d::reduce_scatter_"
    reuses_baseline_buckets = False
    waited_in_backward = False

    def pre_edit(self, graph: Graph, sync: GradientSync) -> tuple[Graph, dict]:
        """The optimizer's nodes take no time at the end of the step (their time, with
        the lane gaps between them, is kept per rank and step for the updates)."""
        moved: dict[tuple[int, int], int] = {}
        dur = graph.dur_ns.copy()
        delay = graph.delay_ns.copy()
        lane_edge = graph.edge_kind == EdgeKind.LANE_ORDER
        for key, rs in sync.per_rank_step.items():
            nodes = rs.optimizer_nodes
            if not len(nodes) or (graph.kind[nodes] == NodeKind.LAUNCH).any():
                continue
            inside = np.zeros(graph.n_nodes, dtype=bool)
            inside[nodes] = True
            gaps = np.flatnonzero(lane_edge & inside[graph.src] & inside[graph.dst])
            moved[key] = int(dur[nodes].sum() + delay[gaps].sum())
            dur[nodes] = 0
            delay[gaps] = 0
        if moved:
            graph = replace(with_durations(graph, dur), delay_ns=delay)
        return graph, {"update_ns": moved}

    def prepare(self, rw: GradientRewrite, rs: RankStepSync) -> dict[int, int]:
        """Per bucket, the first node of the forward of the module that first uses it."""
        fwd = {}
        for b, bucket in enumerate(rw.plan.buckets):
            module = _first_use(rw.sync, bucket)
            if module not in rs.forward_first:
                raise TracekitError(
                    f"dear needs where module {module!r} starts its forward, but the trace "
                    f"of rank {rs.rank} step {rs.step} has no 'tracekit.fwd:{module}' "
                    "annotation; record the run with 'tracekit profile'")
            fwd[b] = rs.forward_first[module]
        return fwd

    def forward(self, rw: GradientRewrite, sb: StepBuild) -> None:
        """The step's all-gathers, each issued right before its bucket's first use."""
        graph, sync, rs, fwd = rw.graph, rw.sync, sb.rs, sb.facts.mode_facts
        for b in sorted(range(len(rw.plan.buckets)), key=lambda b: fwd[b]):
            before = int(rw.new_id[fwd[b]])
            t0 = int(graph.start_ns[fwd[b]]) - 1  # first in its step window
            k = int(sb.old_of[b])
            issue = rw.issue_dur_ns("all_gather", rw.bucket_bytes[b], sync.issue_dur_ns,
                                    sb.facts.old[k].nbytes)
            iss = rw.nodes.add(lane=rs.lane, kind=int(NodeKind.LAUNCH), name="c10d::allgather_",
                               dur_ns=issue, start_ns=t0, step=rs.step, rank=rs.rank)
            cost = (rw.cost_ns("all_gather", rw.bucket_bytes[b])
                    * rw.carried(sb.facts, k, b))
            ag = rw.nodes.add(lane=sb.lanes[0], kind=int(NodeKind.COMM),
                              name=f"{sync.comm_prefix}all_gather", dur_ns=int(round(cost)),
                              start_ns=t0, step=rs.step, rank=rs.rank,
                              bytes=rw.bucket_bytes[b],
                              coll_id=rw.coll_id(rs.step, b, "all_gather"))
            sb.main_before[before].append(iss)
            sb.comm_order.append(ag)
            rw.edges[EdgeKind.ISSUE].append((iss, ag, sync.issue_delay_ns))
            ready = self._update(rw, sb, b, t0)
            if ready is None:
                rw.edges[EdgeKind.PARAM_READY].append((ag, before, 0))
            else:  # the update waits for the all-gather; the module runs after it
                sb.main_before[before].append(ready)
                rw.new_edges[EdgeKind.PARAM_READY].append((ag, ready, 0))
            rw.mode_state.setdefault("all_gathers", {})[(rs.rank, rs.step, b)] = ag

    @staticmethod
    def _update(rw: GradientRewrite, sb: StepBuild, b: int, t0: int) -> int | None:
        """Bucket ``b``'s share of the step's optimizer time as one host node (local new
        id); None when the optimizer's time was not moved."""
        total = rw.mode_state.get("update_ns", {}).get((sb.rs.rank, sb.rs.step))
        if total is None:
            return None
        share = rw.bucket_bytes[b] / max(sum(rw.bucket_bytes), 1)
        return rw.nodes.add(lane=sb.rs.lane, kind=int(NodeKind.COMPUTE), name="dear:update",
                            dur_ns=int(round(total * share)), start_ns=t0, step=sb.rs.step,
                            rank=sb.rs.rank)

    def finish(self, rw: GradientRewrite) -> list[str]:
        """An all-gather needs the previous step's reduce-scatter of its bucket."""
        for (rank, step, b), ag in rw.mode_state.get("all_gathers", {}).items():
            i = rw.steps.index(step)
            prev = rw.backward_node.get((rank, rw.steps[i - 1], b)) if i > 0 else None
            if prev is not None:
                rw.edges[EdgeKind.COMM_DONE].append((prev, ag, 0))
        if not rw.steps:
            return []
        notes = [f"dear: the all-gathers of step {rw.steps[0]} have no reduce-scatter before "
                 "them in the replayed window and start when issued"]
        moved = rw.mode_state.get("update_ns", {})
        if len(moved) < len(rw.sync.per_rank_step):
            notes.append("dear: the optimizer's work stays at the end of the step in "
                         f"{len(rw.sync.per_rank_step) - len(moved)} rank-step(s) (no "
                         "Optimizer.step# annotation on the training thread, or it launches "
                         "device work); DeAR would update each bucket after its all-gather")
        elif moved:
            ms = np.median(list(moved.values())) / 1e6
            notes.append(f"dear: the optimizer's work (median {ms:.2f} ms a step) moved into "
                         "the next forward, after each bucket's all-gather")
        return notes


DEAR_SYNC = DearSync()


@register
@dataclass(frozen=True, kw_only=True)
class DeAR(WhatIf):
    """``dear``: reduce-scatter in backward, all-gather in the next forward."""

    key = "dear"
    syntax = "dear"
    example = "dear"
    summary = ("DeAR: per bucket a reduce-scatter as soon as its gradients are ready, and an "
               "all-gather in the next forward just before the first module that uses them")
    bare = True
    stage = Stage.GRADIENTS
    needs_comm_model = True
    needs_gradient_sync = True

    @classmethod
    def parse(cls, value: str) -> DeAR:
        raise TracekitError(f"dear takes no value, not dear={value!r}; write --what-if dear")

    @property
    def label(self) -> str:
        return "dear"

    def conflict(self, other: WhatIf) -> str | None:
        if isinstance(other, Overlap) and not other.enabled:
            return "DeAR exists to overlap communication"
        return None

    def apply(self, edit: VariantEdit) -> None:
        comm = edit.ctx.comm
        for coll in ("reduce_scatter", "all_gather"):
            edit.notes.append(f"dear: {coll.replace('_', '-')} cost "
                              f"{comm.fit_for(coll, 1 << 20).source}")
        b = max(edit.ctx.sync.bucket_bytes, default=0)
        rs, ar = comm.issue_ns("reduce_scatter", b), comm.issue_ns("all_reduce", b)
        if rs is not None and ar is not None:
            edit.notes.append(f"dear: issuing a reduce-scatter of {b / 2**20:.1f} MB takes "
                              f"{rs / 1e6:.2f} ms on the calling thread, an all-reduce "
                              f"{ar / 1e6:.2f} ms (calibrated)")
        edit.plan = replace(edit.plan, mode=DEAR_SYNC)
