"""``workers=N``: the same job on N ranks (data parallel, weak scaling).

Every collective is re-timed for a group of N with the ring/tree formulas of
:mod:`replay.cost_model` (latency ``steps(N) * alpha``, bandwidth
``moved_bytes(N) / beta``, ``alpha``/``beta`` fitted from the run or calibrated), by the
ratio ``T(N) / T(n)`` applied to each comm node's measured transfer. Per-rank work is
unchanged (the per-rank batch stays the same), and the recorded ranks stand in for all
N: stragglers and skew among the extra ranks are not modeled.

Before/after (ring all-reduce of B bytes, 2 -> 8 ranks)::

    T(2) = 2 alpha + 1.0 B / beta      T(8) = 14 alpha + 1.75 B / beta
"""

from __future__ import annotations

from dataclasses import dataclass

from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.values import parse_workers
from replay.whatif.variant_edit import VariantEdit


@register
@dataclass(frozen=True, kw_only=True)
class Workers(WhatIf):
    """``workers=N``: the same job on ``n`` ranks, collectives re-timed by formula."""

    key = "workers"
    aliases = ("world", "world-size")
    syntax = "workers=N"
    example = "workers=8"
    range_example = "workers=2..16"
    summary = "another world size: ring/tree formulas with latency and bandwidth fitted on the run"
    stage = Stage.NETWORK
    needs_comm_model = True

    n: int

    @classmethod
    def parse(cls, value: str) -> Workers:
        return cls(n=parse_workers(value, cls.key))

    @property
    def label(self) -> str:
        return f"workers={self.n}"

    def scalar(self) -> float:
        return float(self.n)

    def with_scalar(self, x: float) -> Workers:
        return Workers(n=int(round(x)))

    def apply(self, edit: VariantEdit) -> None:
        edit.retiming.group_size = self.n
        edit.notes.append(f"workers={self.n}: collectives re-timed from {edit.ctx.world} to "
                          f"{self.n} ranks by the ring formulas; per-rank compute unchanged "
                          "(weak scaling)")
