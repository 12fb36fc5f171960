"""CPU core contention: the threads of one host share its cores (processor sharing).

On a CPU-only run every lane is a host thread: each rank's main thread runs the model,
gloo's runloop threads run the transfers (copies, TCP over loopback, reductions: CPU
work too). When more threads are busy than the host has cores, each progresses at
``cores / busy`` of its full speed, so overlapping communication with computation buys
nothing once the cores are saturated, and slows both sides. A single "compute is X times
slower beside comm" factor cannot express that: it depends on how many threads of *every*
rank on the host run at once, which is exactly what a what-if changes.

Model (one host, ``cores`` cores, every node a thread while it runs)::

    share(v)     = 1 for compute and host ops; for a comm transfer, the share of a core
                   it keeps busy running alone (CPU time / wall time, from the
                   calibration: ``CommCostModel.cpu_share``), 1 when not measured
    busy(t)      = sum of share(v) over the host's nodes running at t (comm transfers:
                   ``start + wait`` to the end)
    sharing(v)   = mean over v's span of max(1, busy(t) / cores); for a transfer at
                   least the mean of (busy(t) + 1 - share(v)) / cores
    computing(v) = for a transfer: max(1, mean over its span of (busy_compute(t) + 1) /
                   cores), busy_compute summing the nodes that are not transfers
    slowdown(v)  = 1 + min(share(v), 1) * (sharing(v) - 1)
                     + max(k(v) - share(v), 0) * (computing(v) - 1)
    duration(v)  = base(v) * slowdown(v)

    k(v)         = 0 for compute; for a transfer, how hard it slows beside computing
                   threads (:mod:`replay.contention_probe`, calibrated; 0 when not
                   measured)

A transfer alternates CPU work (copies, reductions, socket calls) with waiting on the
wire: only its CPU part, ``share`` of its time alone, runs slower when the cores are
shared; the waiting does not. So a transfer that waits on the wire most of the time (a
gloo all-reduce on a 4 Gbit/s link keeps ~0.25 of a core busy) barely slows the compute
beside it and is itself slowed by a quarter of the sharing; on loopback a transfer is
CPU work through and through (share ~1) and shares the cores like compute. While a
transfer's CPU work runs, its thread is one whole runnable thread beside the others: the
load it meets is the others' plus 1, not plus its own average share (a transfer is not
slowed less because its CPU work would fit in its fair share of the cores; each burst of
it waits for a core like any other thread's). Measured: a 1 MB gloo all-reduce during
DDP's backward on 2 cores (share 0.55, both main threads computing) took 1.61x its
calibrated time; this model gives 1.40x over its replayed schedule, the plain
share-weighted load 1.30x (``benchmarks/transfer_vs_calibration.py RUN comm.json``).
On a wire-bound link a transfer slows far more than its CPU part says (a 1 MB all-reduce
at 2 Gbit/s, share 0.16, took 1.5x beside compute on both cores where the CPU part gives
1.08x: gloo's ring waits for a core at each of its many steps), so where the calibration
probed it the transfer's weight is the measured sensitivity ``k`` instead
(:mod:`replay.contention_probe`); its load on the others stays its CPU share. That
extra weight counts the *computing* threads beside it only: a computing thread holds its
core until the scheduler takes it away, so each ring step waits; another transfer's
thread mostly sleeps on the wire, and the core is free when this one wakes. With every
thread counted, the 1 MB buckets of ``fusion=1MB`` at 8 Gbit/s (k 3.1, share 0.5-0.8) met
each other after the backward at 2 ranks x 2 gloo threads and took 9.7 ms each, where
1.7-2.9 ms was their cost alone (the variant's timeline, ``Session(CELL / "baseline",
PredictionOptions(comm_model=...)).what_ifs(["fusion=1MB"])[0].result.timeline``, its
gloo:all_reduce rows of step 9; the cost alone: the calibration's busy-link 1.7 ms, and
the probe's 2.7-3.2 ms without compute): 0.82x predicted against 1.00x measured (mlp;
counting computing threads only: 1.01x; ``benchmarks/predict_cell.py CELL``).

Measured durations become ``base = measured / slowdown(baseline replay)``; a variant is
scheduled, its slowdowns recomputed from its own schedule and durations re-inflated,
for a few damped passes (:func:`replay.interference.settle.settle`, as for the GPU
factor), so the result is close to a fixed point. :class:`CoreSharing` is this model
behind the :class:`~replay.interference.model.InterferenceModel` interface.

Example: a 2-core host, both ranks' main threads computing while each rank's gloo thread
transfers (4 busy threads)::

    loopback (share 1): busy 4 on 2 cores -> every one of them at half speed: slowdown 2.0
    4 Gbit/s link (share 0.25): busy 2.5 -> compute slowdown 1.25; each transfer meets
        2.25 + 1 = 3.25 busy: 1 + 0.25 * (1.625 - 1) = 1.16
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
    """Which host each rank runs on (its link), and which pool of cores it shares with
    which other ranks: the ranks of a host whose affinity masks overlap (all of them,
    unless they were pinned apart)."""

    #: rank id -> host index (array indexed by rank): the ranks sharing a link
    host_of_rank: np.ndarray
    #: pool index -> cores
    cores: np.ndarray
    #: pool index -> its host's name
    names: list[str]
    #: rank id -> pool index: the ranks sharing cores (None: one pool per host)
    pool_of_rank: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pool_of_rank is None:
            object.__setattr__(self, "pool_of_rank", self.host_of_rank)

    def describe(self) -> str:
        parts = []
        for p, name in enumerate(self.names):
            ranks = np.flatnonzero(self.pool_of_rank == p)
            who = (f"rank {int(ranks[0])}" if len(ranks) == 1
                   else f"{len(ranks)} rank(s)")
            parts.append(f"{who} on {name or 'one host'} share{'s' if len(ranks) == 1 else ''} "
                         f"{int(self.cores[p])} core(s)")
        return "CPU contention (processor sharing): " + "; ".join(parts)


def cpu_pools(hosts: list[str], cpu_sets: list | None) -> list[int]:
    """Pool index per rank: ranks of one host share a pool when their recorded CPU sets
    overlap (transitively); a host where any rank's set is unknown is one pool, as are
    hosts of ranks that were not pinned (every mask the whole machine)."""
    sets = list(cpu_sets or [])
    unknown = {h for r, h in enumerate(hosts) if r >= len(sets) or not sets[r]}
    # union-find over (host, cpu): a rank joins all of its CPUs; a host with an unknown
    # set is one node of its own
    parent: dict[tuple, tuple] = {}

    def root(x: tuple) -> tuple:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    nodes = []
    for r, h in enumerate(hosts):
        mine = [(h, None)] if h in unknown else [(h, c) for c in sets[r]]
        for x in mine[1:]:
            parent[root(x)] = root(mine[0])
        nodes.append(mine[0])
    index: dict[tuple, int] = {}
    return [index.setdefault(root(x), len(index)) for x in nodes]


def host_cores(run, graph: Graph) -> HostCores:
    """Hosts, core pools and their cores from the run's manifest (see module doc)."""
    n_ranks = int(graph.rank.max()) + 1 if graph.n_nodes else 1
    manifest = getattr(run, "manifest", None)
    hosts = dict(manifest.hosts) if manifest is not None else {}
    recorded = dict(manifest.cpu_cores) if manifest is not None else {}
    sets = dict(getattr(manifest, "cpu_sets", None) or {}) if manifest is not None else {}
    names = sorted({hosts.get(r, "") for r in range(n_ranks)})
    index = {h: i for i, h in enumerate(names)}
    host_of_rank = np.array([index[hosts.get(r, "")] for r in range(n_ranks)], dtype=np.int64)
    pool_of_rank = np.array(cpu_pools([hosts.get(r, "") for r in range(n_ranks)],
                                      [sets.get(r) for r in range(n_ranks)]), dtype=np.int64)
    notes = []
    here = _this_machine_cores()
    n_pools = int(pool_of_rank.max()) + 1
    cores = np.zeros(n_pools, dtype=np.int64)
    pool_names = [""] * n_pools
    for p in range(n_pools):
        ranks = np.flatnonzero(pool_of_rank == p)
        pool_names[p] = names[int(host_of_rank[ranks[0]])]
        if all(int(r) in sets for r in ranks):
            cores[p] = len({c for r in ranks for c in sets[int(r)]})
            continue
        known = [recorded[r] for r in ranks if r in recorded]
        cores[p] = max(known) if known else here
    if len(recorded) < n_ranks:
        notes.append(f"cores per host not recorded in the manifest (re-record with "
                     f"'tracekit profile'): assumed {here}, this machine's")
    return HostCores(host_of_rank=host_of_rank, pool_of_rank=pool_of_rank, cores=cores,
                     names=pool_names, notes=notes)


