"""``fsdp=CLASS``: a DDP run's model wrapped with FSDP2 instead: ``fully_shard`` on every
module of class ``CLASS`` and on the root, resharding after forward, FSDP2's default
prefetching (what ``samples/train_fsdp.py --unit CLASS`` runs, so a prediction can be
checked against a real run).

The units come from the manifest (:mod:`replay.whatif.fsdp_plan`). Per rank and step:

1. DDP's bucket all-reduces and the host ops that issued them are removed (a wait the
   graph left as a lane gap is closed);
2. forward, per unit in forward order, in its pre-forward hook (right before the first
   node of its first annotated module; the root before everything): copy-in, the
   all-gather's issue op and the all-gather, then the copy-out that waits for it. On a
   run with GPU lanes each pre-forward hook also issues the next unit's all-gather
   (FSDP2's implicit forward prefetch: the host runs ahead of the device); on a CPU run
   the host blocks in each unit's own hook, as FSDP2 on gloo does;
3. backward, per unit in backward order (where its first annotated module's backward
   begins, ``tracekit.bwd:``; the root first): the first unit all-gathers and waits; each
   hook waits for its unit's all-gather and prefetches the next unit's (FSDP2's default
   backward prefetch). FSDP2 unshards with ``async_op=False``: on a GPU run that only
   orders the all-gather on its stream, but with CPU tensors gloo's synchronous call blocks
   the calling thread, so on a CPU run the hook that prefetches waits for the prefetched
   all-gather before its own unit's backward runs (as measured: the backward of unit 4
   starts after unit 2's all-gather ends);
4. after each unit's last gradient (its last ``AccumulateGrad``; the root's after every
   gradient, in FSDP's root post-backward callback): chunk-cat, the reduce-scatter's
   issue op and the reduce-scatter, waited for right away (gloo: FSDP2's CPU path), and
   the optimizer waits for the last one.

Collectives are timed by the cost model at each unit's unsharded bytes (``--comm-model
comm.json`` for measured all-gather and reduce-scatter curves; the notes say when a cost
was extrapolated from another collective or beyond the calibrated sizes). FSDP2 blocks
on each one, so each costs what one call of a chain of blocking calls cost in calibration
(``chain_ratio``: the mean period, so every call's tail counts, and the rank that got its
result first waits for the other at the next call), less the issue op and the host's
resumption that the graph times apart (:func:`_blocking_ns`); with an older calibration,
until the last rank has the result (``last_ratio``), else the first rank's transfer. FSDP2's own host
work in its hooks, as ``tracekit calibrate`` measured it per unit (``fsdp_hooks``), is one
host op before each unit's forward all-gather and one before its reduce-scatter. gloo performs
a reduce-scatter as an all-reduce, so on gloo runs it is timed and named as one. FSDP2's
host work is timed by bytes at rates measured with FSDP2 on a 2-core CPU
(:data:`HOST_RATES`), which the notes state. ``fsdp=CLASS+reshard=off`` then removes the
backward all-gathers (:mod:`replay.whatif.reshard`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from replay.whatif.fsdp_gather import CollectiveAdder, HostOp
from replay.whatif.fsdp_plan import ROOT, PlannedUnit, plan_units
from replay.whatif.gradients import GradientSync, RankStepSync, first_nodes, module_annotations
from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.splice import close_gaps
from replay.whatif.values import format_size
from replay.whatif.variant_edit import VariantEdit
from tracekit.errors import TracekitError
from tracekit.graph.edit import remove_nodes, renumbering
from tracekit.graph.fsdp import (
    BACKWARD,
    FORWARD,
    REDUCE,
    FSDPCollective,
    FSDPGraph,
    RankStepFSDP,
)
from tracekit.graph.model import EdgeKind, Graph, NodeKind

BWD_PREFIX = "tracekit.bwd:"
#: bytes/s of FSDP2's host work per unsharded byte of a unit, measured with
#: samples/train_fsdp.py (1 MB units) on a 2-core CPU, torch 2.13, gloo
HOST_RATES = {"fsdp::all_gather_copy_in": 4.8e9, "c10d::_allgather_base_": 3.7e9,
              "fsdp::split_with_sizes_copy": 5.8e9, "fsdp::chunk_cat": 1.7e9,
              "c10d::_reduce_scatter_base_": 1.05e9, "aten::copy_": 10e9}
_CLASS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ops(nbytes: int, *names: str, issue_ns: int | None = None) -> tuple[HostOp, ...]:
    """FSDP2's host ops for a unit of ``nbytes``, timed by :data:`HOST_RATES`; the
    collective's issue op (``c10d::``) takes ``issue_ns`` when the calibration measured it."""
    def dur(n: str) -> int:
        if n.startswith("c10d::") and issue_ns is not None:
            return issue_ns
        return int(round(nbytes / HOST_RATES[n] * 1e9))
    return tuple(HostOp(name=n, kind=int(NodeKind.LAUNCH if n.startswith("c10d::")
                                         else NodeKind.COMPUTE),
                        dur_ns=dur(n)) for n in names)


