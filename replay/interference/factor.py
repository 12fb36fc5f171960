"""Interference: how much compute slows down while communication runs on the same rank.

On GPUs, NCCL kernels take SMs and memory bandwidth from compute kernels (Echo saw up to
8x kernel slowdowns); on CPUs, gloo's worker threads take cores from the training thread
(on a 2-core machine a backward matmul took 1.2 ms alone and 5.6 ms beside a gloo
all-reduce). A what-if that changes what overlaps must re-apply this, so the factor is
fitted from the run itself.

Model: while comm runs on its rank, an op progresses ``factor`` times slower (processor
sharing). An op of interference-free duration ``base`` whose span overlaps comm for a
fraction ``x`` takes ``base / (1 - x * (1 - 1/factor))``: ``base`` with no overlap,
``factor * base`` when fully overlapped.

Fit (:func:`fit_interference_graph`, on the graph's own nodes as measured: the units the
what-ifs re-time): for every compute node, the fraction ``x`` of its span that overlaps a
comm transfer of the same rank. Per op name and rank, instances with no overlap are
"alone" (their median is ``base``), those overlapping for at least half their span are
"beside comm"; each of those gives ``factor = 1 / (1 - (1 - base/d) / x)`` (the model
solved for the factor; ``d / base`` when fully overlapped), and the op's ratio is their
median. The factor is the median of the ops' ratios weighted by time spent beside comm,
per rank and over all ranks (:func:`fit_from_instances`).

Before (compute instances of rank 0)::

    rank  name     dur_ns   frac
    0     aten::mm 1200000  0.0    <- alone
    0     aten::mm 5600000  1.0    <- beside comm

After: ``InterferenceFit(factor=4.67, per_rank={0: 4.67}, ...)`` (given at least
:data:`MIN_SAMPLES` instances of each kind).

Apply (:func:`apply_interference`): the baseline durations are turned back into
interference-free ones with the baseline's overlap, then the variant is scheduled and its
compute durations re-inflated from the variant's own overlap, for ``passes`` rounds (the
overlap averaged with the previous round's, to damp oscillation), so the result is close
to a fixed point (:func:`replay.interference.settle.settle`);
:class:`InterferenceResult` says how far from one it stopped. :class:`FactorInterference`
is this model behind the :class:`~replay.interference.model.InterferenceModel` interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from replay.interference.model import InterferenceModel, Retimed, Scheduler, from_origin
from replay.interference.settle import settle
from tracekit.core.intervals import covered_length, union
from tracekit.graph.model import Graph, NodeKind
from tracekit.log import get_logger

log = get_logger(__name__)

#: instances needed on each side (alone / beside) before an op's ratio counts
MIN_SAMPLES = 3
#: an instance is "beside comm" when at least this fraction of it overlaps comm
BESIDE_FRACTION = 0.5


@dataclass(frozen=True, kw_only=True)
class InterferenceFit:
    """The fitted slowdown of compute beside communication."""

    #: overall factor: time-weighted median of per-op ratios over every rank (1.0: none)
    factor: float
    #: the same per rank (ranks without enough samples are absent)
    per_rank: dict[int, float]
    #: one row per (rank, op name) with enough samples: rank, name, n_alone, n_beside,
    #: alone_ns, beside_ns (medians), ratio (the op's factor), weight_ns (time beside comm)
    per_op: pd.DataFrame
    #: instances used (alone + beside, every op that counted)
    n_samples: int
    notes: list[str] = field(default_factory=list)

    @property
    def n_ops(self) -> int:
        return len(self.per_op)

    def describe(self) -> str:
        ranks = ", ".join(f"rank {r}: {f:.2f}x" for r, f in sorted(self.per_rank.items()))
        return (f"interference: compute runs {self.factor:.2f}x slower beside communication "
                f"({self.n_ops} ops, {self.n_samples} instances; {ranks or 'no rank fitted'})")


NO_INTERFERENCE = InterferenceFit(factor=1.0, per_rank={}, per_op=pd.DataFrame(
    columns=["rank", "name", "n_alone", "n_beside", "alone_ns", "beside_ns", "ratio",
             "weight_ns"]), n_samples=0, notes=["interference not applied"])


# --------------------------------------------------------------------------- geometry


def overlap_fraction(start: np.ndarray, end: np.ndarray, rank: np.ndarray,
                     comm_start: np.ndarray, comm_end: np.ndarray,
                     comm_rank: np.ndarray) -> np.ndarray:
    """Fraction of each ``[start, end)`` overlapped by comm intervals of the same rank."""
    frac = np.zeros(len(start), dtype=float)
    dur = np.maximum(np.asarray(end) - np.asarray(start), 1)
    for r in np.unique(rank):
        sel = rank == r
        c = comm_rank == r
        ms, me = union(comm_start[c], comm_end[c])
        frac[sel] = covered_length(start[sel], end[sel], ms, me) / dur[sel]
    return np.clip(frac, 0.0, 1.0)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    v, w = np.asarray(values, float)[order], np.asarray(weights, float)[order]
    cum = np.cumsum(w)
    return float(v[np.searchsorted(cum, cum[-1] / 2.0)])


# --------------------------------------------------------------------------- fit


def fit_from_instances(ops: pd.DataFrame, *, min_samples: int = MIN_SAMPLES,
                       beside_fraction: float = BESIDE_FRACTION) -> InterferenceFit:
    """The fit from op instances with columns ``rank, name, dur_ns, frac`` (compute ops
    that do not nest, e.g. :func:`compute_events` or a graph's compute nodes)."""
    notes: list[str] = []
    if ops.empty:
        return InterferenceFit(factor=1.0, per_rank={}, per_op=NO_INTERFERENCE.per_op,
                               n_samples=0,
                               notes=["no compute overlapped communication: factor 1.0"])
    alone = ops["frac"].to_numpy() <= 0.0
    beside = ops["frac"].to_numpy() >= beside_fraction
    a_stats = ops[alone].groupby(["rank", "name"])["dur_ns"].agg(["median", "size"])
    rows = []
    for (rank, name), b in ops[beside].groupby(["rank", "name"]):
        if (rank, name) not in a_stats.index:
            continue
        base, n_a = a_stats.loc[(rank, name)]
        if n_a < min_samples or len(b) < min_samples or base <= 0:
            continue
        d, x = b["dur_ns"].to_numpy(dtype=float), b["frac"].to_numpy()
        per_instance = solve_factor(base, d, x)
        rows.append({"rank": int(rank), "name": name, "n_alone": int(n_a), "n_beside": len(b),
                     "alone_ns": float(base), "beside_ns": float(np.median(d)),
                     "ratio": float(np.median(per_instance)), "weight_ns": float(d.sum())})
    per_op = pd.DataFrame(rows, columns=NO_INTERFERENCE.per_op.columns)
    basis = per_op
    if per_op.empty:
        return InterferenceFit(
            factor=1.0, per_rank={}, per_op=per_op, n_samples=0,
            notes=[f"too few op instances both alone and beside comm (need {min_samples} "
                   "of each per op): factor 1.0 assumed; record more steps"])
    per_rank = {int(r): _weighted_median(g["ratio"].to_numpy(), g["weight_ns"].to_numpy())
                for r, g in basis.groupby("rank")}
    factor = _weighted_median(basis["ratio"].to_numpy(), basis["weight_ns"].to_numpy())
    n = int((basis["n_alone"] + basis["n_beside"]).sum())
    if factor < 1.0:
        notes.append(f"fitted factor {factor:.2f} < 1 (noise, or ops beside comm are "
                     "smaller): applied as 1.0")
    fit = InterferenceFit(factor=factor, per_rank=per_rank, per_op=per_op, n_samples=n,
                          notes=notes)
    log.info("%s", fit.describe())
    return fit


# --------------------------------------------------------------------------- apply


#: the largest factor one instance can imply (an op far longer than its overlap explains)
MAX_FACTOR = 50.0


def solve_factor(base_ns: float, dur_ns: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """The factor that makes ``inflate(base, frac) == dur``, per instance (capped at
    :data:`MAX_FACTOR`; below 1 when the instance was faster than ``base``)."""
    slow = (1.0 - base_ns / np.asarray(dur_ns, float)) / np.maximum(np.asarray(frac), 1e-9)
    return 1.0 / np.maximum(1.0 - slow, 1.0 / MAX_FACTOR)


def inflate(base_ns: np.ndarray, frac: np.ndarray, factor: np.ndarray | float) -> np.ndarray:
    """Interference-free duration -> duration when a fraction ``frac`` of the span
    overlaps comm: ``base / (1 - frac * (1 - 1/factor))`` (factors below 1 count as 1)."""
    f = np.maximum(np.asarray(factor, dtype=float), 1.0)
    return np.asarray(base_ns, float) / (1.0 - np.asarray(frac, float) * (1.0 - 1.0 / f))


def deflate(dur_ns: np.ndarray, frac: np.ndarray, factor: np.ndarray | float) -> np.ndarray:
    """Measured duration with overlap fraction ``frac`` -> interference-free duration."""
    f = np.maximum(np.asarray(factor, dtype=float), 1.0)
    return np.asarray(dur_ns, float) * (1.0 - np.asarray(frac, float) * (1.0 - 1.0 / f))


@dataclass(frozen=True, kw_only=True)
class InterferenceResult:
    """Durations and schedule after applying interference to a variant."""

    dur_ns: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    #: final overlap fraction of every node (0 for non-compute nodes)
    frac: np.ndarray
    passes: int
    #: relative change of the makespan in the last pass (0: a fixed point)
    last_change: float


def apply_interference(
    *,
    dur_ns: np.ndarray,
    rank: np.ndarray,
    is_compute: np.ndarray,
    is_comm: np.ndarray,
    factor: np.ndarray | float,
    baseline_frac: np.ndarray,
    schedule: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    passes: int = 4,
) -> InterferenceResult:
    """Re-time a variant's compute nodes for the overlap the variant itself produces.

    Args:
        dur_ns: every node's duration as measured (compute nodes include the baseline's
            interference) or as a what-if set it.
        rank, is_compute, is_comm: per node.
        factor: slowdown beside comm, one value or one per node (see
            :meth:`InterferenceFit.factor_for`); values below 1 count as 1.
        baseline_frac: each compute node's overlap fraction in the measured run (used to
            remove the baseline's interference; 0 for nodes a what-if created).
        schedule: ``durations -> (start_ns, end_ns)`` of the variant's graph (the replay
            engine).
        passes: schedule/re-inflate rounds; the overlap is averaged with the previous
            round's (damping) so alternating schedules settle.
    """
    f_nodes = np.broadcast_to(np.asarray(factor, dtype=float), np.shape(dur_ns))
    base = np.asarray(dur_ns, dtype=float).copy()
    base[is_compute] = deflate(base[is_compute], baseline_frac[is_compute],
                               f_nodes[is_compute])
    comp, comm = np.flatnonzero(is_compute), np.flatnonzero(is_comm)

    def durations(frac: np.ndarray) -> np.ndarray:
        cur = base.copy()
        cur[is_compute] = inflate(base[is_compute], frac[is_compute], f_nodes[is_compute])
        return np.round(cur).astype(np.int64)

    def measure(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        new = np.zeros(len(base))
        new[comp] = overlap_fraction(start[comp], end[comp], rank[comp], start[comm],
                                     end[comm], rank[comm])
        return new

    res = settle(state=np.where(is_compute, baseline_frac, 0.0), durations=durations,
                 measure=measure, schedule=schedule, passes=passes)
    return InterferenceResult(dur_ns=res.dur_ns, start_ns=res.start_ns, end_ns=res.end_ns,
                              frac=res.state, passes=res.passes, last_change=res.last_change)


def fit_interference_graph(graph, *, min_samples: int = MIN_SAMPLES,
                           beside_fraction: float = BESIDE_FRACTION) -> InterferenceFit:
    """The fit on a graph's own nodes, as measured: compute nodes (``NodeKind.COMPUTE``)
    against the transfer part of the comm nodes of their rank (``start + wait`` to
    ``start + wait + dur``; on GPU lanes the waiting part too, since a waiting NCCL
    kernel occupies the device). The same units the what-ifs re-time, so this is the
    factor :func:`apply_interference` should use."""
    comp = np.flatnonzero(graph.kind == NodeKind.COMPUTE)
    comm = np.flatnonzero(graph.kind == NodeKind.COMM)
    on_gpu = np.array([ln.kind == "gpu" for ln in graph.lanes] or [False])[graph.lane[comm]]
    c_start = graph.start_ns[comm] + np.where(on_gpu, 0, graph.wait_ns[comm])
    c_end = graph.measured_end_ns[comm]
    start = graph.start_ns[comp]
    end = start + graph.dur_ns[comp]
    frac = overlap_fraction(start, end, graph.rank[comp], c_start, c_end, graph.rank[comm])
    names = np.array(graph.names or [""], dtype=object)
    ops = pd.DataFrame({"rank": graph.rank[comp], "name": names[graph.name[comp]],
                        "dur_ns": graph.dur_ns[comp], "frac": frac})
    return fit_from_instances(ops, min_samples=min_samples, beside_fraction=beside_fraction)


class FactorInterference(InterferenceModel):
    """``--interference factor``: compute slows by the factor fitted on the run while comm
    of its rank runs (the default for runs with GPU lanes)."""

    name = "factor"

    def __init__(self, graph: Graph, start_ns: np.ndarray, end_ns: np.ndarray) -> None:
        """Fit on ``graph`` as measured; ``start_ns``/``end_ns``: its baseline schedule,
        from which each compute node's overlap with comm in the baseline is read."""
        self.fit = fit_interference_graph(graph)
        self.notes = []
        comp = np.flatnonzero(graph.kind == NodeKind.COMPUTE)
        comm = np.flatnonzero(graph.kind == NodeKind.COMM)
        self.base_frac = np.zeros(graph.n_nodes)
        self.base_frac[comp] = overlap_fraction(start_ns[comp], end_ns[comp], graph.rank[comp],
                                                start_ns[comm], end_ns[comm], graph.rank[comm])

    def describe(self) -> str:
        return self.fit.describe()

    def retime(self, graph: Graph, origin: np.ndarray, schedule: Scheduler) -> Retimed:
        if self.fit.factor <= 1.0:
            return Retimed(dur_ns=graph.dur_ns)
        res = apply_interference(
            dur_ns=graph.dur_ns, rank=graph.rank, is_compute=graph.kind == NodeKind.COMPUTE,
            is_comm=graph.kind == NodeKind.COMM, factor=self.fit.factor,
            baseline_frac=from_origin(self.base_frac, origin, 0.0), schedule=schedule)
        return Retimed(dur_ns=res.dur_ns,
                       notes=self.settle_notes("interference", res.last_change))
