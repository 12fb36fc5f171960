"""``dear``: DeAR's decoupled all-reduce (ICDCS 2023).

Each bucket's all-reduce becomes a reduce-scatter issued as soon as its gradients are
ready (overlapping backward; nothing waits for it at the end of backward) and an
all-gather issued in the next step's forward just before the first module that uses the
bucket's parameters, which waits for it. No extra bytes move: a ring reduce-scatter plus
all-gather move what a ring all-reduce moves. This is what ``samples/train_dear.py``
does, so a prediction can be checked against a real run.

The costs of the two halves come from the cost model: with ``--comm-model comm.json``
they are measured (on gloo a reduce-scatter costs far more than half an all-reduce);
without it they are extrapolated from the run's all-reduces by formula, and the notes
say so. The optimizer work stays where the baseline had it (DeAR moves the update of
each bucket into the forward; the host time is the same).
"""

from __future__ import annotations

from dataclasses import replace

from replay.whatif.rewrite import GradientPlan


def plan_dear(plan: GradientPlan, cost_sources: dict[str, str]) -> tuple[GradientPlan, list[str]]:
    """The plan with DeAR's halves; ``cost_sources`` maps 'reduce_scatter' and
    'all_gather' to where their cost comes from (for the notes)."""
    notes = [f"dear: {c.replace('_', '-')} cost {src}" for c, src in cost_sources.items()]
    return replace(plan, dear=True), notes
