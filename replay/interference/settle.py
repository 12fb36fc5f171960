"""The one damped fixed-point loop every interference model re-times a variant with.

A variant's durations depend on what overlaps in its schedule, and its schedule depends on
its durations. Each model names a per-node *state* that overlap produces (the factor
model: each compute node's overlapped fraction; the core model: each node's slowdown from
core sharing) and two functions:

- ``durations(state) -> dur_ns``: the variant's durations under that state;
- ``measure(start_ns, end_ns) -> state``: the state a schedule produces.

:func:`settle` schedules, measures and re-times for ``passes`` rounds; from the second
round on the new state is averaged with the previous one (damping), so schedules that
alternate between two overlaps settle in between. Example (one op beside a 5 ms transfer,
factor 2, 4 ms of work)::

    pass 1: frac 0.00 -> op 4.0 ms, overlaps 100%  -> frac 1.00
    pass 2: frac 1.00 -> op 8.0 ms, overlaps 62%   -> frac 0.81 (damped)
    ...     converges to 6.5 ms (5 ms at half speed, then 1.5 ms alone)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tracekit.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class Settled:
    """Where :func:`settle` stopped."""

    #: durations of the last pass (what the variant is replayed with)
    dur_ns: np.ndarray
    #: the per-node state after the last pass (damped)
    state: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    passes: int
    #: relative change of the makespan in the last pass (0: a fixed point)
    last_change: float


def settle(*, state: np.ndarray, durations: Callable[[np.ndarray], np.ndarray],
           measure: Callable[[np.ndarray, np.ndarray], np.ndarray],
           schedule: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
           passes: int, what: str = "interference", atol: float = 0.0) -> Settled:
    """Run the damped loop from ``state`` (see module doc); with ``atol`` > 0 it stops
    early once a pass gives back the state it started from (within ``atol`` everywhere),
    so a state that is already the fixed point costs one schedule."""
    prev_span = None
    change = 0.0
    cur = start = end = None
    n = max(1, passes)
    for i in range(n):
        cur = durations(state)
        start, end = schedule(cur)
        span = float(np.max(end) - np.min(start)) if len(end) else 0.0
        change = abs(span - prev_span) / prev_span if prev_span else 0.0
        prev_span = span
        new = measure(start, end)
        if atol > 0 and np.allclose(new, state, rtol=0, atol=atol):
            return Settled(dur_ns=cur, state=state, start_ns=start, end_ns=end, passes=i + 1,
                           last_change=change)
        state = new if i == 0 else 0.5 * (state + new)
        log.debug("%s pass %d: makespan %.3f ms (change %.2f%%)", what, i + 1, span / 1e6,
                  change * 100)
    return Settled(dur_ns=cur, state=state, start_ns=start, end_ns=end, passes=n,
                   last_change=change)