HOOKS = "FSDP2 hooks"


def _hooks(dur_ns: int) -> tuple[HostOp, ...]:
    """FSDP2's own host work in one unit's hooks, when calibrated."""
    return (HostOp(name=HOOKS, kind=int(NodeKind.COMPUTE), dur_ns=dur_ns),) if dur_ns else ()


@dataclass(kw_only=True)
class Costs:
    """Per unit, its all-gather's and reduce-scatter's transfer time, and their names."""

    ag_ns: dict[str, int]
    rs_ns: dict[str, int]
    rs_name: str
    ag_name: str
    #: the run's typical delays: a collective's start after its issue op, and the host's
    #: resumption after a collective it waits for
    issue_delay_ns: int = 0
    wait_delay_ns: int = 0
    #: per unit, the calibrated time to issue its all-gather / reduce-scatter (empty: not
    #: calibrated, the issue ops are timed by HOST_RATES)
    ag_issue_ns: dict[str, int] = field(default_factory=dict)
    rs_issue_ns: dict[str, int] = field(default_factory=dict)
    #: FSDP2's own host time per unit and step, in its forward hooks and in its backward
    #: hooks (0: not calibrated); one host op before each unit's forward all-gather and one
    #: before its reduce-scatter
    hook_forward_ns: int = 0
    hook_backward_ns: int = 0


@dataclass(kw_only=True)
class _StepPlan:
    """Where one rank-step's FSDP work goes (node ids of the graph without DDP's buckets)."""

    rs: RankStepSync
    forward: dict[str, int]
    backward: dict[str, int]
    last_grad_next: dict[str, int]
    optimizer: int


def _first_of(firsts: dict[str, int], graph: Graph, unit: PlannedUnit, what: str,
              rs: RankStepSync) -> int:
    mods = list(firsts) if unit.module == ROOT else [m for m in unit.forward_modules
                                                     if m in firsts]
    if not mods:
        prefix = "tracekit.fwd:" if what == "forward" else BWD_PREFIX
        raise TracekitError(
            f"fsdp= needs where unit {unit.module or '(root)'!r} starts its {what}, but the "
            f"trace of rank {rs.rank} step {rs.step} has no '{prefix}' annotation of its "
            "modules; record the run with 'tracekit profile'")
    return min((firsts[m] for m in mods), key=lambda v: int(graph.start_ns[v]))


def _step_plan(graph: Graph, sync: GradientSync, rs: RankStepSync, units, bwd_ann,
               new_id: np.ndarray, kept_after) -> _StepPlan:
    lane_nodes = np.flatnonzero(graph.lane == rs.lane)
    bwd = first_nodes(bwd_ann, graph, rs.rank, rs.step, lane_nodes)
    pos = {p.index: k for k, p in enumerate(sync.params)}
    plan = _StepPlan(rs=rs, forward={}, backward={}, last_grad_next={},
                     optimizer=int(new_id[rs.wait_target]) if rs.wait_target >= 0 else -1)
    for u in units:
        plan.forward[u.module] = int(new_id[_first_of(rs.forward_first, graph, u, "forward",
                                                      rs)])
        plan.backward[u.module] = int(new_id[_first_of(bwd, graph, u, "backward", rs)])
        last = len(sync.params) - 1 if u.module == ROOT else max(pos[i] for i in u.params
                                                                 if i in pos)
        plan.last_grad_next[u.module] = kept_after(int(rs.ready_nodes[last]))
    return plan