def _this_machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def mean_loads(start: np.ndarray, end: np.ndarray, host: np.ndarray, weight: np.ndarray,
               capacity: np.ndarray, floors: tuple[float, ...]) -> list[np.ndarray]:
    """Per floor ``f``, per interval ``[start, end)``: the mean over it of ``max(f, load(t)
    / capacity)``, where ``load(t)`` sums ``weight`` over the intervals of the same host
    covering ``t`` and ``capacity`` is the host's (cores, or 1 link); ``f = 0``: the plain
    mean load. One pass over each host's intervals for every floor."""
    return weighted_mean_loads(start, end, host, capacity, [(weight, f) for f in floors])


def weighted_mean_loads(start: np.ndarray, end: np.ndarray, host: np.ndarray,
                        capacity: np.ndarray,
                        specs: list[tuple[np.ndarray, float]]) -> list[np.ndarray]:
    """:func:`mean_loads` for several ``(weight, floor)`` pairs: each host's intervals are
    sorted once for all of them."""
    out = [np.full(len(start), f, dtype=float) for _, f in specs]
    for h, sel in groups(host):
        s, e = start[sel], end[sel]
        t = np.concatenate([s, e])
        order = np.argsort(t, kind="stable")
        t = t[order]
        # the value just before x: ties resolve to the segment that starts at x
        lo = np.clip(np.searchsorted(t, s, side="right") - 1, 0, len(t) - 1)
        hi = np.clip(np.searchsorted(t, e, side="right") - 1, 0, len(t) - 1)
        span = (e - s).astype(float)
        ok = span > 0
        for (weight, f), res in zip(specs, out):
            w = weight[sel]
            load = np.cumsum(np.concatenate([w, -w])[order]) / float(capacity[h])
            rate = np.maximum(f, load)  # on [t_i, t_i+1)
            area = np.concatenate([[0.0], np.cumsum(rate[:-1] * np.diff(t))])
            val = np.full(len(sel), f)
            val[ok] = (area[hi[ok]] + rate[hi[ok]] * (e[ok] - t[hi[ok]])
                       - area[lo[ok]] - rate[lo[ok]] * (s[ok] - t[lo[ok]])) / span[ok]
            res[sel] = np.maximum(val, f)
    return out


