"""``compute-scale=X``: faster or slower devices. Every compute node's duration (host
ops on CPU runs, kernels on GPU runs) is multiplied by X; host overhead between ops
(lane-order delays) and launch calls stay as measured. ``compute-scale=0.5`` means
compute takes half as long."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.values import duration_ns, format_float, parse_factor
from replay.whatif.variant_edit import VariantEdit
from tracekit.graph.model import NodeKind


@register
@dataclass(frozen=True, kw_only=True)
class ComputeScale(WhatIf):
    """``compute-scale=X``: every compute duration multiplied by ``factor``."""

    key = "compute-scale"
    aliases = ("compute_scale",)
    syntax = "compute-scale=X"
    example = "compute-scale=0.5"
    range_example = "compute-scale=0.25..1"
    summary = "faster or slower devices: every compute duration multiplied by X"
    stage = Stage.DEVICES

    factor: float

    @classmethod
    def parse(cls, value: str) -> ComputeScale:
        return cls(factor=parse_factor(value, cls.key))

    @property
    def label(self) -> str:
        return f"compute-scale={format_float(self.factor)}"

    def scalar(self) -> float:
        return self.factor

    def with_scalar(self, x: float) -> ComputeScale:
        return ComputeScale(factor=x)

    def apply(self, edit: VariantEdit) -> None:
        out = np.asarray(edit.dur_ns, dtype=np.float64).copy()
        sel = edit.graph.kind == NodeKind.COMPUTE
        out[sel] *= self.factor
        edit.dur_ns = duration_ns(out, self.label)
