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
say so. The optimizer work stays where the baseline had it (DeAR moves the update of
each bucket into the forward; the host time is the same).

Before/after, rank 0 of step 6, two buckets (:class:`DearSync` in
:func:`replay.whatif.rewrite.materialize`)::

    backward: AccumulateGrad -> c10d::allreduce_ -> gloo:all_reduce --HOST_WAIT--> finalize
    dear:     AccumulateGrad -> c10d::reduce_scatter_ -> gloo:reduce_scatter  (not waited)
              step 7 forward: c10d::allgather_ -> gloo:all_gather --PARAM_READY--> fwd:layer0
              gloo:reduce_scatter (step 6) --COMM_DONE--> gloo:all_gather (step 7)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from replay.whatif.gradients import GradientSync, RankStepSync
from replay.whatif.overlap import Overlap
from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.rewrite import GradientRewrite, StepBuild, SyncMode
from replay.whatif.variant_edit import VariantEdit
from tracekit.errors import TracekitError
from tracekit.graph.model import EdgeKind, NodeKind


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
            iss = rw.nodes.add(lane=rs.lane, kind=int(NodeKind.LAUNCH), name="c10d::allgather_",
                               dur_ns=sync.issue_dur_ns, start_ns=t0, step=rs.step, rank=rs.rank)
            cost = rw.cost_ns("all_gather", rw.bucket_bytes[b]) * sb.facts.corr[int(sb.old_of[b])]
            ag = rw.nodes.add(lane=sb.lanes[0], kind=int(NodeKind.COMM),
                              name=f"{sync.comm_prefix}all_gather", dur_ns=int(round(cost)),
                              start_ns=t0, step=rs.step, rank=rs.rank,
                              bytes=rw.bucket_bytes[b],
                              coll_id=rw.coll_id(rs.step, b, "all_gather"))
            sb.main_before[before].append(iss)
            sb.comm_order.append(ag)
            rw.edges[EdgeKind.ISSUE].append((iss, ag, sync.issue_delay_ns))
            rw.edges[EdgeKind.PARAM_READY].append((ag, before, 0))
            rw.mode_state.setdefault("all_gathers", {})[(rs.rank, rs.step, b)] = ag

    def finish(self, rw: GradientRewrite) -> list[str]:
        """An all-gather needs the previous step's reduce-scatter of its bucket."""
        for (rank, step, b), ag in rw.mode_state.get("all_gathers", {}).items():
            i = rw.steps.index(step)
            prev = rw.backward_node.get((rank, rw.steps[i - 1], b)) if i > 0 else None
            if prev is not None:
                rw.edges[EdgeKind.COMM_DONE].append((prev, ag, 0))
        if not rw.steps:
            return []
        return [f"dear: the all-gathers of step {rw.steps[0]} have no reduce-scatter before "
                "them in the replayed window and start when issued"]


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
        edit.plan = replace(edit.plan, mode=DEAR_SYNC)