def mean_load(start: np.ndarray, end: np.ndarray, host: np.ndarray, weight: np.ndarray,
              capacity: np.ndarray) -> np.ndarray:
    """:func:`mean_loads` at floor 1: the mean of ``max(1, load(t) / capacity)``."""
    return mean_loads(start, end, host, weight, capacity, (1.0,))[0]


def cpu_part_slowdown(part, sharing, mean_busy, cores, sensitivity=0.0, met_compute=None):
    """A node's slowdown when ``part`` of it is CPU work (1 for compute), ``sharing`` is the
    mean of max(1, busy / cores) over it and ``mean_busy`` the mean of busy / cores: while
    its CPU work runs, its thread is one whole runnable thread among the others, so it
    meets ``met = mean_busy + (1 - part) / cores`` at least and slows by that load weighted
    by its CPU part. A transfer whose ``sensitivity`` k is larger also waits for a core at
    each of its steps while *computing* threads hold them: it slows by the extra
    ``(k - part) * (met_compute - 1)``, where ``met_compute`` is the load of the computing
    threads beside it plus its own (None: ``met``, every thread beside it counted as
    computing). Arrays or numbers."""
    met = np.maximum(sharing, mean_busy + (1.0 - part) / cores)
    met_c = met if met_compute is None else met_compute
    return (1.0 + part * (met - 1.0)
            + np.maximum(np.asarray(sensitivity) - part, 0.0) * (met_c - 1.0))


def transfer_cpu_slowdown(share: float, busy: float, cores: float) -> float:
    """One transfer's slowdown when ``busy`` threads' worth of work (its own ``share``
    included) runs on ``cores`` all the time: :func:`slowdown` for constant load."""
    return float(cpu_part_slowdown(share, max(1.0, busy / cores), busy / cores, cores))


