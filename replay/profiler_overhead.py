"""The profiler's own cost, taken out of a run before its what-ifs are predicted.

A what-if predicts the step of a job that runs *without* the profiler (that is what a
user, and the accuracy benchmark, measures), but the graph is timed by a profiled run:
every event the profiler records costs the recording thread a few microseconds
(``record_shapes``, Python op records), so host work is longer than it would be. A
what-if that shortens communication makes host work a larger share of the step, and a
prediction from profiled host times then says too little (``bandwidth=2x`` on a 100 ms
step with 10 ms of profiler cost: 1.38x predicted, where the unprofiled job gains 1.44x).

``tracekit profile`` records the same job's step time profiled and unprofiled
(``manifest.overhead``). The cost is spread over what was recorded: every host node
stands for itself and the host events nested inside it that the compact table leaves
out (``nested_events``, :func:`tracekit.core.reduce.nested_counts`), and each recorded
event costs::

    per_event = (profiled step - unprofiled step) / recorded host events per rank and step
    node duration -= per_event * (1 + nested events)   (never below a tenth of it)

Example (the 4 Gbit/s mlp run): profiled 111.8 ms, unprofiled 101.4 ms, 1147 host
events per rank and step -> 9.1 us per event; an ``aten::linear`` of 0.40 ms with 5
nested events becomes 0.35 ms, a 5 ms matmul barely changes.

Without a manifest, an overhead figure or a profiled step slower than the unprofiled
one, nothing is taken out and the note says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracekit.core.reduce import droppable, nested_counts
from tracekit.graph.model import Graph, NodeKind

#: the compact table's column: host events left out because they nest inside this row
NESTED_COLUMN = "nested_events"
#: a node keeps at least this share of its recorded duration
MIN_KEPT = 0.1


@dataclass(frozen=True, kw_only=True)
class ProfilerOverhead:
    """What is taken out of a graph's host nodes."""

    #: the recording cost of one event, ns
    per_event_ns: float
    #: per node, ns taken out of its duration
    removed_ns: np.ndarray
    #: the profiled and unprofiled step times it comes from, ms
    profiled_ms: float
    unprofiled_ms: float

    def note(self, baseline_ms: float) -> str:
        return (f"profiler overhead taken out before predicting: {self.per_event_ns / 1e3:.1f} "
                f"us per recorded host event (the run's step {self.profiled_ms:.1f} ms "
                f"profiled, {self.unprofiled_ms:.1f} ms unprofiled); speedups and step times "
                f"are against the baseline replayed without it, {baseline_ms:.3f} ms/step")


def host_nodes(graph: Graph) -> np.ndarray:
    """Nodes recorded on host threads (not on GPU streams, not collective transfers)."""
    cpu_lane = np.array([ln.kind == "cpu" for ln in graph.lanes], dtype=bool)
    on_cpu = cpu_lane[graph.lane] if len(cpu_lane) else np.zeros(graph.n_nodes, dtype=bool)
    return on_cpu & (graph.event_row >= 0) & (graph.kind != NodeKind.COMM)


def events_per_node(events, graph: Graph, host: np.ndarray) -> np.ndarray:
    """Per node, the recorded events it stands for: 1 plus the host events nested inside
    it that the compact table leaves out (its ``nested_events``, filled when the traces
    were read; counted here for a table built some other way), 0 for nodes not ``host``."""
    out = np.zeros(graph.n_nodes, dtype=np.int64)
    idx = np.flatnonzero(host)
    if not len(idx):
        return out
    rows = graph.event_row[idx]
    nested = np.maximum(events[NESTED_COLUMN].to_numpy(), 0) if NESTED_COLUMN in events else None
    if nested is None or not nested.any():
        nested = nested_counts(events, droppable(events))
    out[idx] = 1 + nested[rows]
    return out


def estimate(run, graph: Graph) -> tuple[ProfilerOverhead | None, str]:
    """The overhead to take out of ``graph`` (None: nothing) and, when None, why."""
    manifest = getattr(run, "manifest", None)
    figure = (manifest.raw.get("overhead") or {}) if manifest is not None else {}
    prof, unprof = figure.get("profiled_step_ms"), figure.get("unprofiled_step_ms")
    if not isinstance(prof, int | float) or not isinstance(unprof, int | float) or unprof <= 0:
        return None, ("profiler overhead not taken out: the run has no profiled and "
                      "unprofiled step times (record it with 'tracekit profile')")
    if prof <= unprof:
        return None, (f"profiler overhead not taken out: the profiled step ({prof:.1f} ms) was "
                      f"not slower than the unprofiled one ({unprof:.1f} ms)")
    host = host_nodes(graph)
    count = events_per_node(run.events, graph, host)
    in_steps = host & (graph.step >= 0)
    rank_steps = len(np.unique(graph.rank[in_steps].astype(np.int64) * (1 << 32)
                               + graph.step[in_steps]))
    recorded = count[in_steps].sum() / max(rank_steps, 1)
    if recorded <= 0:
        return None, "profiler overhead not taken out: no host events in the replayed steps"
    per_event = (prof - unprof) * 1e6 / recorded
    dur = graph.dur_ns.astype(float)
    removed = np.where(host, np.minimum(per_event * count, (1 - MIN_KEPT) * dur), 0.0)
    return ProfilerOverhead(per_event_ns=per_event, removed_ns=np.rint(removed).astype(np.int64),
                            profiled_ms=float(prof), unprofiled_ms=float(unprof)), ""
