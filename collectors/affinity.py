"""Which CPUs a rank may run on, and pinning each local rank to its own core.

The replay's CPU model (``replay.interference.cores``) shares a host's cores among the
threads of the ranks that can run on them. Ranks pinned to disjoint cores do not share:
so a rank records its affinity mask (``cpu_set`` in its manifest entry), not only its size.

``TRACEKIT_PIN_CORES=1`` (``benchmarks/cluster.py --pin`` sets it) pins each local rank to
core ``LOCAL_RANK % cores`` before it joins the process group; every thread it starts
later (gloo's, the profiler's) inherits that. The sample trainers and the calibration
worker call :func:`pin_local_rank_if_asked`.
"""

from __future__ import annotations

import os

PIN_ENV = "TRACEKIT_PIN_CORES"


def cpu_set() -> list[int]:
    """The CPUs this process may run on ([] where the platform does not say)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


def cpu_count() -> int:
    """How many CPUs this process may run on (its affinity mask; the machine's count where
    the platform has no mask; 0 when neither is known)."""
    return len(cpu_set()) or os.cpu_count() or 0


def pin_local_rank_if_asked() -> int | None:
    """Under ``TRACEKIT_PIN_CORES=1``: pin this process to core ``LOCAL_RANK % cores`` and
    return that core; else (or where affinity cannot be set) None."""
    if os.environ.get(PIN_ENV) != "1" or not hasattr(os, "sched_setaffinity"):
        return None
    cores = cpu_set()
    if not cores:
        return None
    core = cores[int(os.environ.get("LOCAL_RANK", "0")) % len(cores)]
    os.sched_setaffinity(0, {core})
    return core