def slowdown(start: np.ndarray, end: np.ndarray, pool: np.ndarray,
             cores: np.ndarray, share: np.ndarray | None = None,
             link: np.ndarray | None = None, host: np.ndarray | None = None,
             sensitivity: np.ndarray | None = None,
             transfer: np.ndarray | None = None) -> np.ndarray:
    """Per interval ``[start, end)``: :func:`cpu_part_slowdown` of ``min(share, 1)`` (and
    ``sensitivity``, default 0) under the :func:`mean_loads` of ``share`` (default 1) on
    its pool's cores (``pool``: per interval); the sensitivity weighs the load of the
    computing threads only: every interval but the ``transfer`` ones (a mask; None: all
    count as computing); for an interval with a ``link`` share (> 0), at least
    :func:`mean_load` of ``link`` on its host's one link (transfers side by side share the
    wire; ``host``: per interval, default ``pool``)."""
    share = np.ones(len(start)) if share is None else np.asarray(share, dtype=float)
    specs = [(share, 1.0), (share, 0.0)]
    if sensitivity is not None and transfer is not None:
        specs.append((np.where(transfer, 0.0, share), 0.0))  # the computing threads' load
    sharing, mean_busy, *busy_c = weighted_mean_loads(start, end, pool, cores, specs)
    met_compute = np.maximum(1.0, busy_c[0] + 1.0 / cores[pool]) if busy_c else None
    out = cpu_part_slowdown(np.minimum(share, 1.0), sharing, mean_busy, cores[pool],
                            0.0 if sensitivity is None else sensitivity, met_compute)
    if link is not None and (np.asarray(link) > 0).any():
        link = np.asarray(link, dtype=float)
        host = pool if host is None else host
        on_wire = mean_load(start, end, host, link, np.ones(int(host.max()) + 1))
        out = np.where(link > 0, np.maximum(out, on_wire), out)
    return out


def per_transfer(graph: Graph, value: Callable[[str, float], float | None] | None
                 ) -> np.ndarray:
    """``value(collective name, bytes)`` of every comm node (NaN elsewhere, and where the
    value is None: not measured), computed once per distinct name and size."""
    out = np.full(graph.n_nodes, np.nan)
    comm = np.flatnonzero(graph.kind == NodeKind.COMM)
    if value is None or not len(comm):
        return out
    cache: dict[tuple[int, int], float | None] = {}
    for v in comm:
        key = (int(graph.name[v]), int(graph.bytes[v]))
        if key not in cache:
            cache[key] = value(graph.names[key[0]], float(max(key[1], 0)))
        if cache[key] is not None:
            out[v] = max(float(cache[key]), 0.0)
    return out