def _chain(adder: CollectiveAdder, order: list[PlannedUnit], at: dict[str, int], prefetch: bool,
           gather, wait) -> None:
    """All-gathers for units in ``order``, each waited for in its hook at ``at``; with
    ``prefetch`` each hook also issues the next unit's."""
    comm: dict[str, int] = {}
    for k, u in enumerate(order):
        here = at[u.module]
        if k == 0 or not prefetch:
            comm[u.module] = gather(u, here)
        wait(comm[u.module], u, here)
        if prefetch and k + 1 < len(order):
            nxt = order[k + 1]
            comm[nxt.module] = gather(nxt, here)


def _build_step(adder: CollectiveAdder, graph: Graph, p: _StepPlan, units: list[PlannedUnit],
                costs: Costs, gpu: bool, out: list[FSDPCollective]) -> None:
    rs = p.rs
    lanes = list(rs.comm_lanes)
    turn = [0]

    def lane() -> int:
        turn[0] += 1
        return lanes[(turn[0] - 1) % len(lanes)]

    def gather_for(phase):
        def gather(u: PlannedUnit, before: int) -> int:
            ops = _ops(u.bytes, "fsdp::all_gather_copy_in", "c10d::_allgather_base_",
                       issue_ns=costs.ag_issue_ns.get(u.module))
            if phase == FORWARD:
                ops = _hooks(costs.hook_forward_ns) + ops
            c = adder.issue(rank=rs.rank, step=rs.step, key=(rs.step, u.module, phase), ops=ops,
                            before=before, name=costs.ag_name, dur_ns=costs.ag_ns[u.module],
                            nbytes=u.bytes, comm_lane=lane(),
                            issue_delay_ns=costs.issue_delay_ns)
            out.append(FSDPCollective(unit=u.module, phase=phase, comm=c,
                                      host=tuple(adder.issued_by[c])))
            return c
        return gather

    def wait(c: int, u: PlannedUnit, before: int) -> None:
        adder.wait(c, ops=_ops(u.bytes, "fsdp::split_with_sizes_copy"), before=before,
                   delay_ns=costs.wait_delay_ns, rank=rs.rank, step=rs.step)
        k = next(i for i, x in enumerate(out) if x.comm == c)
        out[k] = FSDPCollective(unit=out[k].unit, phase=out[k].phase, comm=c, host=out[k].host,
                                copy_out=tuple(adder.copied_by[c]))

    _chain(adder, units, p.forward, gpu, gather_for(FORWARD), wait)
    order = sorted(units, key=lambda u: (int(graph.start_ns[p.backward[u.module]]),
                                         u.module != ROOT))
    # pre-backward hooks and reduce-scatters in the order they happen
    events = [(int(graph.start_ns[p.backward[u.module]]), 0, k) for k, u in enumerate(order)]
    events += [(int(graph.start_ns[p.last_grad_next[u.module]]) - 1, -1, k)
               for k, u in enumerate(order)]
    at_hook = {u.module: p.backward[u.module] for u in order}
    gather = gather_for(BACKWARD)
    pending: dict[str, int] = {}
    for _, kind, k in sorted(events):
        u = order[k]
        if kind == 0:
            if k == 0:
                pending[u.module] = gather(u, at_hook[u.module])
            wait(pending.pop(u.module), u, at_hook[u.module])
            if k + 1 < len(order):
                nxt = pending[order[k + 1].module] = gather(order[k + 1], at_hook[u.module])
                if not gpu:  # a synchronous all-gather of CPU tensors blocks its caller
                    adder.wait(nxt, before=at_hook[u.module], delay_ns=costs.wait_delay_ns,
                               rank=rs.rank, step=rs.step)
            continue
        before = p.last_grad_next[u.module]
        c = adder.issue(rank=rs.rank, step=rs.step, key=(rs.step, u.module, REDUCE),
                        ops=_hooks(costs.hook_backward_ns) + _ops(
                            u.bytes, "fsdp::chunk_cat", "c10d::_reduce_scatter_base_",
                            issue_ns=costs.rs_issue_ns.get(u.module)),
                        before=before, name=costs.rs_name, dur_ns=costs.rs_ns[u.module],
                        nbytes=u.bytes, comm_lane=lane(), issue_delay_ns=costs.issue_delay_ns)
        adder.wait(c, ops=_ops(u.bytes, "aten::copy_"), before=before,
                   delay_ns=costs.wait_delay_ns, rank=rs.rank, step=rs.step)
        if p.optimizer >= 0:
            adder.wait(c, before=p.optimizer, rank=rs.rank, step=rs.step)
        out.append(FSDPCollective(unit=u.module, phase=REDUCE, comm=c,
                                  host=tuple(adder.issued_by[c])))


