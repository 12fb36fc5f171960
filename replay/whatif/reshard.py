"""``reshard=off|on``: FSDP2's ``reshard_after_forward``, re-planned in an FSDP run.

- ``reshard=off``: every unit that resharded after forward keeps its gathered parameters
  until its backward, so its backward all-gather goes: the all-gather, the host ops
  that issued it (copy-in, ``c10d::_allgather_base_``) and its copy-out are removed, and
  with them everything that waited for it and the host time between those ops (FSDP2's
  Python of the unshard and the prefetch, which no longer runs; the gaps into and out of
  each removed stretch stay). The notes say how much more parameter memory
  each rank then holds between forward and backward.
- ``reshard=on``: every unit that kept its parameters (no backward all-gather) gets one,
  as FSDP2 plans it: the first unit of backward all-gathers in its pre-backward hook and
  waits; each pre-backward hook then prefetches the next unit's all-gather (FSDP2's
  default backward prefetch) and waits for its own before its backward starts; on a run
  without GPU lanes the hook also waits for the prefetched one (FSDP2 unshards with
  ``async_op=False``, and gloo's synchronous call on CPU tensors blocks). Each new
  all-gather and its host ops are timed as the same unit's forward all-gather of the
  same rank and step (measured), so no cost model is needed.

On a DDP run combined with ``fsdp=CLASS`` (:mod:`replay.whatif.fsdp`), ``reshard=off``
applies to the predicted FSDP run. Before/after, one rank's backward of units 10 and 8::

    reshard on:  pre_bwd(10): AG(10) wait copy-out, AG(8) issued | bwd(10) | RS(10)
                 pre_bwd(8):  wait AG(8), copy-out | bwd(8) | RS(8)
    reshard off: pre_bwd(10) | bwd(10) | RS(10) | pre_bwd(8) | bwd(8) | RS(8)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replay.whatif.fsdp_gather import (
    CollectiveAdder,
    host_ops,
    issue_delay,
    wait_delay,
)
from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.values import format_size
from replay.whatif.variant_edit import VariantEdit
from tracekit.errors import TracekitError
from tracekit.graph.edit import remove_nodes
from tracekit.graph.fsdp import BACKWARD, FORWARD, FSDPGraph, RankStepFSDP
from tracekit.graph.model import Graph

NO_FSDP = ("found no FSDP2 all-gathers (FSDP::all_gather ranges) in this run; reshard= "
           "applies to FSDP2 runs: record one with 'tracekit profile -- torchrun ... "
           "samples/train_fsdp.py', or predict one from a DDP run with fsdp=CLASS+reshard=off")


def resharding_units(fs: FSDPGraph, manifest_units) -> set[str]:
    """Units that re-gather in backward: the manifest's ``reshard_after_forward`` when
    recorded, else every unit with a backward all-gather in the graph."""
    seen = {c.unit for rs in fs.per_rank_step.values() for c in rs.collectives
            if c.phase == BACKWARD}
    recorded = {u.module for u in manifest_units if u.reshard_after_forward}
    return seen & recorded if recorded else seen


def reshard_off(graph: Graph, fs: FSDPGraph, units: set[str]
                ) -> tuple[Graph, np.ndarray, int]:
    """Remove the backward all-gathers of ``units``; returns the graph, each new node's
    id in ``graph`` and how many all-gathers went."""
    mask = np.zeros(graph.n_nodes, dtype=bool)
    n = 0
    for rs in fs.per_rank_step.values():
        for c in rs.collectives:
            if c.phase == BACKWARD and c.unit in units:
                mask[[c.comm, *c.host, *c.copy_out]] = True
                n += 1
    return remove_nodes(graph, mask, keep_inner_gaps=False), np.flatnonzero(~mask), n


def _backward_order(rs: RankStepFSDP, graph: Graph, missing: list[str]) -> list[str]:
    have = [u for u in missing if u in rs.pre_backward]
    return sorted(have, key=lambda u: int(graph.start_ns[rs.pre_backward[u]]))


def _regather(adder: CollectiveAdder, graph: Graph, rs: RankStepFSDP, order: list[str],
              blocking: bool) -> None:
    """One rank-step's backward all-gathers for ``order`` (backward order): each
    pre-backward hook waits for its unit's all-gather, then prefetches the next one; with
    ``blocking`` (a CPU run) the hook also waits for the prefetched one."""
    comm: dict[str, int] = {}

    def gather(unit: str, before: int) -> None:
        fwd = rs.find(unit, FORWARD)
        comm[unit] = adder.issue(
            rank=rs.rank, step=rs.step, key=(rs.step, unit, BACKWARD),
            ops=host_ops(graph, fwd.host), before=before,
            name=graph.node_name(fwd.comm), dur_ns=int(graph.dur_ns[fwd.comm]),
            nbytes=int(graph.bytes[fwd.comm]), comm_lane=int(graph.lane[fwd.comm]),
            issue_delay_ns=issue_delay(graph, fwd))

    for k, unit in enumerate(order):
        at = rs.pre_backward[unit]
        if k == 0:
            gather(unit, at)
        fwd = rs.find(unit, FORWARD)
        adder.wait(comm[unit], ops=host_ops(graph, fwd.copy_out), before=at,
                   delay_ns=wait_delay(graph, fwd), rank=rs.rank, step=rs.step)
        if k + 1 < len(order):
            gather(order[k + 1], at)
            if blocking:  # a synchronous all-gather of CPU tensors blocks its caller
                adder.wait(comm[order[k + 1]], before=at, rank=rs.rank, step=rs.step,
                           delay_ns=wait_delay(graph, rs.find(order[k + 1], FORWARD)))


def reshard_on(graph: Graph, fs: FSDPGraph) -> tuple[Graph, int, list[str]]:
    """Add a backward all-gather to every unit without one (see module doc); returns the
    graph, how many nodes were added (the last ones) and notes."""
    adder = CollectiveAdder(graph)
    # FSDP2 unshards with async_op=False: gloo's synchronous call on CPU tensors blocks
    blocking = not graph.has_gpu_lanes
    skipped = 0
    for _, rs in sorted(fs.per_rank_step.items()):
        regathered = {c.unit for c in rs.collectives if c.phase == BACKWARD}
        missing = [c.unit for c in rs.collectives
                   if c.phase == FORWARD and c.unit not in regathered]
        order = _backward_order(rs, graph, missing)
        skipped += len(missing) - len(order)
        _regather(adder, graph, rs, order, blocking)
    g, added = adder.write()
    notes = []
    if skipped:
        notes.append(f"reshard=on: {skipped} unit-step(s) have no FSDP::pre_backward range "
                     "in the trace and get no backward all-gather")
    return g, added, notes


def _extra_memory(edit: VariantEdit, fs: FSDPGraph, units: set[str]) -> str:
    m = edit.ctx.run.manifest
    world = edit.ctx.world
    recorded = {u.module: u.bytes for u in (m.fsdp_units if m else [])}
    if units and all(recorded.get(u) for u in units):
        total = sum(recorded[u] for u in units)
    else:  # an all-gather's bytes in the trace are one rank's shard
        rs = next(iter(fs.per_rank_step.values()))
        total = sum(int(edit.graph.bytes[c.comm]) * world for c in rs.collectives
                    if c.phase == FORWARD and c.unit in units)
    return format_size(int(total * (world - 1) / world))


@register
@dataclass(frozen=True, kw_only=True)
class Reshard(WhatIf):
    """``reshard=off|on``: FSDP2's reshard_after_forward for every unit."""

    key = "reshard"
    syntax = "reshard=off|on"
    example = "reshard=off"
    summary = ("FSDP2 reshard_after_forward: off keeps each unit's gathered parameters from "
               "forward to backward (no backward all-gathers); on re-gathers them before "
               "each unit's backward, prefetched one unit ahead")
    stage = Stage.GRADIENTS
    #: after fsdp=CLASS, which builds the FSDP run this one re-plans
    apply_order = 1

    enabled: bool

    @classmethod
    def parse(cls, value: str) -> Reshard:
        t = value.strip().lower()
        if t not in ("on", "off"):
            raise TracekitError(f"cannot read reshard={value!r}; expected reshard=off or "
                                "reshard=on")
        return cls(enabled=t == "on")

    @property
    def label(self) -> str:
        return f"reshard={'on' if self.enabled else 'off'}"

    def apply(self, edit: VariantEdit) -> None:
        fs = edit.fsdp
        if fs is None:
            raise TracekitError(f"{self.label}: {NO_FSDP}")
        if self.enabled:
            edit.graph, added, notes = reshard_on(edit.graph, fs)
            edit.origin = np.concatenate([edit.origin, np.full(added, -1, dtype=np.int64)])
            edit.notes += notes
            edit.notes.append("reshard=on: each backward all-gather timed as its unit's "
                              "forward all-gather in the same step (measured)")
        else:
            m = edit.ctx.run.manifest
            units = resharding_units(fs, m.fsdp_units if m else [])
            memory = _extra_memory(edit, fs, units)
            edit.graph, kept, n = reshard_off(edit.graph, fs, units)
            edit.origin = edit.origin[kept]
            edit.notes.append(f"reshard=off: {n} backward all-gather(s) removed "
                              f"({len(units)} unit(s)); each rank holds up to {memory} more "
                              "gathered parameters between forward and backward")
        edit.fsdp = None  # node ids changed
