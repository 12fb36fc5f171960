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

from dataclasses import replace

from replay.whatif.bucketing import DDPBucketConfig, ddp_buckets
from replay.whatif.gradients import GradientSync
from replay.whatif.rewrite import GradientPlan
from replay.whatif.spec import Fusion, format_size


def plan_fusion(plan: GradientPlan, fusion: Fusion, sync: GradientSync
                ) -> tuple[GradientPlan, list[str]]:
    """The plan with DDP's buckets for a cap of ``fusion.bucket_bytes``."""
    cfg = DDPBucketConfig.from_bucket_bytes(fusion.bucket_bytes)
    position = {p.index: k for k, p in enumerate(sync.params)}
    buckets = ddp_buckets(list(sync.params), cfg, ready_order=sync.ready_order)
    new = tuple(tuple(sorted(position[i] for i in b.params)) for b in buckets)
    sizes = ", ".join(format_size(b.bytes) for b in buckets[:6])
    more = f", ... ({len(buckets)} buckets)" if len(buckets) > 6 else ""
    note = (f"fusion={format_size(fusion.bucket_bytes)}: {len(buckets)} bucket(s) of {sizes}{more} "
            f"(baseline: {len(sync.buckets)})")
    return replace(plan, buckets=new), [note]
