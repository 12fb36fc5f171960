"""``bandwidth=X``: a faster or slower network.

``bandwidth=2x`` divides the bandwidth term of every collective's cost by 2 (the latency
term stays); ``bandwidth=100Gbps`` replaces the fitted bus bandwidth with that rate.
Each comm node's measured transfer is scaled by ``T_variant / T_baseline``
(:func:`replay.whatif.retiming.retime_comm`).

Before/after (all-reduce of 16 MB on 2 ranks, fitted 60 us/step and 1 GB/s)::

    transfer measured 18.0 ms; model 0.12 + 16.8 ms = 16.9 ms
    bandwidth=2x: model 0.12 + 8.4 = 8.5 ms -> node 18.0 * 8.5 / 16.9 = 9.1 ms
"""

from __future__ import annotations

from dataclasses import dataclass

from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.values import format_float, format_rate, is_factor, parse_factor, parse_rate
from replay.whatif.variant_edit import VariantEdit


@register
@dataclass(frozen=True, kw_only=True)
class Bandwidth(WhatIf):
    """``bandwidth=2x`` (``factor``) or ``bandwidth=100Gbps`` (``bytes_per_s``, the bus
    bandwidth every collective would see); exactly one is set."""

    key = "bandwidth"
    syntax = "bandwidth=X"
    example = "bandwidth=2x"
    range_example = "bandwidth=1x..8x"
    summary = "faster or slower network: 2x the fitted bandwidth, or a rate such as 100Gbps"
    stage = Stage.NETWORK
    needs_comm_model = True

    factor: float | None = None
    bytes_per_s: float | None = None
    text: str = ""

    @classmethod
    def parse(cls, value: str) -> Bandwidth:
        t = value.strip()
        if is_factor(t):
            return cls(factor=parse_factor(t, cls.key, example="bandwidth=2x"))
        return cls(bytes_per_s=parse_rate(t), text=t)

    @property
    def label(self) -> str:
        if self.factor is not None:
            return f"bandwidth={format_float(self.factor)}x"
        return f"bandwidth={self.text}" if self.text else f"bandwidth={self.bytes_per_s:g}B/s"

    def scalar(self) -> float:
        return self.factor if self.factor is not None else float(self.bytes_per_s)

    def with_scalar(self, x: float) -> Bandwidth:
        if self.factor is not None:
            return Bandwidth(factor=x)
        return Bandwidth(bytes_per_s=x, text=format_rate(x))

    def same_kind_of_value(self, other: WhatIf) -> bool:
        return isinstance(other, Bandwidth) and (self.factor is None) == (other.factor is None)

    def apply(self, edit: VariantEdit) -> None:
        if self.factor is not None:
            edit.retiming.bandwidth_factor *= self.factor
        else:
            edit.retiming.bandwidth_bytes_per_s = self.bytes_per_s
