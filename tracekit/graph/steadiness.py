"""Whether each rank did the same work in every step: a run disturbed while it was
recorded.

A training step runs the same ops every time, so a rank's compute per step (the summed
duration of its compute nodes) is nearly constant. When something else takes the
rank's cores for a while (another job, a build, a test run on a shared machine), its
steps there compute slower, and every prediction from the run inherits that: the
what-ifs keep those compute times and re-price the communication around them.

Per rank, each step's compute against the rank's lower-quartile step (an outside load
only ever slows a step, and may last for half the run: the median would sit between the
two kinds of step)::

    rank  step  compute_ms          ratio to the lower quartile
    1     5      32.5               0.99
    1     9      79.0               2.40    <- disturbed
    1     10     61.5               1.87    <- disturbed

:func:`unsteady_steps` names the steps whose compute exceeds that reference by more than
``tolerance`` (default 1.5x: ordinary step-to-step noise here is 15%), in stretches of at
least two consecutive steps: a lone slow step is common (a garbage
collection, the first step after the profiler starts) and says nothing about the run,
while an outside load lasts. A rank with fewer than five steps is not judged: its lower
quartile is not a reference then.
"""

from __future__ import annotations

import numpy as np

from tracekit.graph.model import Graph, NodeKind

#: a step's compute this many times its rank's lower-quartile step is a disturbance
DEFAULT_TOLERANCE = 1.5
#: disturbed steps in a row before they are named
MIN_STRETCH = 2
#: steps a rank needs before it is judged
MIN_STEPS = 5


def compute_per_step(graph: Graph) -> dict[int, dict[int, float]]:
    """rank -> step -> summed compute node duration (ns), for steps >= 0."""
    sel = (graph.kind == NodeKind.COMPUTE) & (graph.step >= 0)
    out: dict[int, dict[int, float]] = {}
    if not sel.any():
        return out
    rank, step = graph.rank[sel].astype(np.int64), graph.step[sel].astype(np.int64)
    width = int(step.max()) + 1
    keys, inv = np.unique(rank * width + step, return_inverse=True)
    sums = np.bincount(inv, weights=graph.dur_ns[sel].astype(float))
    for k, s in zip(keys.tolist(), sums.tolist()):
        out.setdefault(k // width, {})[k % width] = s
    return out


def unsteady_steps(graph: Graph, tolerance: float = DEFAULT_TOLERANCE
                   ) -> dict[int, list[tuple[int, float]]]:
    """rank -> [(step, compute / the rank's lower-quartile step compute)] of the steps
    above ``tolerance`` times it, in stretches of :data:`MIN_STRETCH` consecutive steps or
    more (see module doc)."""
    out = {}
    for rank, per_step in compute_per_step(graph).items():
        if len(per_step) < MIN_STEPS:
            continue
        ref = float(np.percentile(list(per_step.values()), 25))
        if ref <= 0:
            continue
        bad, run = [], []  # run: the current stretch of consecutive disturbed steps
        for s in sorted(per_step):
            if per_step[s] / ref <= tolerance or (run and run[-1] != s - 1):
                bad += run if len(run) >= MIN_STRETCH else []
                run = []
            if per_step[s] / ref > tolerance:
                run.append(s)
        bad += run if len(run) >= MIN_STRETCH else []
        if bad:
            out[rank] = [(s, per_step[s] / ref) for s in bad]
    return out


def unsteady_note(graph: Graph, tolerance: float = DEFAULT_TOLERANCE) -> str | None:
    """One line naming the disturbed steps of every rank, or None when there are none."""
    found = unsteady_steps(graph, tolerance)
    if not found:
        return None
    parts = [f"rank {r} steps {', '.join(str(s) for s, _ in bad)} "
             f"({min(x for _, x in bad):.2f}-{max(x for _, x in bad):.2f}x its usual step)"
             for r, bad in sorted(found.items())]
    return ("compute per step not steady: " + "; ".join(parts) + ". Something else "
            "probably used the cores then; predictions keep those compute times: re-record "
            "on a quiet machine, or replay only the steady steps (--step N, repeated)")
