"""Separate collective cost fits per NCCL algorithm and protocol.

NCCL picks, per call and size, an algorithm (ring, tree, NVLS, CollNet, PAT) and a
protocol (LL, LL128, Simple), and their costs differ: LL has the lowest latency and a
fraction of the bandwidth, Simple the reverse, a tree takes log2(n) steps where a ring
takes n - 1. One latency + bandwidth line over all calls of a collective blurs them.
When the run says which variant each call used (NCCL's log in the run folder, attached at
load, or the kernel name of NCCL <= 2.18), :func:`with_variants` fits one line per
(process group, collective, algorithm, protocol), with the tree step structure for tree
variants, and the model re-times a call of a given size with the variant NCCL used for
the nearest size the run issued (NCCL chooses by size, so a size between two observed
ones takes the closer one's choice, on a log scale). Calls the run never issued, or whose
variant is unknown, fall back to the pooled fit of their collective.

Example::

    >>> model = fit_run_cost_model(run, graph)              # doctest: +SKIP
    >>> model.variant_for("all_reduce", 4_000_000, "0")     # doctest: +SKIP
    ('ring', 'll128')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from replay.cost_model import (
    _HAS_TREE,
    Algorithm,
    CollectiveFit,
    CostTerms,
    FittedCostModel,
    fit_cost_model,
)

Variant = tuple[str, str]


@dataclass(kw_only=True)
class VariantCostModel(FittedCostModel):
    """A :class:`FittedCostModel` (``fits``: one pooled fit per collective) with a fit per
    NCCL algorithm / protocol on top (see module doc)."""

    #: (pg, collective, algorithm, protocol) -> fit
    variant_fits: dict[tuple[str, str, str, str], CollectiveFit] = field(default_factory=dict)
    #: (pg, collective) -> sorted [(bytes, algorithm, protocol)] the run issued
    observed: dict[tuple[str, str], list[tuple[int, str, str]]] = field(default_factory=dict)

    def variant_for(self, collective: str, nbytes: float, pg: str = "") -> Variant | None:
        """The (algorithm, protocol) NCCL used for the run's call nearest in size."""
        seen = self.observed.get((pg, collective))
        if seen is None:
            same = [v for (g, c), v in self.observed.items() if c == collective]
            seen = max(same, key=len) if same else None
        if not seen:
            return None
        target = math.log2(max(float(nbytes), 1.0))
        best = min(seen, key=lambda s: abs(math.log2(max(s[0], 1)) - target))
        return best[1], best[2]

    def _variant_fit(self, collective: str, nbytes: float, pg: str):
        v = self.variant_for(collective, nbytes, pg)
        if v is None:
            return None, None
        for key in [(pg, collective, *v)] + [k for k in self.variant_fits
                                              if k[1:] == (collective, *v)]:
            if key in self.variant_fits:
                return v, self.variant_fits[key]
        return v, None

    def fit_for(self, collective: str, nbytes: float = 0, pg: str = "") -> CollectiveFit:
        _, fit = self._variant_fit(collective, nbytes, pg)
        return fit if fit is not None else super().fit_for(collective, nbytes, pg)

    def terms(self, collective: str, nbytes: float, group_size: int, *, pg: str = "") -> CostTerms:
        v, fit = self._variant_fit(collective, nbytes, pg)
        if fit is None:
            return super().terms(collective, nbytes, group_size, pg=pg)
        algo = Algorithm.TREE if v[0] == "tree" and collective in _HAS_TREE else Algorithm.RING
        return fit.terms(collective, nbytes, group_size, algo)

    @property
    def notes(self) -> list[str]:
        lines = [f"[{a}/{p}] {f.describe()}" for (_, _, a, p), f in self.variant_fits.items()]
        if lines:
            lines.insert(0, "collective costs fitted separately per NCCL algorithm / "
                            "protocol (from NCCL's log or the kernel names):")
        return super().notes + lines


def variant_samples(samples: pd.DataFrame, graph, events: pd.DataFrame) -> pd.DataFrame:
    """``samples`` (from :func:`replay.cost_model.comm_samples_from_graph`, with its
    ``coll_id``) with the ``algorithm`` and ``protocol`` of each instance's kernels."""
    from tracekit.graph.model import NodeKind

    out = samples.copy()
    out["algorithm"] = ""
    out["protocol"] = ""
    if "coll_id" not in out or "nccl_algo" not in events:
        return out
    comm = np.flatnonzero((graph.kind == NodeKind.COMM) & (graph.coll_id >= 0)
                          & (graph.event_row >= 0))
    rows = graph.event_row[comm]
    algo = events["nccl_algo"].astype(str).to_numpy()[rows]
    proto = events["nccl_proto"].astype(str).to_numpy()[rows]
    by_id = {}
    for cid, a, p in zip(graph.coll_id[comm].tolist(), algo, proto):
        if a:
            by_id.setdefault(cid, (a, p))
    got = [by_id.get(c, ("", "")) for c in out["coll_id"].tolist()]
    out["algorithm"] = [g[0] for g in got]
    out["protocol"] = [g[1] for g in got]
    return out


def with_variants(model: FittedCostModel, samples: pd.DataFrame, *, backend: str
                  ) -> FittedCostModel:
    """``model`` as a :class:`VariantCostModel` when ``samples`` name the variants of
    their calls; ``model`` itself otherwise."""
    known = samples[(samples.get("algorithm", pd.Series(dtype=str)) != "")
                    & (samples["group_size"] > 1) & (samples["transfer_ns"] > 0)]
    if known.empty:
        return model
    fits: dict[tuple[str, str, str, str], CollectiveFit] = {}
    for (a, p), rows in known.groupby(["algorithm", "protocol"], sort=True):
        algo = Algorithm.TREE if a == "tree" else Algorithm.RING
        sub = fit_cost_model(rows.drop(columns=["algorithm", "protocol"]), backend=backend,
                             algorithm=algo)
        for (pg, coll), fit in sub.fits.items():
            fits[(pg, coll, a, p)] = fit
    observed: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
    for (pg, coll), rows in known.groupby(["pg", "collective"], sort=True):
        pairs = rows.groupby("nbytes")[["algorithm", "protocol"]].agg(lambda s: s.mode().iat[0])
        observed[(pg, coll)] = [(int(b), r.algorithm, r.protocol)
                                for b, r in pairs.iterrows()]
    return VariantCostModel(fits=model.fits, algorithm=model.algorithm, backend=model.backend,
                            sample_notes=model.sample_notes, variant_fits=fits,
                            observed=observed)
