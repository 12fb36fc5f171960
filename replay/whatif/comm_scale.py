"""``comm-scale=X``: every collective's transfer time multiplied by X (latency and
bandwidth terms alike), e.g. ``comm-scale=0.5`` for communication twice as fast."""

from __future__ import annotations

from dataclasses import dataclass

from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.values import format_float, parse_factor
from replay.whatif.variant_edit import VariantEdit


@register
@dataclass(frozen=True, kw_only=True)
class CommScale(WhatIf):
    """``comm-scale=X``: every collective's transfer time multiplied by ``factor``."""

    key = "comm-scale"
    aliases = ("comm_scale",)
    syntax = "comm-scale=X"
    example = "comm-scale=0.5"
    range_example = "comm-scale=0.25..1"
    summary = "every collective's transfer time multiplied by X"
    stage = Stage.NETWORK
    needs_comm_model = True

    factor: float

    @classmethod
    def parse(cls, value: str) -> CommScale:
        return cls(factor=parse_factor(value, cls.key))

    @property
    def label(self) -> str:
        return f"comm-scale={format_float(self.factor)}"

    def scalar(self) -> float:
        return self.factor

    def with_scalar(self, x: float) -> CommScale:
        return CommScale(factor=x)

    def apply(self, edit: VariantEdit) -> None:
        edit.retiming.time_factor *= self.factor
