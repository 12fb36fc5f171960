"""Collective cost model: time(collective, bytes, group size), fitted from the run itself.

Every collective is modeled the way NCCL's own tuner and nccl-tests think about it::

    time = steps(collective, n) * alpha + moved_bytes(collective, bytes, n) / beta

``alpha`` is the latency of one algorithm step, ``beta`` the bus bandwidth (bytes a rank
pushes over its link per second, nccl-tests' "busbw"), ``n`` the group size and
``bytes`` the full (unsharded) buffer (``comm_bytes`` of the event table). Step structure
(:func:`comm_volume`):

==============================  ===================  ==========================
collective                      steps                moved bytes
==============================  ===================  ==========================
all_reduce, ring                2(n-1)               2(n-1)/n * bytes
all_reduce, tree                2*ceil(log2 n)       2(n-1)/n * bytes
reduce_scatter, all_gather      n-1                  (n-1)/n * bytes
all_to_all, gather, scatter     n-1                  (n-1)/n * bytes
broadcast, reduce (ring/tree)   n-1 / ceil(log2 n)   bytes
send, recv, send_recv           1                    bytes
barrier                         ceil(log2 n)         0
==============================  ===================  ==========================

Fitting: one ``(alpha, beta)`` per process group and collective type, by least squares
on the per-size medians of the run's *transfer* times (the waiting for the slowest peer
removed: a graph's comm ``dur_ns``, or, from the event table, the duration seen by the
rank that arrived last). Because steps and moved bytes are explicit, one fit re-times
the collective at any size and any group size (``workers=N``), and a type the run never
issued is derived from another type's fit by formula (stated in :attr:`CollectiveFit.source`).

Before (samples, e.g. from :func:`comm_samples`)::

    pg collective  nbytes   group_size transfer_ns
    0  all_reduce  1050624  2          2412000
    0  all_reduce  26214400 2          31877000

After (``fit_cost_model(samples).fits[("0", "all_reduce")]``)::

    CollectiveFit(collective='all_reduce', pg='0', alpha_ns=..., beta_bytes_per_s=...,
                  source='fitted', n_points=2, n_sizes=2, r2=nan, ...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import pandas as pd

from tracekit.core.collectives import normalize_collective
from tracekit.core.schema import Collective
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)


def interp_log_size(points: list[tuple[float, float]], nbytes: float) -> float | None:
    """``(bytes, value)`` points interpolated at ``nbytes``, linear in log size (the
    nearest end's value outside them); None without points. A calibration's per-size
    figures (CPU share, link share, contention sensitivity) are read this way."""
    pts = sorted((b, v) for b, v in points if b > 0)
    if not pts:
        return None
    xs = np.log2([b for b, _ in pts])
    return float(np.interp(math.log2(max(nbytes, 1.0)), xs, [v for _, v in pts]))


#: Per-step latency assumed when a run shows a collective at one size only and nothing
#: else in the run separates latency from bandwidth. gloo: ``tracekit calibrate`` on the
#: project's 2-core machine (torch 2.13, 2 ranks, loopback TCP) measured a 1 KB
#: all-reduce (2 ring steps) at 0.6 to 0.8 ms in three runs, i.e. ~300 us per step; nccl:
#: the order of NCCL's own tuning constants for one ring step on NVLink. Always named in
#: the notes when used.
DEFAULT_STEP_LATENCY_NS = {"gloo": 300_000.0, "nccl": 8_000.0, "": 20_000.0}

#: The collective other types are derived from, in order of preference.
_REFERENCE_ORDER = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast")

SAMPLE_COLUMNS = ("pg", "collective", "nbytes", "group_size", "transfer_ns")


class Algorithm(str, Enum):
    """Which step structure all-reduce / broadcast / reduce use."""

    RING = "ring"
    TREE = "tree"
    #: the faster of ring and tree for each call (what NCCL's tuner aims for)
    AUTO = "auto"


@dataclass(frozen=True)
class CommVolume:
    """Latency steps and bytes one rank moves for one collective call."""

    steps: float
    moved_bytes: float


def comm_volume(collective: str, nbytes: float, group_size: int,
                algorithm: Algorithm | str = Algorithm.RING) -> CommVolume:
    """Steps and moved bytes of a collective on ``group_size`` ranks (see module table).

    ``algorithm`` ``'auto'`` is resolved by :meth:`CommCostModel.terms`; here it means ring.
    """
    n = int(group_size)
    if n <= 1:
        return CommVolume(0.0, 0.0)
    coll = collective if collective in _ALL_COLLECTIVES else normalize_collective(collective)
    tree = Algorithm(algorithm) is Algorithm.TREE
    log2n = math.ceil(math.log2(n))
    b = float(nbytes)
    if coll == Collective.ALL_REDUCE.value:
        steps = 2 * log2n if tree else 2 * (n - 1)
        return CommVolume(float(steps), 2.0 * (n - 1) / n * b)
    if coll in (Collective.REDUCE_SCATTER.value, Collective.ALL_GATHER.value,
                Collective.ALL_TO_ALL.value, Collective.GATHER.value, Collective.SCATTER.value):
        return CommVolume(float(n - 1), (n - 1) / n * b)
    if coll in (Collective.BROADCAST.value, Collective.REDUCE.value):
        return CommVolume(float(log2n if tree else n - 1), b)
    if coll in (Collective.SEND.value, Collective.RECV.value, Collective.SEND_RECV.value):
        return CommVolume(1.0, b)
    if coll == Collective.BARRIER.value:
        return CommVolume(float(log2n), 0.0)
    raise TracekitError(
        f"no cost formula for collective {collective!r}; known: "
        + ", ".join(sorted(_ALL_COLLECTIVES))
    )


_ALL_COLLECTIVES = frozenset(c.value for c in Collective)
_HAS_TREE = frozenset({"all_reduce", "broadcast", "reduce"})


@dataclass(frozen=True, kw_only=True)
class CostTerms:
    """One collective call's predicted time, split into its latency and bandwidth parts."""

    latency_ns: float
    bandwidth_ns: float
    steps: float
    moved_bytes: float
    #: the fit used: 'fitted', 'calibrated', 'extrapolated from all_reduce by formula', ...
    source: str
    algorithm: str = "ring"

    @property
    def total_ns(self) -> float:
        return self.latency_ns + self.bandwidth_ns


@dataclass(frozen=True, kw_only=True)
class CollectiveFit:
    """``alpha`` / ``beta`` for one collective type of one process group, with its quality."""

    collective: str
    pg: str
    #: latency of one algorithm step, ns
    alpha_ns: float
    #: bus bandwidth, bytes per second (``inf``: time did not grow with size)
    beta_bytes_per_s: float
    #: 'fitted', 'one size: ...', 'extrapolated from X by formula', 'calibrated', ...
    source: str
    n_points: int = 0
    n_sizes: int = 0
    group_sizes: tuple[int, ...] = ()
    size_range: tuple[int, int] = (0, 0)
    #: R^2 of the line over all points (nan with fewer than 2 sizes)
    r2: float = float("nan")
    #: median and 90th percentile of |measured - predicted| / predicted over all points
    median_rel_residual: float = float("nan")
    p90_rel_residual: float = float("nan")
    #: what was assumed, when something was
    assumption: str = ""

    def terms(self, collective: str, nbytes: float, group_size: int,
              algorithm: Algorithm | str = Algorithm.RING) -> CostTerms:
        vol = comm_volume(collective, nbytes, group_size, algorithm)
        bw = vol.moved_bytes / self.beta_bytes_per_s * 1e9 if vol.moved_bytes else 0.0
        return CostTerms(latency_ns=vol.steps * self.alpha_ns, bandwidth_ns=bw,
                         steps=vol.steps, moved_bytes=vol.moved_bytes, source=self.source,
                         algorithm=Algorithm(algorithm).value)

    def describe(self) -> str:
        """One line for the CLI, e.g. ``all_reduce [pg 0]: 61.2 us/step, 1.31 GB/s ...``."""
        bw = ("inf" if math.isinf(self.beta_bytes_per_s)
              else f"{self.beta_bytes_per_s / 1e9:.3g} GB/s")
        pg = f" [pg {self.pg}]" if self.pg else ""
        parts = [f"{self.collective}{pg}: latency {self.alpha_ns / 1e3:.3g} us/step, "
                 f"bus bandwidth {bw} ({self.source})"]
        if self.n_points:
            q = f"{self.n_points} points, {self.n_sizes} sizes"
            if not math.isnan(self.r2):
                q += f", R^2 {self.r2:.3f}"
            if not math.isnan(self.median_rel_residual):
                q += f", median residual {self.median_rel_residual * 100:.0f}%"
            parts.append(q)
        if self.assumption:
            parts.append(self.assumption)
        return "; ".join(parts)


class CommCostModel:
    """Base of every collective cost model (fitted from a run, or from a calibration
    file): subclasses provide :meth:`fit_for`; everything else is shared."""

    algorithm: Algorithm = Algorithm.RING

    def fit_for(self, collective: str, nbytes: float, pg: str = "") -> CollectiveFit:
        raise NotImplementedError

    @property
    def notes(self) -> list[str]:
        """Lines worth printing: every fit with its quality and assumptions."""
        return []

    def terms(self, collective: str, nbytes: float, group_size: int, *, pg: str = "") -> CostTerms:
        """The predicted time of one call, split into latency and bandwidth parts."""
        coll = collective if collective in _ALL_COLLECTIVES else normalize_collective(collective)
        fit = self.fit_for(coll, nbytes, pg)
        if self.algorithm is Algorithm.AUTO and coll in _HAS_TREE:
            ring = fit.terms(coll, nbytes, group_size, Algorithm.RING)
            tree = fit.terms(coll, nbytes, group_size, Algorithm.TREE)
            return tree if tree.total_ns < ring.total_ns else ring
        algo = Algorithm.RING if self.algorithm is Algorithm.AUTO else self.algorithm
        return fit.terms(coll, nbytes, group_size, algo)

    def cpu_share(self, collective: str, nbytes: float) -> float | None:
        """The share of a core one such transfer keeps busy while it runs alone (CPU time
        over wall time, measured by ``tracekit calibrate``), or None when not measured
        (a model fitted from a trace: traces hold wall times only)."""
        return None

    def link_share(self, collective: str, nbytes: float) -> float | None:
        """The share of the link one such transfer keeps busy running alone (0..1: how
        much transfers side by side slow each other, measured by ``tracekit calibrate``
        on gloo), or None when not measured."""
        return None

    def issue_ns(self, collective: str, nbytes: float) -> float | None:
        """The calling thread's time to issue one such call (``tracekit calibrate``)."""
        return None

    def fsdp_hook_ns(self) -> dict[str, float] | None:
        """FSDP2's host time per unit and step, ``{"forward": ns, "backward": ns}``."""
        return None

    def chain_ratio(self, collective: str, nbytes: float) -> float | None:
        """One call's cost to a caller that blocks on each, over :meth:`time_ns`
        (``tracekit calibrate``; None: not measured)."""
        return None

    def last_rank_ratio(self, collective: str, nbytes: float) -> float | None:
        """How much longer than :meth:`time_ns` a call takes until its last rank has the
        result (``tracekit calibrate`` on one host; None: not measured)."""
        return None

    def link_burst_ns(self) -> float:
        """The transfer time an idle link's token bucket holds when full (ns; 0: a link
        without one, or not measured): :mod:`replay.link_credit`."""
        return 0.0

    @property
    def link_notes(self) -> list[str]:
        """What the calibration measured of the link and the cores around the curves (its
        burst credit, the contention probe): lines every what-if shares ([] here)."""
        return []

    def contention_sensitivity(self, nbytes: float) -> float | None:
        """How hard a transfer of ``nbytes`` slows beside busy cores, as the weight of its
        share of the load it meets (:mod:`replay.contention_probe`); None when not
        measured."""
        return None

    def time_ns(self, collective: str, nbytes: float, group_size: int, *, pg: str = "") -> float:
        """Predicted transfer time of one call, ns (no waiting for peers)."""
        return self.terms(collective, nbytes, group_size, pg=pg).total_ns


@dataclass(kw_only=True)
class FittedCostModel(CommCostModel):
    """Cost model fitted from a run's own collectives (:func:`fit_cost_model`)."""

    #: (pg, collective) -> fit, for every type the run issued
    fits: dict[tuple[str, str], CollectiveFit]
    algorithm: Algorithm = Algorithm.RING
    backend: str = ""
    #: statements about the samples (dropped events, single-rank timing, ...)
    sample_notes: list[str] = field(default_factory=list)

    def fit_for(self, collective: str, nbytes: float = 0, pg: str = "") -> CollectiveFit:
        if (pg, collective) in self.fits:
            return self.fits[(pg, collective)]
        same_type = [f for (g, c), f in self.fits.items() if c == collective]
        if same_type:
            return max(same_type, key=lambda f: f.n_points)
        ref = self._reference(pg)
        return replace(ref, collective=collective,
                       source=f"extrapolated from {ref.collective} by formula",
                       n_points=0, r2=float("nan"), median_rel_residual=float("nan"),
                       p90_rel_residual=float("nan"), assumption="")

    def _reference(self, pg: str) -> CollectiveFit:
        if not self.fits:
            raise TracekitError(
                "the run has no collectives with known sizes to fit a cost model from; "
                "measure them with 'tracekit calibrate' and pass --comm-model comm.json"
            )
        for pgs in ([pg], sorted({g for g, _ in self.fits})):
            for coll in _REFERENCE_ORDER:
                for g in pgs:
                    if (g, coll) in self.fits:
                        return self.fits[(g, coll)]
        return max(self.fits.values(), key=lambda f: f.n_points)

    @property
    def notes(self) -> list[str]:
        return [f.describe() for f in self.fits.values()] + list(self.sample_notes)


# --------------------------------------------------------------------------- samples


def _group_size_of(row_group_size: pd.Series, pg_ranks: pd.Series, default: int) -> np.ndarray:
    gs = row_group_size.to_numpy(dtype=np.int64).copy()
    missing = gs <= 0
    if missing.any():
        counted = pg_ranks[missing].astype(str).map(
            lambda s: len([x for x in s.strip("[]() ").split(",") if x.strip()]) if s else 0)
        gs[missing] = np.where(counted.to_numpy() > 0, counted.to_numpy(), default)
    return gs


def comm_samples(events: pd.DataFrame, *, world_size: int | None = None) -> pd.DataFrame:
    """Transfer-time samples from an event table, one row per collective instance.

    Instances are matched across ranks by process group, collective, size and step, in
    start order (gloo and old traces carry no sequence numbers; matching by size as well
    keeps two gloo worker threads that pick up work out of order from pairing different
    buckets). An instance's transfer time is the duration seen by the rank that started
    it last: that rank waited for no one.

    Before (``kind == 'comm'`` rows of two ranks)::

        rank collective comm_bytes step ts_ns      dur_ns
        0    all_reduce 526336     2    1000000    9000000
        1    all_reduce 526336     2    3000000    7000000

    After::

        pg collective nbytes group_size transfer_ns wait_ns step n_ranks
        "" all_reduce 526336 2          7000000     2000000 2    2

    Returns a DataFrame with :data:`SAMPLE_COLUMNS` plus ``wait_ns`` (the longest wait of
    the other ranks), ``step`` and ``n_ranks``; ``attrs['notes']`` says what was dropped.
    """
    notes: list[str] = []
    comm = events[(events["kind"] == "comm") & (events["collective"] != "")]
    if comm.empty:
        out = pd.DataFrame({c: [] for c in (*SAMPLE_COLUMNS, "wait_ns", "step", "n_ranks")})
        out.attrs["notes"] = ["the run has no collective transfers (no comm events)"]
        return out
    unknown = int((comm["comm_bytes"] <= 0).sum())
    if unknown:
        notes.append(f"{unknown} comm events have no size and were left out of the fit")
    comm = comm[comm["comm_bytes"] > 0]
    n_world = int(world_size or events["rank"].nunique())
    df = pd.DataFrame({
        "rank": comm["rank"].to_numpy(),
        "pg": comm["pg_name"].astype(str).to_numpy(),
        "collective": comm["collective"].astype(str).to_numpy(),
        "nbytes": comm["comm_bytes"].to_numpy(dtype=np.int64),
        "step": comm["step"].to_numpy(),
        "ts_ns": comm["ts_ns"].to_numpy(),
        "dur_ns": comm["dur_ns"].to_numpy(),
        "group_size": _group_size_of(comm["group_size"], comm["pg_ranks"], n_world),
    }).sort_values(["rank", "ts_ns"], kind="stable")
    key = ["pg", "collective", "nbytes", "step"]
    df["k"] = df.groupby(["rank", *key], sort=False).cumcount()
    ranks_in_pg = df.groupby("pg")["rank"].nunique()
    g = df.groupby([*key, "k"], sort=False)
    last = df.loc[g["ts_ns"].idxmax()].set_index([*key, "k"])
    inst = pd.DataFrame({
        "n_ranks": g["rank"].nunique(),
        "transfer_ns": last["dur_ns"],
        "max_dur": g["dur_ns"].max(),
        "group_size": g["group_size"].max(),
    }).reset_index()
    complete = inst["n_ranks"].to_numpy() == inst["pg"].map(ranks_in_pg).to_numpy()
    if (~complete).any():
        notes.append(f"{int((~complete).sum())} collective instances were not seen on every "
                     "rank of their group and were left out of the fit")
    inst = inst[complete]
    if len(ranks_in_pg) and int(ranks_in_pg.max()) < 2:
        notes.append("only one rank's trace: transfer times include waiting for peers, so "
                     "the fitted costs are upper bounds")
    out = pd.DataFrame({
        "pg": inst["pg"].to_numpy(),
        "collective": inst["collective"].to_numpy(),
        "nbytes": inst["nbytes"].to_numpy(dtype=np.int64),
        "group_size": inst["group_size"].to_numpy(dtype=np.int64),
        "transfer_ns": inst["transfer_ns"].to_numpy(dtype=np.int64),
        "wait_ns": (inst["max_dur"] - inst["transfer_ns"]).to_numpy(dtype=np.int64),
        "step": inst["step"].to_numpy(),
        "n_ranks": inst["n_ranks"].to_numpy(),
    })
    out.attrs["notes"] = notes
    return out


def comm_samples_from_graph(graph, events: pd.DataFrame | None = None) -> pd.DataFrame:
    """Transfer-time samples from a graph's comm nodes (``dur_ns`` is the transfer only),
    one row per collective instance (``coll_id``); the median over participants.

    ``events`` (the run's event table) supplies each node's process group and collective
    type through ``event_row``; without it the type comes from the node name and the
    group is ''.
    """
    from tracekit.graph.model import NodeKind

    sel = np.flatnonzero((graph.kind == NodeKind.COMM) & (graph.coll_id >= 0)
                         & (graph.bytes > 0))
    names = [graph.names[int(i)] for i in graph.name[sel]]
    coll = [normalize_collective(n) for n in names]
    pg = [""] * len(sel)
    recorded_size = np.full(len(sel), -1, dtype=np.int64)
    if events is not None and len(sel):
        rows = graph.event_row[sel]
        ok = rows >= 0
        ev = events.iloc[rows[ok]]
        ev_coll = ev["collective"].astype(str).to_numpy()
        ev_pg = ev["pg_name"].astype(str).to_numpy()
        recorded_size[ok] = ev["group_size"].to_numpy()
        for j, i in enumerate(np.flatnonzero(ok)):
            coll[i] = ev_coll[j] or coll[i]
            pg[i] = ev_pg[j]
    df = pd.DataFrame({
        "coll_id": graph.coll_id[sel], "pg": pg, "collective": coll,
        "nbytes": graph.bytes[sel], "dur": graph.dur_ns[sel], "step": graph.step[sel],
        "recorded_size": recorded_size,
    })
    df = df[df["collective"] != ""]
    g = df.groupby("coll_id", sort=True)
    # the group size the trace recorded, else the participants the graph matched
    size = np.where(g["recorded_size"].max() > 0, g["recorded_size"].max(), g.size())
    out = pd.DataFrame({
        "pg": g["pg"].first(), "collective": g["collective"].first(),
        "nbytes": g["nbytes"].max().astype(np.int64), "group_size": size.astype(np.int64),
        "transfer_ns": g["dur"].median().astype(np.int64), "step": g["step"].first(),
    }).reset_index()
    out.attrs["notes"] = []
    return out


# --------------------------------------------------------------------------- fitting


def _line_fit(steps: np.ndarray, moved: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Least squares ``t = alpha * steps + moved * inv_beta`` with both >= 0."""
    a = np.column_stack([steps, moved])
    coef, *_ = np.linalg.lstsq(a, t, rcond=None)
    alpha, inv_beta = float(coef[0]), float(coef[1])
    scale = float(np.max(np.abs(t))) if len(t) else 0.0
    if abs(inv_beta) * float(np.max(moved, initial=0.0)) <= 1e-9 * scale:
        inv_beta = 0.0  # flat within rounding: no bandwidth term
    if alpha < 0:
        alpha = 0.0
        inv_beta = float(moved @ t / (moved @ moved)) if moved @ moved > 0 else 0.0
    if inv_beta <= 0:
        inv_beta = 0.0  # time does not grow with size: latency only
        alpha = float(steps @ t / (steps @ steps)) if steps @ steps > 0 else 0.0
    return alpha, inv_beta


def _quality(pred: np.ndarray, t: np.ndarray) -> tuple[float, float, float]:
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float(((t - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    rel = np.abs(t - pred) / np.maximum(pred, 1.0)
    return r2, float(np.median(rel)), float(np.percentile(rel, 90))


def _fit_group(pg: str, coll: str, rows: pd.DataFrame, algorithm: Algorithm,
               borrowed_alpha: tuple[float, str] | None, backend: str) -> CollectiveFit:
    algo = Algorithm.RING if algorithm is Algorithm.AUTO else algorithm
    vols = [comm_volume(coll, b, n, algo) for b, n in zip(rows["nbytes"], rows["group_size"])]
    steps = np.array([v.steps for v in vols])
    moved = np.array([v.moved_bytes for v in vols])
    t = rows["transfer_ns"].to_numpy(dtype=float)
    med = (pd.DataFrame({"s": steps, "m": moved, "t": t})
           .groupby(["s", "m"], as_index=False)["t"].median())
    n_sizes = len(med)
    assumption = ""
    source = "fitted"
    if n_sizes >= 2 and med["m"].nunique() >= 2:
        alpha, inv_beta = _line_fit(med["s"].to_numpy(), med["m"].to_numpy(), med["t"].to_numpy())
        if inv_beta == 0:
            assumption = ("time did not grow with size in this run: modeled as latency only; "
                          "calibrate with 'tracekit calibrate' for a bandwidth")
    else:
        s0, m0, t0 = float(med["s"].iloc[0]), float(med["m"].iloc[0]), float(med["t"].iloc[0])
        if borrowed_alpha is not None:
            alpha, origin = borrowed_alpha
        else:
            alpha = DEFAULT_STEP_LATENCY_NS.get(backend, DEFAULT_STEP_LATENCY_NS[""])
            origin = f"the {backend or 'generic'} default"
        alpha = min(alpha, 0.5 * t0 / s0) if s0 > 0 else 0.0
        inv_beta = max(t0 - s0 * alpha, 0.0) / m0 if m0 > 0 else 0.0
        source = "one size"
        assumption = (f"the run issued {coll} at one size only ({int(rows['nbytes'].iloc[0])} B): "
                      f"assumed {alpha / 1e3:.3g} us/step latency from {origin}, bandwidth "
                      "from the observed time; calibrate for a measured curve")
    pred = steps * alpha + moved * inv_beta
    r2, med_rel, p90_rel = _quality(pred, t) if n_sizes >= 2 else (
        float("nan"), *_quality(pred, t)[1:])
    return CollectiveFit(
        collective=coll, pg=pg, alpha_ns=alpha,
        beta_bytes_per_s=(1e9 / inv_beta) if inv_beta > 0 else math.inf,
        source=source, n_points=len(rows), n_sizes=n_sizes,
        group_sizes=tuple(sorted({int(x) for x in rows["group_size"]})),
        size_range=(int(rows["nbytes"].min()), int(rows["nbytes"].max())),
        r2=r2, median_rel_residual=med_rel, p90_rel_residual=p90_rel, assumption=assumption,
    )


def fit_cost_model(samples: pd.DataFrame, *, backend: str = "",
                   algorithm: Algorithm | str = Algorithm.RING) -> FittedCostModel:
    """Fit ``alpha``/``beta`` per process group and collective type from transfer samples
    (:func:`comm_samples` or :func:`comm_samples_from_graph`).

    A type seen at a single size cannot separate latency from bandwidth: its latency is
    borrowed from a type of the same group fitted over several sizes, else taken from
    :data:`DEFAULT_STEP_LATENCY_NS`, and the assumption is recorded on the fit.
    """
    algorithm = Algorithm(algorithm)
    samples = samples[(samples["group_size"] > 1) & (samples["transfer_ns"] > 0)]
    groups = {k: rows for k, rows in samples.groupby(["pg", "collective"], sort=True)}
    multi = {k for k, rows in groups.items() if rows["nbytes"].nunique() >= 2}
    fits: dict[tuple[str, str], CollectiveFit] = {}
    for key in sorted(multi) + sorted(set(groups) - multi):
        pg, coll = key
        borrowed = None
        if key not in multi:
            donors = [f for (g, _), f in fits.items() if g == pg and f.source == "fitted"
                      and f.alpha_ns > 0]
            if donors:
                best = max(donors, key=lambda f: f.n_points)
                borrowed = (best.alpha_ns, f"the {best.collective} fit")
        fits[key] = _fit_group(pg, coll, groups[key], algorithm, borrowed, backend)
        log.debug("cost fit %s", fits[key].describe())
    return FittedCostModel(fits=fits, algorithm=algorithm, backend=backend,
                           sample_notes=list(samples.attrs.get("notes", [])))


def fit_run_cost_model(run, graph=None, *, algorithm: Algorithm | str = Algorithm.RING
                       ) -> FittedCostModel:
    """The cost model of a :class:`~tracekit.core.run.Run`: from the graph's comm nodes
    when a graph is given (and matched some collective across ranks), else from the event
    table."""
    if graph is not None:
        samples = comm_samples_from_graph(graph, run.events)
        samples["pg"] = samples["pg"].astype(str)
        model = fit_cost_model(samples.drop(columns="coll_id"), backend=run.backend,
                               algorithm=algorithm)
        if model.fits:
            from replay.nccl_variants import variant_samples, with_variants

            return with_variants(model, variant_samples(samples, graph, run.events),
                                 backend=run.backend)
    # no graph, or its comm nodes gave nothing to fit (e.g. one rank of a larger world)
    samples = comm_samples(run.events, world_size=run.world_size)
    return fit_cost_model(samples, backend=run.backend, algorithm=algorithm)