def transfer_shares(graph: Graph, comm_model) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``share(v)`` of every node (see module doc), which of them were measured (comm
    transfers with a calibrated CPU time), and a note saying where they came from."""
    comm = graph.kind == NodeKind.COMM
    value = per_transfer(graph, comm_model.cpu_share if comm_model is not None else None)
    measured = ~np.isnan(value)
    share = np.where(measured, value, 1.0)
    if not comm.any():
        return share, measured, []
    if comm_model is None:
        return share, measured, [
            "core sharing: each comm transfer counted as a fully busy thread (no CPU times "
            "measured; 'tracekit calibrate' records them, pass --comm-model comm.json)"]
    if not measured[comm].all():
        return share, measured, [
            "core sharing: the calibration has no CPU times (written by an older tracekit): "
            "comm transfers counted as fully busy threads; calibrate again"]
    used = share[comm]
    return share, measured, [f"core sharing: comm transfers keep {used.min():.2f}-"
                             f"{used.max():.2f} of a core busy (CPU time / wall time, "
                             "calibrated)"]


def link_shares(graph: Graph, comm_model, host: np.ndarray | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """``link(v)``: the share of the host's link each comm transfer keeps busy (0 for
    other nodes and where not measured), and a note. The calibration's share is one
    collective's, which every participating rank on the host shows as a node of its own
    (same ``coll_id``): each of them carries its part, so one collective alone loads the
    link once, not once per rank (``host``: per node, its host)."""
    value = per_transfer(graph, comm_model.link_share if comm_model is not None else None)
    link = np.where(np.isnan(value), 0.0, np.minimum(value, 1.0))
    matched = np.flatnonzero((link > 0) & (graph.coll_id >= 0))
    if len(matched):
        where = host[matched] if host is not None else np.zeros(len(matched), dtype=np.int64)
        key = np.stack([graph.coll_id[matched], where], axis=1)
        _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        link[matched] /= counts[inv.reshape(-1)]
    comm = graph.kind == NodeKind.COMM
    if not comm.any() or comm_model is None:
        return link, []
    if np.isnan(value[comm]).any():
        return link, ["link sharing: not modelled (the calibration did not time transfers "
                      "side by side: gloo calibrations from this tracekit do)"]
    used = np.minimum(value[comm], 1.0)
    return link, [f"link sharing: a collective keeps {used.min():.2f}-{used.max():.2f} of the "
                  "link busy (two side by side, calibrated), shared by its ranks' nodes"]


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
                     share: np.ndarray | None = None, link: np.ndarray | None = None,
                     sensitivity: np.ndarray | None = None,
                     passes: int = 6) -> ContentionResult:
    """Re-time every node of a variant for the core sharing its own schedule produces.

    ``dur_ns``: durations as measured (including the baseline's contention) or as a
    what-if set them; ``base_slowdown``: the slowdown already inside each of them (the
    measured one for baseline nodes, the run's typical one for re-timed nodes).
    """
    base = np.asarray(dur_ns, dtype=float) / np.maximum(base_slowdown, 1.0)
    pool, host = hc.pool_of_rank[graph.rank], hc.host_of_rank[graph.rank]
    transfer = graph.kind == NodeKind.COMM

    def durations(f: np.ndarray) -> np.ndarray:
        return np.round(base * f).astype(np.int64)

    def measure(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        # the engine starts a collective when its transfer starts: start..end is busy
        return slowdown(start, end, pool, hc.cores, share, link, host, sensitivity, transfer)

    res = settle(state=np.maximum(np.asarray(base_slowdown, dtype=float), 1.0),
                 durations=durations, measure=measure, schedule=schedule, passes=passes,
                 what="contention")
    return ContentionResult(dur_ns=res.dur_ns, slowdown=res.state, passes=res.passes,
                            last_change=res.last_change)


class CoreSharing(InterferenceModel):
    """``--interference cores``: every thread of a host shares its cores, comm and compute
    alike (the default for CPU-only runs; see module doc)."""

    name = "cores"

    def __init__(self, run, graph: Graph, start_ns: np.ndarray, end_ns: np.ndarray, *,
                 comm_model=None) -> None:
        """Hosts and cores from the run's manifest; the slowdown inside every measured
        duration is read from the baseline *replay* ``start_ns``/``end_ns`` (as the factor
        model's overlap is), so a variant that changes nothing stays exactly the
        baseline, whatever the replay moved by a few microseconds. ``comm_model``: a
        calibrated :class:`~replay.cost_model.CommCostModel` whose ``cpu_share`` and
        ``link_share`` weigh each transfer; None: every transfer a fully busy thread,
        the link not shared."""
        self.hosts = host_cores(run, graph)
        self.comm_model = comm_model
        self.base_share, self.base_measured, share_notes = transfer_shares(graph, comm_model)
        link, link_notes = link_shares(graph, comm_model, self.hosts.host_of_rank[graph.rank])
        self.base_dur = graph.dur_ns.astype(float)
        self.notes = [*self.hosts.notes, *share_notes, *link_notes]
        self.base_slowdown = slowdown(start_ns, end_ns, self.hosts.pool_of_rank[graph.rank],
                                      self.hosts.cores, self.base_share, link,
                                      self.hosts.host_of_rank[graph.rank],
                                      self.sensitivities(graph), graph.kind == NodeKind.COMM)

    def variant_shares(self, graph: Graph, origin: np.ndarray) -> np.ndarray:
        """``share(v)`` in a variant: a transfer kept from the run does the same CPU work
        in the time the variant gives it (``bandwidth=2x`` halves it: twice the share);
        one a what-if created has the calibrated share at its size. Transfers without a
        measured share stay fully busy threads (1), whatever their time."""
        share = transfer_shares(graph, self.comm_model)[0]
        kept = np.flatnonzero((graph.kind == NodeKind.COMM) & (origin >= 0))
        kept = kept[self.base_measured[origin[kept]]]
        o = origin[kept]
        share[kept] = self.base_share[o] * self.base_dur[o] / np.maximum(
            graph.dur_ns[kept].astype(float), 1.0)
        return share

    def sensitivities(self, graph: Graph) -> np.ndarray | None:
        """Per node, the calibrated sensitivity ``k`` of a transfer at its size (0 for
        other nodes, and where the calibration did not probe it); None without a model."""
        if self.comm_model is None:
            return None
        k = per_transfer(graph, lambda _name, nbytes: self.comm_model.contention_sensitivity(
            nbytes))
        return np.where(np.isnan(k), 0.0, k)

    def describe(self) -> str:
        return self.hosts.describe()

    def comm_contention(self, graph: Graph) -> np.ndarray:
        """The core and link sharing read from the baseline replay."""
        return self.base_slowdown

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
                               schedule=schedule, share=self.variant_shares(graph, origin),
                               link=link_shares(graph, self.comm_model,
                                                self.hosts.host_of_rank[graph.rank])[0],
                               sensitivity=self.sensitivities(graph))
        return Retimed(dur_ns=res.dur_ns,
                       notes=self.settle_notes("core sharing", res.last_change))