def to_fsdp(graph: Graph, sync: GradientSync, units: list[PlannedUnit], costs: Costs,
            backward_annotations: pd.DataFrame) -> tuple[Graph, np.ndarray, int, FSDPGraph]:
    """The DDP graph rewritten as FSDP2 (see module doc); returns the graph, the kept
    nodes' ids in ``graph`` (in order; then the added nodes), how many were added and the
    new graph's FSDP collectives. ``backward_annotations``: the run's ``tracekit.bwd:``
    annotations (:func:`~replay.whatif.gradients.module_annotations`)."""
    removed = np.zeros(graph.n_nodes, dtype=bool)
    for rs in sync.per_rank_step.values():
        removed[rs.bucket_comm] = True
        removed[rs.bucket_issue] = True
    new_id = renumbering(removed)
    g = remove_nodes(graph, removed)
    gaps = [int(new_id[rs.gap_wait_target]) for rs in sync.per_rank_step.values()
            if rs.gap_wait_target >= 0 and not removed[rs.gap_wait_target]]
    if gaps:
        g = close_gaps(g, gaps)
    kept_on: dict[int, np.ndarray] = {}

    def kept_after(v: int) -> int:
        """The first kept node after ``v`` on its lane (new id; ``v`` itself if none)."""
        lane = int(graph.lane[v])
        if lane not in kept_on:
            on = np.flatnonzero(graph.lane == lane)
            kept_on[lane] = on[~removed[on]]
        on = kept_on[lane]
        i = int(np.searchsorted(on, v, side="right"))
        return int(new_id[on[i]]) if i < len(on) else int(new_id[v])

    ann = backward_annotations
    bwd_ann = {key: grp for key, grp in ann.groupby(["rank", "step"])} if len(ann) else {}
    plans = [_step_plan(graph, sync, rs, units, bwd_ann, new_id, kept_after)
             for _, rs in sorted(sync.per_rank_step.items())]
    adder = CollectiveAdder(g)
    gpu = graph.has_gpu_lanes
    per: dict[tuple[int, int], RankStepFSDP] = {}
    for p in plans:
        out: list[FSDPCollective] = []
        _build_step(adder, g, p, units, costs, gpu, out)
        per[(p.rs.rank, p.rs.step)] = RankStepFSDP(rank=p.rs.rank, step=p.rs.step,
                                                   lane=p.rs.lane, collectives=tuple(out),
                                                   pre_backward=dict(p.backward))
    g, added = adder.write()
    fs = FSDPGraph(per_rank_step=per, units=tuple(u.module for u in units))
    return g, np.flatnonzero(~removed), added, fs


