"""``overlap=off|on``: whether gradient communication overlaps the backward.

``overlap=off`` issues every bucket, in bucket order, after the last gradient of the step
is ready (no wait-free backprop; DDP's own bucket copies stay where they were: what DDP
with a comm hook that holds every bucket until the last one does, as
``samples/train_ddp.py --no-overlap``); ``overlap=on`` is DDP's default, each bucket as
soon as its gradients are ready.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.variant_edit import VariantEdit
from tracekit.errors import TracekitError


@register
@dataclass(frozen=True, kw_only=True)
class Overlap(WhatIf):
    """``overlap=on|off``: off starts all gradient communication after the last backward op."""

    key = "overlap"
    syntax = "overlap=on|off"
    example = "overlap=off"
    summary = "all gradient communication after the last backward op (off) / DDP's default (on)"
    stage = Stage.GRADIENTS
    needs_comm_model = True
    needs_gradient_sync = True

    enabled: bool

    @classmethod
    def parse(cls, value: str) -> Overlap:
        t = value.strip().lower()
        if t not in ("on", "off"):
            raise TracekitError(f"cannot read overlap={value!r}; expected overlap=on or "
                                "overlap=off")
        return cls(enabled=t == "on")

    @property
    def label(self) -> str:
        return f"overlap={'on' if self.enabled else 'off'}"

    def apply(self, edit: VariantEdit) -> None:
        edit.plan = replace(edit.plan, overlap=self.enabled)
        if not self.enabled:
            edit.notes.append("overlap=off: every bucket is issued after the last gradient "
                              "of the step")
