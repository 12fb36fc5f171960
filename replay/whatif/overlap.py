"""``overlap=off|on``: whether gradient communication overlaps the backward.

``overlap=off`` issues every bucket, in bucket order, after the last gradient of the step
is ready (no wait-free backprop: what DDP under ``no_sync()`` followed by one all-reduce
per bucket does, as ``samples/train_ddp.py --no-overlap``); ``overlap=on`` is DDP's
default, each bucket as soon as its gradients are ready.
"""

from __future__ import annotations

from dataclasses import replace

from replay.whatif.rewrite import GradientPlan
from replay.whatif.spec import Overlap


def plan_overlap(plan: GradientPlan, overlap: Overlap) -> tuple[GradientPlan, list[str]]:
    note = [] if overlap.enabled else [
        "overlap=off: every bucket is issued after the last gradient of the step"]
    return replace(plan, overlap=overlap.enabled), note
