"""Assemble the global dataflow graph of a run: :func:`build_graph`.

Pipeline (each stage in its own module)::

    Run.events ──arrays──> EventArrays            (numpy columns of the chosen steps)
               ──select──> nodes + NodeKind       (granularity: tracekit.graph.select)
               ──lanes───> Lane per thread / stream / comm channel
               LANE_ORDER edges between consecutive nodes of a lane
               ──device──> LAUNCH, STREAM_WAIT, HOST_WAIT (GPU ranks)
               ──host────> ISSUE, inferred HOST_WAIT (gloo ranks)
               ──collectives──> coll_id across ranks, wait vs transfer
               ──delays──> every edge's delay_ns (measured gap, or nominal)
               = Graph

Node ids are sorted by ``(rank, lane kind, lane, start)``, so a lane's nodes are
consecutive ids and lane-order edges are ``(i, i + 1)``. ``Graph.start_ns`` is the
measured start (for a comm node: when it arrived at the collective), ``dur_ns`` what the
replay uses (a comm node: its transfer, see :mod:`tracekit.graph.collectives`; a blocking
host call: its un-blocked part, see :mod:`tracekit.graph.device`), ``wait_ns`` the
measured waiting inside a comm node. Replaying the graph unchanged reproduces the measured
schedule (see :mod:`tracekit.graph.delays`); ``graph.notes`` says what was inferred,
what could not be matched, and whether the world is complete.

Example::

    >>> from tracekit.core.run import load_run
    >>> g = build_graph(load_run("runs/mlp"))          # doctest: +SKIP
    >>> g.n_nodes, g.n_edges, g.notes[0]               # doctest: +SKIP
    (840, 1302, '840 nodes on 6 lanes of 2 ranks, steps 2-3; 1302 edges ...')
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from tracekit.core.run import Run
from tracekit.core.run_checks import require_common_steps
from tracekit.errors import TracekitError
from tracekit.graph.arrays import event_arrays
from tracekit.graph.collectives import match_collectives
from tracekit.graph.delays import calibrate_delays
from tracekit.graph.device import add_device_edges
from tracekit.graph.draft import GraphDraft
from tracekit.graph.host import add_host_edges
from tracekit.graph.lanes import make_lanes
from tracekit.graph.model import EdgeKind, Graph
from tracekit.graph.select import select_nodes
from tracekit.graph.steadiness import unsteady_note
from tracekit.graph.unrecorded import add_unrecorded_waits
from tracekit.log import get_logger

log = get_logger(__name__)


def _span(steps: list[int]) -> str:
    if not steps:
        return "none"
    if steps == list(range(steps[0], steps[-1] + 1)) and len(steps) > 1:
        return f"{steps[0]}-{steps[-1]}"
    return ", ".join(str(s) for s in steps)


def build_graph(run: Run, *, steps: list[int] | None = None,
                delays: str = "typical") -> Graph:
    """The global dataflow graph of ``run`` (all steps present on every rank, or ``steps``).

    ``delays`` says what each dependency edge's latency is:

    - ``"typical"`` (default, what every prediction uses): the median latency of its edge
      kind on its rank (lane-order gaps, the host time between two ops of a thread, stay as
      measured). Replaying this graph is a real test of the model: the waiting it predicts
      comes from the dependencies and arrival times, not from copied gaps, so its error
      against the measured steps is the baseline error every command prints.
    - ``"measured"``: each edge carries the gap measured on that very instance, so replaying
      the unchanged graph reproduces the measured schedule exactly. Useful only as a
      consistency check of the graph (a non-zero error there is a bug).

    Raises :class:`TracekitError` when a requested step is not in the run or the chosen
    steps hold no node.
    """
    if delays not in ("typical", "measured"):
        raise TracekitError(f"delays must be 'typical' or 'measured', not {delays!r}")
    graph = _build_measured(run, steps)
    if delays == "typical":
        from tracekit.graph.edit import typical_delays

        graph = typical_delays(graph)
        graph.notes.append("dependency latencies: typical values (the median over steps of "
                           "the same edge); host gaps between ops as measured")
    return graph


def _build_measured(run: Run, steps: list[int] | None) -> Graph:
    t0 = time.perf_counter()
    available = require_common_steps(run)
    if steps is None:
        chosen = available
    else:
        missing = sorted(set(steps) - set(available))
        if missing:
            raise TracekitError(
                f"step {missing[0]} is not in this run (steps on every rank: "
                f"{_span(available)}); pass one of those", path=run.path)
        chosen = sorted(set(steps))
    events = run.events
    keep = events["step"].isin(chosen).to_numpy()
    ev = event_arrays(events, keep)
    gpu_ranks = {int(r) for r in np.unique(ev.rank[ev.is_gpu & ev.in_graph])}
    sel = select_nodes(ev, gpu_ranks=gpu_ranks)
    if len(sel.index) == 0:
        raise TracekitError(f"steps {_span(chosen)} hold no operator, kernel or collective; "
                            "profile with CPU activity enabled", path=run.path)
    lane, lanes = make_lanes(ev, sel.index, sel.kind, events)
    n = len(sel.index)
    # the draft owns the selection's start / end arrays from here (it shortens blocking
    # calls in place; nothing reads sel.start_ns / sel.end_ns again)
    d = GraphDraft(ev=ev, index=sel.index, kind=sel.kind, lane=lane, lanes=lanes,
                   start=sel.start_ns, end=sel.end_ns,
                   wait=np.zeros(n, dtype=np.int64), coll_id=np.full(n, -1, dtype=np.int64))
    same = np.flatnonzero(lane[1:] == lane[:-1])
    d.add_edges(same, same + 1, EdgeKind.LANE_ORDER)
    del same
    dev = add_device_edges(d)
    host = add_host_edges(d)
    coll = match_collectives(d, world_size=run.world_size, ranks_present=run.ranks)
    n_unrecorded = add_unrecorded_waits(d)
    src, dst, ekind, inferred = d.edges(release=True)
    delay = _calibrated_delays(d, src, dst, ekind, lane)
    name_codes, name_uniques = pd.factorize(ev.name[sel.index])
    graph = Graph(
        rank=d.rank.astype(np.int32),
        lane=lane.astype(np.int32),
        kind=sel.kind.astype(np.int8),
        step=ev.step[sel.index].astype(np.int32),
        name=name_codes.astype(np.int32),
        start_ns=d.start.astype(np.int64, copy=False),
        dur_ns=np.maximum(d.end - d.start - d.wait, 0).astype(np.int64, copy=False),
        wait_ns=d.wait,
        bytes=np.where(sel.kind == 1, ev.comm_bytes[sel.index], -1).astype(np.int64),
        coll_id=d.coll_id.astype(d.id_dtype),  # ids < nodes: int32 while those fit
        # entry i of ev is row i of the table; int32 while the table's rows fit
        event_row=sel.index.astype(np.int32 if len(ev) < 2**31 - 1 else np.int64),
        src=src, dst=dst, edge_kind=ekind, delay_ns=delay, inferred=inferred,
        names=[ev.names[c] for c in name_uniques],
        lanes=lanes,
    )
    ranks = sorted({ln.rank for ln in lanes})
    n_inferred = int(inferred.sum())
    graph.notes.append(
        f"{graph.n_nodes} nodes on {len(lanes)} lanes of {len(ranks)} rank(s), steps "
        f"{_span(chosen)}; {graph.n_edges} edges, {n_inferred} inferred")
    if (unsteady := unsteady_note(graph)) is not None:
        graph.notes.append(unsteady)
    if host["host_wait_inferred"]:
        graph.notes.append(
            f"{host['host_wait_inferred']} host wait(s) on gloo work inferred from gaps on "
            "host threads (no event records work.wait())")
    if host["thread_wait_inferred"]:
        graph.notes.append(
            f"{host['thread_wait_inferred']} wait(s) between host threads of a rank inferred "
            "from gaps (e.g. the main thread blocked in backward() on the autograd thread)")
    if dev["host_wait_inferred"]:
        graph.notes.append(
            f"{dev['host_wait_inferred']} blocking call(s) matched to the device op that "
            "ended while they blocked (the trace does not say what they waited for)")
    if host["unissued"]:
        graph.notes.append(f"{host['unissued']} gloo work item(s) have no issuing op in the "
                           "trace; they start when their thread is free")
    if sel.clipped:
        graph.notes.append(f"{sel.clipped} node(s) overlapped their lane predecessor and were "
                           "clipped to start when it ended")
    if dev["stream_wait_inferred"]:
        graph.notes.append(
            f"no cuda_sync events: {dev['stream_wait_inferred']} wait(s) between streams "
            "inferred from timing (an op starting right after another stream's op ended)")
    elif gpu_ranks and not dev["stream_wait"] and _has_cross_stream(lanes):
        graph.notes.append("no cuda_sync events: waits between streams are not recorded, so "
                           "each stream's start gaps are kept as measured delays")
    if n_unrecorded:
        graph.notes.append(
            f"{n_unrecorded} device op(s) started long after their launch with nothing in the "
            "trace to wait for (work queued before the trace began, or an event recorded "
            "outside it): those waits are kept as measured")
    graph.notes.extend(d.notes)
    if coll["instances"]:
        graph.notes.append(
            f"{coll['instances']} collective instance(s): {coll['matched']} matched across "
            f"ranks, {coll['unmatched_nodes']} on one rank only")
    log.info("graph: %d nodes, %d edges, %d lanes in %.2fs", graph.n_nodes, graph.n_edges,
             len(lanes), time.perf_counter() - t0)
    return graph


def _calibrated_delays(d: GraphDraft, src, dst, ekind, lane) -> np.ndarray:
    """:func:`calibrate_delays` a chunk of target ranks at a time (edges are sorted by
    target, targets by rank, and every delay group lies within one rank)."""
    rank = d.rank
    chunks = [(0, len(src))]
    if len(src) > 500_000 and len(rank) and bool((rank[1:] >= rank[:-1]).all()):
        cut = np.flatnonzero(np.concatenate([[True], rank[dst[1:]] != rank[dst[:-1]]]))
        chunks, lo = [], 0
        for c in cut[1:].tolist():
            if c - lo >= 500_000:
                chunks.append((lo, c))
                lo = c
        chunks.append((lo, len(src)))
    out = np.empty(len(src), dtype=np.int64)
    for lo, hi in chunks:
        out[lo:hi], _ = calibrate_delays(src=src[lo:hi], dst=dst[lo:hi], kind=ekind[lo:hi],
                                         target_start=d.start, source_end=d.end, lane=lane,
                                         rank=rank)
    return out


def _has_cross_stream(lanes) -> bool:
    per_rank: dict[int, int] = {}
    for ln in lanes:
        if ln.kind in ("gpu",) or (ln.kind == "comm" and "stream" in ln.name):
            per_rank[ln.rank] = per_rank.get(ln.rank, 0) + 1
    return any(c > 1 for c in per_rank.values())
