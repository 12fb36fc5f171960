"""``slow-rank=R:X``: rank R computes X times slower (X < 1: faster), every other rank as
recorded: a sensitivity study of one straggler. Only compute nodes change; communication,
launches and host gaps stay as measured, so waiting in collectives follows from the
replay (the other ranks wait for R at each collective).

Before/after (``slow-rank=1:2``)::

    rank 1: aten::mm 1.0 ms  ->  2.0 ms; rank 0 then waits ~1 ms more in each all-reduce
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.values import duration_ns, format_float, parse_factor
from replay.whatif.variant_edit import VariantEdit
from tracekit.errors import TracekitError
from tracekit.graph.model import NodeKind

_FORM = re.compile(r"^\s*(\d+)\s*:\s*(\S+)\s*$")


@register
@dataclass(frozen=True, kw_only=True)
class SlowRank(WhatIf):
    """``slow-rank=R:X``: rank ``rank``'s compute durations multiplied by ``factor``."""

    key = "slow-rank"
    aliases = ("slow_rank",)
    syntax = "slow-rank=R:X"
    example = "slow-rank=1:1.5"
    summary = "rank R computes X times slower (a sensitivity study of one straggler)"
    stage = Stage.DEVICES

    rank: int
    factor: float

    @classmethod
    def parse(cls, value: str) -> SlowRank:
        m = _FORM.match(value)
        if not m:
            raise TracekitError(f"cannot read slow-rank={value!r}; expected RANK:FACTOR, "
                                "e.g. slow-rank=1:1.5")
        return cls(rank=int(m.group(1)),
                   factor=parse_factor(m.group(2), cls.key, example=cls.example,
                                       spec=f"{cls.key}={value.strip()}"))

    @property
    def label(self) -> str:
        return f"slow-rank={self.rank}:{format_float(self.factor)}"

    def apply(self, edit: VariantEdit) -> None:
        graph = edit.graph
        if self.rank not in set(np.unique(graph.rank).tolist()):
            present = ", ".join(str(r) for r in np.unique(graph.rank))
            raise TracekitError(f"{self.label}: rank {self.rank} is not in the replayed run "
                                f"(ranks {present}); e.g. slow-rank={graph.rank.min()}:1.5")
        out = np.asarray(edit.dur_ns, dtype=np.float64).copy()
        sel = (graph.kind == NodeKind.COMPUTE) & (graph.rank == self.rank)
        out[sel] *= self.factor
        edit.dur_ns = duration_ns(out, self.label)
        edit.notes.append(f"{self.label}: {int(sel.sum())} compute op(s) of rank {self.rank} "
                          f"scaled by {format_float(self.factor)}")
