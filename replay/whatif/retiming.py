"""Re-time every collective of a variant for another network or world size; the
``bandwidth=``, ``comm-scale=`` and ``workers=`` what-ifs each edit a
:class:`CommRetiming`, and :func:`retime_comm` applies it.

Communication is re-timed node by node with the cost model's latency/bandwidth split
(:class:`replay.scaled_cost.ScaledCostModel`): a comm node's measured transfer is
multiplied by ``T_variant / T_baseline`` for its collective, size and group, so what the
model does not explain about that node (contention, noise) carries over in proportion.

Before/after (all-reduce of 16 MB on 2 ranks, fitted 60 us/step and 1 GB/s)::

    transfer measured 18.0 ms; model 0.12 + 16.8 ms = 16.9 ms
    bandwidth=2x: model 0.12 + 8.4 = 8.5 ms -> node 18.0 * 8.5 / 16.9 = 9.1 ms
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from replay.cost_model import CommCostModel
from replay.scaled_cost import ScaledCostModel
from replay.whatif.values import duration_ns
from tracekit.core.collectives import normalize_collective
from tracekit.graph.model import Graph, NodeKind


@dataclass(kw_only=True)
class CommRetiming:
    """How a variant changes every collective: network speed and group size."""

    time_factor: float = 1.0
    bandwidth_factor: float = 1.0
    bandwidth_bytes_per_s: float | None = None
    #: another world size (``workers=N``); None keeps each collective's group
    group_size: int | None = None
    notes: list[str] = field(default_factory=list)

    def scaled(self, model: CommCostModel) -> ScaledCostModel:
        """``model`` on the variant's network."""
        return ScaledCostModel(base=model, time_factor=self.time_factor,
                               bandwidth_factor=self.bandwidth_factor,
                               bandwidth_bytes_per_s=self.bandwidth_bytes_per_s)

    @property
    def is_identity(self) -> bool:
        return (self.time_factor == 1.0 and self.bandwidth_factor == 1.0
                and self.bandwidth_bytes_per_s is None and self.group_size is None)


def node_group_sizes(graph: Graph, default: int) -> np.ndarray:
    """Participants of each comm node's collective instance (``default`` when unmatched)."""
    n = np.full(graph.n_nodes, default, dtype=np.int64)
    has = graph.coll_id >= 0
    if has.any():
        ids, inv, counts = np.unique(graph.coll_id[has], return_inverse=True, return_counts=True)
        n[has] = np.maximum(counts[inv], 1)
    return n


def retime_comm(graph: Graph, dur_ns: np.ndarray, model: CommCostModel,
                retiming: CommRetiming, group_size: np.ndarray) -> np.ndarray:
    """Comm durations scaled by ``T_variant / T_baseline`` per node (see module doc)."""
    if retiming.is_identity:
        return dur_ns
    scaled = retiming.scaled(model)
    out = np.asarray(dur_ns, dtype=np.float64).copy()
    comm = np.flatnonzero(graph.kind == NodeKind.COMM)
    colls = [normalize_collective(n) for n in graph.names]
    cache: dict[tuple, float] = {}
    for v in comm:
        coll = colls[graph.name[v]] or "all_reduce"
        nbytes = max(int(graph.bytes[v]), 0)
        n_old = int(group_size[v])
        n_new = retiming.group_size or n_old
        key = (coll, nbytes, n_old, n_new)
        if key not in cache:
            base = model.time_ns(coll, nbytes, n_old)
            new = scaled.time_ns(coll, nbytes, n_new)
            cache[key] = new / base if base > 0 else retiming.time_factor
        out[v] *= cache[key]
    return duration_ns(out, "the network what-if (bandwidth=, comm-scale=, workers=)")
