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
for a few damped passes (:func:`replay.interference.settle.settle`, as for the GPU
factor), so the result is close to a fixed point. :class:`CoreSharing` is this model
behind the :class:`~replay.interference.model.InterferenceModel` interface.

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

from replay.interference.model import InterferenceModel, Retimed, Scheduler, from_origin
from replay.interference.settle import settle
from tracekit.core.groups import groups
from tracekit.graph.edit import with_durations
from tracekit.graph.model import Graph, NodeKind
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
    for h, sel in groups(host):
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

    def durations(f: np.ndarray) -> np.ndarray:
        return np.round(base * f).astype(np.int64)

    def measure(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        # the engine starts a collective when its transfer starts: start..end is busy
        return slowdown(start, end, host, hc.cores)

    res = settle(state=np.maximum(np.asarray(base_slowdown, dtype=float), 1.0),
                 durations=durations, measure=measure, schedule=schedule, passes=passes,
                 what="contention")
    return ContentionResult(dur_ns=res.dur_ns, slowdown=res.state, passes=res.passes,
                            last_change=res.last_change)


class CoreSharing(InterferenceModel):
    """``--interference cores``: every thread of a host shares its cores, comm and compute
    alike (the default for CPU-only runs; see module doc)."""

    name = "cores"

    def __init__(self, run, graph: Graph, start_ns: np.ndarray, end_ns: np.ndarray) -> None:
        """Hosts and cores from the run's manifest; the slowdown inside every measured
        duration is read from the baseline *replay* ``start_ns``/``end_ns`` (as the factor
        model's overlap is), so a variant that changes nothing stays exactly the
        baseline, whatever the replay moved by a few microseconds."""
        self.hosts = host_cores(run, graph)
        self.notes = list(self.hosts.notes)
        self.base_slowdown = slowdown(start_ns, end_ns, self.hosts.host_of_rank[graph.rank],
                                      self.hosts.cores)

    def describe(self) -> str:
        return self.hosts.describe()

    def cost_fit_graph(self, graph: Graph) -> Graph:
        """Cost models are fitted on contention-free transfer times, so a collective a
        what-if creates starts uncontended and is slowed by its own schedule's sharing."""
        comm = graph.kind == NodeKind.COMM
        alone = np.where(comm, np.rint(graph.dur_ns / self.base_slowdown), graph.dur_ns)
        return with_durations(graph, alone.astype(np.int64))

    def retime(self, graph: Graph, origin: np.ndarray, schedule: Scheduler) -> Retimed:
        # the sharing inside each duration: measured for nodes kept from the run; 1 for
        # nodes a what-if created (timed by the contention-free cost model)
        res = apply_contention(graph=graph, dur_ns=graph.dur_ns, hc=self.hosts,
                               base_slowdown=from_origin(self.base_slowdown, origin, 1.0),
                               schedule=schedule)
        return Retimed(dur_ns=res.dur_ns,
                       notes=self.settle_notes("core sharing", res.last_change))