def _costs(edit: VariantEdit, units: list[PlannedUnit]) -> tuple[Costs, list[str]]:
    ctx = edit.ctx
    comm, world, sync = ctx.comm, ctx.world, ctx.sync
    gloo = sync.comm_prefix == "gloo:"
    rs_coll = "all_reduce" if gloo else "reduce_scatter"
    notes = []
    for coll, what in (("all_gather", "all-gather"), (rs_coll, "reduce-scatter")):
        sizes = [u.bytes for u in units]
        fit = comm.fit_for(coll, max(sizes))
        lo, hi = fit.size_range if fit.size_range else (0, 0)
        beyond = [s for s in sizes if hi and not lo <= s <= hi]
        note = f"fsdp: {what} cost {fit.source}"
        if gloo and coll == "all_reduce":
            note += " (gloo runs a reduce-scatter as an all-reduce)"
        if beyond:
            note += (f"; {len(beyond)} unit size(s) extrapolated beyond the measured "
                     f"{format_size(int(lo))}..{format_size(int(hi))}")
        notes.append(note)
    resume = _resume_ns(ctx.graph)
    host_blocks = not ctx.graph.has_gpu_lanes
    blocking = {(c, u.bytes): _blocking_ns(comm, c, u.bytes, world, resume, host_blocks)
                for c in ("all_gather", rs_coll) for u in units}
    notes.append(_blocking_note(list(blocking.values())))
    costs = Costs(ag_ns={u.module: blocking[("all_gather", u.bytes)][0] for u in units},
                   rs_ns={u.module: blocking[(rs_coll, u.bytes)][0] for u in units},
                   ag_name=f"{sync.comm_prefix}all_gather", rs_name=f"{sync.comm_prefix}{rs_coll}",
                   issue_delay_ns=sync.issue_delay_ns, wait_delay_ns=resume)
    issue = {u.module: (comm.issue_ns("all_gather", u.bytes),
                        comm.issue_ns("reduce_scatter", u.bytes)) for u in units}
    if all(ag is not None and rs is not None for ag, rs in issue.values()):
        costs.ag_issue_ns = {m: int(round(ag)) for m, (ag, _) in issue.items()}
        costs.rs_issue_ns = {m: int(round(rs)) for m, (_, rs) in issue.items()}
        notes.append("fsdp: issuing each all-gather and reduce-scatter timed by the "
                     "calibration (the calling thread's time, on fresh memory)")
    hooks = comm.fsdp_hook_ns()
    if hooks:
        costs.hook_forward_ns = int(round(hooks["forward"]))
        costs.hook_backward_ns = int(round(hooks["backward"]))
        notes.append(f"fsdp: FSDP2's own host work per unit and step, as calibrated: forward "
                     f"{hooks['forward'] / 1e3:.0f} us, backward {hooks['backward'] / 1e3:.0f} us")
    else:
        notes.append("fsdp: FSDP2's own host work in its hooks is not in the prediction "
                     "(the comm model has no 'fsdp_hooks'; re-run 'tracekit calibrate')")
    return costs, notes


def _blocking_ns(comm, coll: str, nbytes: int, world: int, resume_ns: int,
                 host_blocks: bool = True) -> tuple[int, str, float]:
    """One FSDP collective's duration on its comm lane, how it was priced and the ratio
    used. On a CPU run (``host_blocks``) FSDP2 blocks on each (gloo's synchronous call),
    so each costs what one call of a chain of blocking calls cost in calibration
    (``chain``: the mean period, tail and the last rank's finish included), less the
    issue and the resumption the graph times apart; otherwise (a GPU run, where the host
    goes on, or no chain timings) until its last rank has the result (``last``); else the
    transfer alone (``transfer``)."""
    t = comm.time_ns(coll, nbytes, world)
    ratio = comm.chain_ratio(coll, nbytes) if host_blocks else None
    if ratio is not None:
        issue = comm.issue_ns(coll, nbytes) or 0.0
        return int(round(max(t * ratio - issue - resume_ns, 0.0))), "chain", ratio
    ratio = comm.last_rank_ratio(coll, nbytes)
    if ratio is not None:
        return int(round(t * ratio)), "last", ratio
    return int(round(t)), "transfer", 1.0


