"""CPU core contention: the threads of one host share its cores (processor sharing).

On a CPU-only run every lane is a host thread: each rank's main thread runs the model,
gloo's runloop threads run the transfers (copies, TCP over loopback, reductions: CPU
work too). When more threads are busy than the host has cores, each progresses at
``cores / busy`` of its full speed, so overlapping communication with computation buys
nothing once the cores are saturated, and slows both sides. A single "compute is X times
slower beside comm" factor cannot express that: it depends on how many threads of *every*
rank on the host run at once, which is exactly what a what-if changes.

Model (one host, ``cores`` cores, every node a thread while it runs)::

    busy(t)      = number of the host's nodes running at t (compute, host ops, and comm
                   transfers: ``start + wait`` to the end)
    slowdown(v)  = mean over v's span of max(1, busy(t) / cores)
    duration(v)  = base(v) * slowdown(v)

Measured durations become ``base = measured / slowdown(baseline replay)``; a variant is
scheduled, its slowdowns recomputed from its own schedule and durations re-inflated,
for a few damped passes (as :func:`replay.interference.apply_interference` does for the
GPU factor), so the result is close to a fixed point.

Example: a 2-core host, both ranks' main threads computing while each rank's gloo thread
transfers (4 busy threads)::

    busy 4 on 2 cores -> every one of them runs at half speed: slowdown 2.0
    the same transfer after backward (2 busy threads) -> slowdown 1.0

Cores per host come from the manifest (``ranks[].cpu_cores``, recorded by ``tracekit
profile``); without it, this machine's core count is assumed and the notes say so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tracekit.graph.model import Graph
from tracekit.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class HostCores:
    """Which host each rank runs on and how many cores each host has."""

    #: rank id -> host index (array indexed by rank)
    host_of_rank: np.ndarray
    #: host index -> cores
    cores: np.ndarray
    names: list[str]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        for h, name in enumerate(self.names):
            ranks = np.flatnonzero(self.host_of_rank == h)
            parts.append(f"{len(ranks)} rank(s) on {name or 'one host'} share "
                         f"{int(self.cores[h])} core(s)")
        return "CPU contention (processor sharing): " + "; ".join(parts)


def host_cores(run, graph: Graph) -> HostCores:
    """Hosts and their cores from the run's manifest (see module doc)."""
    n_ranks = int(graph.rank.max()) + 1 if graph.n_nodes else 1
    manifest = getattr(run, "manifest", None)
    hosts = dict(manifest.hosts) if manifest is not None else {}
    recorded = dict(manifest.cpu_cores) if manifest is not None else {}
    names = sorted({hosts.get(r, "") for r in range(n_ranks)})
    index = {h: i for i, h in enumerate(names)}
    host_of_rank = np.array([index[hosts.get(r, "")] for r in range(n_ranks)], dtype=np.int64)
    notes = []
    here = _this_machine_cores()
    cores = np.zeros(len(names), dtype=np.int64)
    for h in range(len(names)):
        ranks = np.flatnonzero(host_of_rank == h)
        known = [recorded[r] for r in ranks if r in recorded]
        cores[h] = max(known) if known else here
    if len(recorded) < n_ranks:
        notes.append(f"cores per host not recorded in the manifest (re-record with "
                     f"'tracekit profile'): assumed {here}, this machine's")
    return HostCores(host_of_rank=host_of_rank, cores=cores, names=names, notes=notes)


def _this_machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def slowdown(start: np.ndarray, end: np.ndarray, host: np.ndarray,
             cores: np.ndarray) -> np.ndarray:
    """Per interval ``[start, end)``: mean of ``max(1, busy(t) / cores)`` over it, where
    ``busy(t)`` counts the intervals of the same host covering ``t``."""
    out = np.ones(len(start), dtype=float)
    for h in np.unique(host):
        sel = np.flatnonzero(host == h)
        s, e = start[sel], end[sel]
        t = np.concatenate([s, e])
        step = np.concatenate([np.ones(len(s)), -np.ones(len(e))])
        order = np.argsort(t, kind="stable")
        t, step = t[order], step[order]
        rate = np.maximum(1.0, np.cumsum(step) / float(cores[h]))  # on [t_i, t_i+1)
        area = np.concatenate([[0.0], np.cumsum(rate[:-1] * np.diff(t))])

        def integral(x: np.ndarray, t=t, rate=rate, area=area) -> np.ndarray:
            # the value just before x: ties resolve to the segment that starts at x
            i = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(t) - 1)
            return area[i] + rate[i] * (x - t[i])

        span = (e - s).astype(float)
        ok = span > 0
        val = np.ones(len(sel))
        val[ok] = (integral(e[ok]) - integral(s[ok])) / span[ok]
        out[sel] = np.maximum(val, 1.0)
    return out


@dataclass(frozen=True, kw_only=True)
class ContentionResult:
    """Durations after sharing the cores in a variant's own schedule."""

    dur_ns: np.ndarray
    #: per node, the slowdown applied
    slowdown: np.ndarray
    passes: int
    #: relative change of the makespan in the last pass (0: a fixed point)
    last_change: float


def apply_contention(*, graph: Graph, dur_ns: np.ndarray, base_slowdown: np.ndarray,
                     hc: HostCores,
                     schedule: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                     passes: int = 6) -> ContentionResult:
    """Re-time every node of a variant for the core sharing its own schedule produces.

    ``dur_ns``: durations as measured (including the baseline's contention) or as a
    what-if set them; ``base_slowdown``: the slowdown already inside each of them (the
    measured one for baseline nodes, the run's typical one for re-timed nodes).
    """
    base = np.asarray(dur_ns, dtype=float) / np.maximum(base_slowdown, 1.0)
    host = hc.host_of_rank[graph.rank]
    f = np.maximum(np.asarray(base_slowdown, dtype=float), 1.0)
    prev = None
    change = 0.0
    cur = np.round(base * f).astype(np.int64)
    for i in range(max(1, passes)):
        cur = np.round(base * f).astype(np.int64)
        start, end = schedule(cur)
        span = float(end.max() - start.min()) if len(end) else 0.0
        change = abs(span - prev) / prev if prev else 0.0
        prev = span
        # the engine starts a collective when its transfer starts: start..end is busy
        new = slowdown(start, end, host, hc.cores)
        f = new if i == 0 else 0.5 * (f + new)
        log.debug("contention pass %d: makespan %.3f ms (change %.2f%%)", i + 1, span / 1e6,
                  change * 100)
    return ContentionResult(dur_ns=cur, slowdown=f, passes=max(1, passes), last_change=change)
