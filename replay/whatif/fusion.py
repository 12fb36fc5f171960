"""``fusion=SIZE``: regroup gradients into DDP buckets of another size.

The new buckets are exactly the ones ``DDP(bucket_cap_mb=SIZE)`` would build after its
first iteration (torch 2.13, :mod:`replay.whatif.bucketing`): the run's gradient ready
order, per dtype, every bucket (the first included: an explicit ``bucket_cap_mb`` caps
them all) closed once it reaches SIZE. :func:`replay.whatif.rewrite.materialize` then
issues each bucket when its last gradient is ready and times it with the cost model.

Before/after (16 x Linear(512, 512): 32 gradients, 1 MB + 2 KB per layer)::

    baseline buckets (DDP default, 1 MB first, 25 MB): [2 gradients, 30 gradients]
    fusion=4MB: [8, 8, 8, 8] gradients (4.0 MB each: a bucket closes at >= 4 MB)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from replay.whatif.bucketing import DDPBucketConfig, ddp_buckets
from replay.whatif.gradients import GradientSync
from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.rewrite import GradientPlan
from replay.whatif.values import format_size, parse_size
from replay.whatif.variant_edit import VariantEdit


def plan_fusion(plan: GradientPlan, bucket_bytes: int, sync: GradientSync
                ) -> tuple[GradientPlan, list[str]]:
    """The plan with DDP's buckets for a cap of ``bucket_bytes``."""
    cfg = DDPBucketConfig.from_bucket_bytes(bucket_bytes)
    position = {p.index: k for k, p in enumerate(sync.params)}
    buckets = ddp_buckets(list(sync.params), cfg, ready_order=sync.ready_order)
    new = tuple(tuple(sorted(position[i] for i in b.params)) for b in buckets)
    sizes = ", ".join(format_size(b.bytes) for b in buckets[:6])
    more = f", ... ({len(buckets)} buckets)" if len(buckets) > 6 else ""
    note = (f"fusion={format_size(bucket_bytes)}: {len(buckets)} bucket(s) of {sizes}{more} "
            f"(baseline: {len(sync.buckets)})")
    return replace(plan, buckets=new), [note]


@register
@dataclass(frozen=True, kw_only=True)
class Fusion(WhatIf):
    """``fusion=SIZE``: regroup gradients into DDP buckets of ``bucket_bytes``."""

    key = "fusion"
    aliases = ("bucket",)
    syntax = "fusion=SIZE"
    example = "fusion=25MB"
    range_example = "fusion=1MB..256MB"
    summary = ("DDP bucket_cap_mb (MiB, as DDP counts): re-bucket gradients exactly as DDP "
               "2.13 does, re-time each bucket's all-reduce with the fitted cost model")
    stage = Stage.GRADIENTS
    needs_comm_model = True
    needs_gradient_sync = True

    bucket_bytes: int

    @classmethod
    def parse(cls, value: str) -> Fusion:
        return cls(bucket_bytes=parse_size(value))

    @property
    def label(self) -> str:
        return f"fusion={format_size(self.bucket_bytes)}"

    def scalar(self) -> float:
        return float(self.bucket_bytes)

    def with_scalar(self, x: float) -> Fusion:
        return Fusion(bucket_bytes=int(round(x)))

    def apply(self, edit: VariantEdit) -> None:
        edit.plan, notes = plan_fusion(edit.plan, self.bucket_bytes, edit.ctx.sync)
        edit.notes += notes