def _blocking_note(priced: list[tuple[int, str, float]]) -> str:
    hows = {how for _, how, _ in priced}
    ratios = [r for _, _, r in priced]
    if hows == {"chain"}:
        return (f"fsdp: FSDP2 waits for each all-gather and reduce-scatter before it goes "
                f"on; each costs one call of a chain of such calls, as calibrated: "
                f"{min(ratios):.2f}-{max(ratios):.2f}x the transfer alone at these sizes "
                "(its mean with the tail, until the last rank has it)")
    if hows == {"last"}:
        return (f"fsdp: each collective lasts until its last rank has the result "
                f"(calibrated: {min(ratios):.2f}-{max(ratios):.2f}x the first rank's "
                "transfer at these sizes); re-run 'tracekit calibrate' to time chains of "
                "blocking calls")
    return ("fsdp: each collective lasts as long as its first rank's transfer (the comm "
            "model has no 'chain_ratio'; re-run 'tracekit calibrate' to time chains of "
            "blocking calls)")


def _resume_ns(graph: Graph) -> int:
    """The median delay of the run's host waits on collectives (0: none)."""
    sel = (graph.edge_kind == EdgeKind.HOST_WAIT) & (graph.kind[graph.src] == NodeKind.COMM)
    return max(int(np.median(graph.delay_ns[sel])), 0) if sel.any() else 0


@register
@dataclass(frozen=True, kw_only=True)
class FSDP(WhatIf):
    """``fsdp=CLASS``: the DDP run's model under FSDP2, one unit per module of CLASS."""

    key = "fsdp"
    syntax = "fsdp=CLASS"
    example = "fsdp=Linear"
    summary = ("FSDP2 instead of DDP: fully_shard on every module of class CLASS and the "
               "root, resharding after forward, FSDP2's default prefetching")
    stage = Stage.GRADIENTS
    needs_comm_model = True
    needs_gradient_sync = True

    cls: str

    @classmethod
    def parse(cls, value: str) -> FSDP:
        name = value.strip()
        if not _CLASS.match(name):
            raise TracekitError(f"cannot read fsdp={value!r}; expected a module class name, "
                                "e.g. fsdp=Linear or fsdp=TransformerEncoderLayer")
        return cls(cls=name)

    @property
    def label(self) -> str:
        return f"fsdp={self.cls}"

    def conflict(self, other: WhatIf) -> str | None:
        if other.key in ("fusion", "overlap", "dear"):
            return "fsdp= replaces DDP's gradient all-reduces"
        return None

    def apply(self, edit: VariantEdit) -> None:
        ctx = edit.ctx
        if ctx.fsdp is not None:
            raise TracekitError(f"{self.label}: this run is already an FSDP2 run; "
                                "re-plan it with reshard=off or reshard=on")
        units = plan_units(ctx.run.manifest, self.cls)
        costs, notes = _costs(edit, units)
        edit.graph, kept, added, edit.fsdp = to_fsdp(
            edit.graph, ctx.sync, units, costs, module_annotations(ctx.run, BWD_PREFIX))
        edit.origin = np.concatenate([edit.origin[kept], np.full(added, -1, dtype=np.int64)])
        sizes = ", ".join(f"{u.module or '(root)'} {format_size(u.bytes)}" for u in units[:6])
        more = f", ... ({len(units)} units)" if len(units) > 6 else ""
        edit.notes.append(f"fsdp={self.cls}: {len(units)} unit(s): {sizes}{more}; DDP's "
                          f"{len(ctx.sync.buckets)} bucket all-reduce(s) per step removed")
        edit.notes += notes
        rates = ", ".join(f"{k.split('::')[1]} {v / 1e9:g} GB/s" for k, v in HOST_RATES.items()
                          if not (k.startswith("c10d::") and costs.ag_issue_ns))
        edit.notes.append(f"fsdp: FSDP2's host work timed by bytes at rates measured on a "
                          f"2-core CPU (torch 2.13, gloo): {rates}")
        if not edit.graph.has_gpu_lanes:
            edit.notes.append("fsdp: forward all-gathers waited for in each unit's own "
                              "pre-forward hook (FSDP2 on CPU; backward prefetches one "
                              "unit ahead)")
