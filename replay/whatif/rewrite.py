"""Re-plan DDP's gradient communication in a graph: new buckets, where each is issued,
and how each is synchronized (a :class:`SyncMode`: DDP's all-reduce here, DeAR's
reduce-scatter + all-gather in :mod:`replay.whatif.dear`).

A :class:`GradientPlan` says what the variant does; :func:`materialize` edits the graph:

1. the baseline's bucket collectives and the host ops that issued them are removed (the
   host time around them stays, as lane-order delays);
2. per rank and step, each planned bucket gets an issue op on the autograd thread right
   after its ready gradient's ``AccumulateGrad`` (with overlap off: all after the last
   one, in bucket order), timed like the run's issue ops, and a collective sharing one
   ``coll_id`` across ranks. New collectives are dealt in bucket order to the comm lanes
   the baseline's buckets ran on (at the place they had there): NCCL runs a process
   group's collectives one at a time on one stream, while gloo's worker threads (two by
   default) each take the next queued work, so two collectives run at once (a real run
   with 16 buckets of 1 MB had two in flight for 72% of its communication time). A
   bucket the baseline had unchanged keeps its lane;
3. each new bucket stands in for the baseline bucket that held its last gradient (same
   rank and step): it is waited for where that one was, and its duration is the cost
   model's, scaled by that bucket's measured transfer / model ratio (what the model does
   not explain about it carries over, spread over a bigger bucket: :func:`carried_over`;
   the core and link sharing inside the measured time is divided out first, since the
   interference model re-applies the variant's own); a bucket the baseline had unchanged
   keeps its measured time (divided the same);
4. the sync mode adds what it needs beyond that: the all-reduce is waited for in backward
   (HOST_WAIT into the node DDP's ``finalize_backward`` waits in); DeAR's mode adds
   all-gathers to the next forward instead.

Before/after, rank 0 of one step, buckets {1 MB, 15 MB} -> ``fusion=4MB`` (four buckets
of 4.0 MB): two ``c10d::allreduce_`` + two ``gloo:all_reduce`` nodes become four of each,
the four all-reduces dealt in turn to gloo's two threads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replay.whatif.gradients import GradientSync, RankStepSync
from replay.whatif.splice import (
    close_gaps,
    comm_anchor,
    group_inserts,
    kept_successor,
    lane_links,
    splice,
)
from tracekit.graph.edit import add_edges, add_nodes, new_coll_ids, remove_nodes, renumbering
from tracekit.graph.model import EdgeKind, Graph, NodeKind


class SyncMode:
    """How a bucket's gradients are synchronized: DDP's all-reduce, waited for at the end
    of backward. Other modes (DeAR) subclass this and override the hooks."""

    #: the collectives of one bucket, in the order their ``coll_id`` s are numbered
    collectives: tuple[str, ...] = ("all_reduce",)
    #: the collective issued when a bucket's gradients are ready, and its issue op
    backward: str = "all_reduce"
    backward_issue: str = "c10d::allreduce_"
    #: a bucket the baseline had (same place, same bytes) keeps its measured timing
    reuses_baseline_buckets: bool = True
    #: backward waits for the bucket where the baseline waited (DDP's finalize)
    waited_in_backward: bool = True

    def pre_edit(self, graph: Graph, sync: GradientSync) -> tuple[Graph, dict[str, Any]]:
        """Edit the graph before it is re-planned (DeAR takes the optimizer's time out of
        the end of the step); returns the graph and state for :attr:`GradientRewrite.
        mode_state`."""
        return graph, {}

    def prepare(self, rw: GradientRewrite, rs: RankStepSync) -> Any:
        """Facts this mode needs about one rank and step, read before the graph changes
        (so a missing fact is an error before anything is built)."""
        return None

    def forward(self, rw: GradientRewrite, sb: StepBuild) -> None:
        """Add this mode's nodes to the step's forward (none for all-reduce)."""

    def finish(self, rw: GradientRewrite) -> list[str]:
        """Add edges across steps once every step is built; notes for the user."""
        return []


ALL_REDUCE = SyncMode()


@dataclass(frozen=True, kw_only=True)
class GradientPlan:
    """How a variant synchronizes gradients."""

    #: buckets as tuples of gradient positions (ready order), in issue order
    buckets: tuple[tuple[int, ...], ...]
    #: issue each bucket when its gradients are ready (DDP); False: all after backward
    overlap: bool = True
    #: how each bucket is synchronized
    mode: SyncMode = ALL_REDUCE

    def same_as(self, sync: GradientSync) -> bool:
        return self.buckets == sync.buckets and self.overlap and self.mode is ALL_REDUCE


@dataclass(frozen=True, kw_only=True)
class Rewritten:
    graph: Graph
    #: for every node of the new graph, its id in the old graph (-1: created here)
    origin: np.ndarray
    notes: list[str] = field(default_factory=list)


@dataclass
class NewNodes:
    """Columns of the nodes a rewrite creates (local ids 0, 1, ...)."""

    cols: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    n: int = 0

    def add(self, **kw) -> int:
        for k, v in {"bytes": -1, "coll_id": -1, **kw}.items():
            self.cols[k].append(v)
        self.n += 1
        return self.n - 1


@dataclass(frozen=True, kw_only=True)
class OldBucket:
    """A baseline bucket collective, as the rewrite needs it (old node ids)."""

    nbytes: int
    dur_ns: int
    lane: int
    issue_delay_ns: int
    issue_dur_ns: int
    #: (kept node that waited for it, wait delay)
    waits: list[tuple[int, int]]
    #: (the node before its issue op on the lane, that lane-order delay)
    before_issue: tuple[int, int]


@dataclass(frozen=True, kw_only=True)
class StepFacts:
    """What one rank and step contribute, read from the graph before it changes."""

    #: per baseline bucket: measured transfer / model (the contention it ran under)
    corr: np.ndarray
    #: per baseline bucket: its all-reduce's time by the model (ns)
    model_ns: np.ndarray
    #: comm lane -> where its new collectives go (see :func:`comm_anchor`)
    anchors: dict[int, tuple[str, int]]
    old: list[OldBucket]
    #: (kept node DDP's finalize waits in, wait delay)
    fallback: tuple[int, int]
    #: the last kept node that waits for one of the step's buckets (the fallback's node
    #: when none does): by then DDP's finalize has seen every bucket complete
    last_wait: int
    #: the sync mode's own facts (:meth:`SyncMode.prepare`)
    mode_facts: Any


@dataclass(kw_only=True)
class StepBuild:
    """The new nodes of one rank and step while they are built (local new-node ids)."""

    rs: RankStepSync
    facts: StepFacts
    #: per planned bucket: the baseline bucket it stands in for
    old_of: np.ndarray
    lanes: list[int]
    #: new collectives in issue order (dealt to the comm lanes at the end)
    comm_order: list[int] = field(default_factory=list)
    #: new host ops to insert after / before an existing node (new graph ids)
    main_after: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    main_before: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))


class GradientRewrite:
    """One application of a :class:`GradientPlan` to a graph (see module doc)."""

    def __init__(self, graph: Graph, sync: GradientSync, plan: GradientPlan,
                 cost_ns: Callable[[str, int], float],
                 contention: np.ndarray | None = None,
                 issue_ns: Callable[[str, int], float | None] | None = None) -> None:
        self.graph, self.sync, self.plan, self.cost_ns = graph, sync, plan, cost_ns
        self._issue_ns = issue_ns
        #: per old node, the sharing inside its measured duration that the interference
        #: model applies again (a new bucket's time must not carry it twice)
        self.contention = np.ones(graph.n_nodes) if contention is None else contention
        self.mode = plan.mode
        self.bucket_bytes = [sum(sync.params[i].bytes for i in b) for b in plan.buckets]
        #: per planned bucket: its all-reduce's time by the model (what
        #: :func:`carried_over` weighs against the stand-in's)
        self.bucket_model_ns = [cost_ns("all_reduce", b) for b in self.bucket_bytes]
        # DDP launches buckets in index order: bucket i goes when buckets 0..i are ready
        self.ready_pos = (np.maximum.accumulate([max(b) for b in plan.buckets])
                          if plan.overlap else np.full(len(plan.buckets), len(sync.params) - 1))
        self.removed = np.zeros(graph.n_nodes, dtype=bool)
        for rs in sync.per_rank_step.values():
            self.removed[rs.bucket_comm] = True
            self.removed[rs.bucket_issue] = True
        out_edge, _ = lane_links(graph)
        self.nxt = dict(out_edge)
        lane_e = np.flatnonzero(graph.edge_kind == EdgeKind.LANE_ORDER)
        self.lane_in = {int(graph.dst[e]): (int(graph.src[e]), int(graph.delay_ns[e]))
                        for e in lane_e}
        iss = np.flatnonzero(graph.edge_kind == EdgeKind.ISSUE)
        self.issue_delay = {(int(graph.src[e]), int(graph.dst[e])): int(graph.delay_ns[e])
                            for e in iss}
        self.steps = sorted({s for _, s in sync.per_rank_step})
        self.coll_base = int(new_coll_ids(graph, 1)[0])
        self.nodes = NewNodes()
        self.inserts: list[tuple[str, int, list[int]]] = []
        self.leads: dict[int, int] = {}
        self.edges: dict[EdgeKind, list[tuple[int, int, int]]] = defaultdict(list)
        #: edges between two new nodes of any kind (ISSUE and COMM_DONE in ``edges`` are
        #: such edges too; other kinds there point at existing nodes)
        self.new_edges: dict[EdgeKind, list[tuple[int, int, int]]] = defaultdict(list)
        #: (rank, step, bucket) -> the bucket's backward collective (local new id)
        self.backward_node: dict[tuple[int, int, int], int] = {}
        self.new_id = renumbering(self.removed)
        #: whatever a sync mode keeps between its hooks
        self.mode_state: dict[str, Any] = {}

    def coll_id(self, step: int, bucket: int, collective: str) -> int:
        """The ``coll_id`` every rank's node of this collective instance shares."""
        kinds = self.mode.collectives
        return self.coll_base + (self.steps.index(step) * len(self.plan.buckets) + bucket) \
            * len(kinds) + kinds.index(collective)

    def kept(self, node: int) -> int:
        return kept_successor(self.graph, node, self.removed, self.nxt)

    # --------------------------------------------------------------- read (old ids)

    def step_facts(self, rs: RankStepSync) -> StepFacts:
        graph, sync = self.graph, self.sync
        model = np.array([self.cost_ns("all_reduce", int(b)) for b in graph.bytes[rs.bucket_comm]])
        alone = graph.dur_ns[rs.bucket_comm] / np.maximum(self.contention[rs.bucket_comm], 1.0)
        corr = np.where(model > 0, alone / np.maximum(model, 1e-9), 1.0)
        anchors = {}
        for lane in rs.comm_lanes:
            first_old = int(min(c for c in rs.bucket_comm if graph.lane[c] == lane))
            anchors[lane] = comm_anchor(graph, lane, first_old, self.removed)
        fallback = self.kept(rs.wait_target) if rs.wait_target >= 0 else -1
        old = [OldBucket(nbytes=int(graph.bytes[c]),
                         dur_ns=int(round(graph.dur_ns[c] / max(self.contention[c], 1.0))),
                         lane=int(graph.lane[c]),
                         issue_delay_ns=self.issue_delay.get((int(i), int(c)),
                                                             sync.issue_delay_ns),
                         issue_dur_ns=int(graph.dur_ns[i]),
                         waits=[(self.kept(int(w)), int(wd)) for w, wd in waits],
                         before_issue=self.lane_in.get(int(i), (-1, 0)))
               for c, i, waits in zip(rs.bucket_comm, rs.bucket_issue, rs.bucket_waits)]
        waiting = [w for b in old for w, _ in b.waits if w >= 0]
        return StepFacts(corr=corr, model_ns=model, anchors=anchors, old=old,
                         fallback=(fallback, rs.wait_delay_ns),
                         last_wait=max(waiting) if waiting else fallback,
                         mode_facts=self.mode.prepare(self, rs))

    def carried(self, facts: StepFacts, k: int, b: int) -> float:
        """:func:`carried_over` from old bucket ``k`` to planned bucket ``b``."""
        return carried_over(float(facts.corr[k]), self.bucket_model_ns[b],
                            float(facts.model_ns[k]))

    def lane_gaps(self) -> dict[int, int]:
        """New links on a comm lane get the lane's usual gap between work items."""
        graph = self.graph
        is_lane = graph.edge_kind == EdgeKind.LANE_ORDER
        comm_lanes = {ln for rs in self.sync.per_rank_step.values() for ln in rs.comm_lanes}
        gaps = {}
        for ln in comm_lanes:
            d = graph.delay_ns[is_lane & (graph.lane[graph.dst] == ln)]
            gaps[ln] = max(int(np.median(d)), 0) if len(d) else 0
        return gaps

    # --------------------------------------------------------------- build (new ids)

    def build_step(self, rs: RankStepSync, facts: StepFacts) -> None:
        """The new nodes of one rank and step, and where they go."""
        # each new bucket stands in for the baseline bucket that held its last gradient:
        # it is waited for where that one was (DDP's finalize goes bucket by bucket)
        old_of = np.searchsorted(rs.bucket_last_grad, [max(b) for b in self.plan.buckets])
        sb = StepBuild(rs=rs, facts=facts, old_of=np.minimum(old_of, len(facts.old) - 1),
                       lanes=list(rs.comm_lanes))
        self.mode.forward(self, sb)
        fixed_lane = self.backward_collectives(sb)
        for a, ns in sb.main_after.items():
            self.inserts.append(("after", a, ns))
        for a, ns in sb.main_before.items():
            self.inserts.append(("before", a, ns))
        per_lane: dict[int, list[int]] = defaultdict(list)
        for j, c in enumerate(sb.comm_order):  # gloo's worker threads take turns
            lane = fixed_lane.get(c, sb.lanes[j % len(sb.lanes)])
            self.nodes.cols["lane"][c] = lane
            per_lane[lane].append(c)
        for lane, ns in per_lane.items():
            where, anchor = facts.anchors[lane]
            self.inserts.append((where, int(self.new_id[anchor]) if where != "empty" else anchor,
                                 ns))

    def issue_dur_ns(self, collective: str, nbytes: int, measured: int, base_bytes: int
                     ) -> int:
        """An issue op's time: ``measured`` (its stand-in's, or the run's typical issue of
        an all-reduce of ``base_bytes``) plus what the calibration says issuing
        ``collective`` of ``nbytes`` costs beyond that all-reduce (a gloo reduce-scatter
        clones its input on the calling thread first); ``measured`` without issue times."""
        if self._issue_ns is None:
            return measured
        new, old = self._issue_ns(collective, nbytes), self._issue_ns("all_reduce", base_bytes)
        if new is None or old is None:
            return measured
        return max(int(round(measured + new - old)), 0)

    def backward_collectives(self, sb: StepBuild) -> dict[int, int]:
        """Each bucket's issue op and collective, issued when its gradients are ready;
        returns the lanes of collectives that keep the baseline's."""
        graph, sync, mode, rs, facts = self.graph, self.sync, self.mode, sb.rs, sb.facts
        old = facts.old
        # the first new bucket to stand in for an old one keeps its issue op's measured
        # time (a preempted c10d::allreduce_ can block for ms: kept once, not per bucket)
        first_of = {int(k): b for b, k in reversed(list(enumerate(sb.old_of)))}
        fixed_lane: dict[int, int] = {}
        for b, pos in enumerate(self.ready_pos):
            ready = int(rs.ready_nodes[pos])
            t0 = int(graph.start_ns[ready] + graph.dur_ns[ready])
            same = (mode.reuses_baseline_buckets and b < len(old)
                    and old[b].nbytes == self.bucket_bytes[b])
            k = int(sb.old_of[b])
            dur = old[b].dur_ns if same else int(round(
                self.cost_ns(mode.backward, self.bucket_bytes[b])
                * self.carried(facts, k, b)))
            issue = self.issue_dur_ns(mode.backward, self.bucket_bytes[b],
                                      old[k].issue_dur_ns if first_of[k] == b
                                      else sync.issue_dur_ns, old[k].nbytes)
            iss = self.nodes.add(lane=rs.lane, kind=int(NodeKind.LAUNCH), name=mode.backward_issue,
                                 dur_ns=issue, start_ns=t0, step=rs.step, rank=rs.rank)
            c = self.nodes.add(lane=sb.lanes[0], kind=int(NodeKind.COMM),
                               name=f"{sync.comm_prefix}{mode.backward}", dur_ns=dur,
                               start_ns=t0, step=rs.step, rank=rs.rank,
                               bytes=self.bucket_bytes[b],
                               coll_id=self.coll_id(rs.step, b, mode.backward))
            if same:
                fixed_lane[c] = old[b].lane
            ready_new = int(self.new_id[ready])
            if same and old[k].before_issue[0] == ready and ready_new not in sb.main_after:
                self.leads[ready_new] = max(old[k].before_issue[1], 0)
            sb.main_after[ready_new].append(iss)
            sb.comm_order.append(c)
            self.edges[EdgeKind.ISSUE].append(
                (iss, c, old[b].issue_delay_ns if same else sync.issue_delay_ns))
            # a bucket is waited for where its stand-in was, else at DDP's finalize point:
            # finalize waits for every bucket. A bucket the run shows no wait for had
            # only finished before it; issued where it was, it still will, but one issued
            # later (overlap=off) may not: it must be done by the last of the step's waits
            # (finalize waits bucket by bucket), without a resume delay of its own
            waits = old[k].waits
            if not waits and not same:
                waits = [facts.fallback]
            elif not waits and old[k].before_issue[0] != ready:  # kept, issued later
                waits = [(facts.last_wait, 0)]
            if mode.waited_in_backward:
                self.edges[EdgeKind.HOST_WAIT] += [(c, int(self.new_id[t]), dl)
                                                   for t, dl in waits if t >= 0]
            self.backward_node[(rs.rank, rs.step, b)] = c
        return fixed_lane

    # --------------------------------------------------------------- write

    def write(self, g: Graph) -> Graph:
        """Add the new nodes and edges to ``g`` (the graph with the old buckets removed)."""
        first_new = g.n_nodes
        g, ids = add_nodes(g, **{k: np.asarray(v) for k, v in self.nodes.cols.items()})
        assert ids[0] == first_new
        shift = lambda i: i + first_new  # noqa: E731 - new local index -> node id
        # anchors are existing nodes (already new ids) or a lane; new nodes shift
        resolved = [(where, anchor, [shift(v) for v in ns])
                    for where, anchor, ns in group_inserts(self.inserts)]
        g = splice(g, resolved, self.lane_gaps(), self.leads)
        # a wait the graph had left as a lane gap is now carried by wait edges: the gap goes
        gap_nodes = [int(self.new_id[self.kept(rs.gap_wait_target)])
                     for rs in self.sync.per_rank_step.values() if rs.gap_wait_target >= 0]
        if gap_nodes:
            g = close_gaps(g, gap_nodes)
        for kind, es in self.edges.items():  # sources are new; ISSUE/COMM_DONE targets too
            s = [shift(a) for a, _, _ in es]
            d = [shift(b) if kind in (EdgeKind.ISSUE, EdgeKind.COMM_DONE) else b
                 for _, b, _ in es]
            g = add_edges(g, s, d, kind, delay_ns=[dl for _, _, dl in es])
        for kind, es in self.new_edges.items():
            g = add_edges(g, [shift(a) for a, _, _ in es], [shift(b) for _, b, _ in es], kind,
                          delay_ns=[dl for _, _, dl in es])
        return g


def materialize(graph: Graph, sync: GradientSync, plan: GradientPlan, *,
                cost_ns: Callable[[str, int], float],
                contention: np.ndarray | None = None,
                issue_ns: Callable[[str, int], float | None] | None = None) -> Rewritten:
    """Apply ``plan`` to ``graph`` (see module doc). ``cost_ns(collective, bytes)`` is the
    transfer time of one collective on the run's group; ``contention``: per node, the
    sharing inside its measured duration that the interference model applies again
    (:meth:`~replay.interference.model.InterferenceModel.comm_contention`);
    ``issue_ns(collective, bytes)``: the calibrated time to issue one (None: unknown)."""
    graph, state = plan.mode.pre_edit(graph, sync)
    rw = GradientRewrite(graph, sync, plan, cost_ns, contention, issue_ns)
    rw.mode_state.update(state)
    facts = {key: rw.step_facts(rs) for key, rs in sync.per_rank_step.items()}
    g = remove_nodes(graph, rw.removed)
    for key, rs in sorted(sync.per_rank_step.items()):
        rw.build_step(rs, facts[key])
    notes = rw.mode.finish(rw)
    g = rw.write(g)
    origin = np.concatenate([np.flatnonzero(~rw.removed),
                             np.full(rw.nodes.n, -1, dtype=np.int64)])
    return Rewritten(graph=g, origin=origin, notes=notes)


def carried_over(corr: float, model_ns: float, stand_in_model_ns: float) -> float:
    """The measured/model ratio a new bucket carries over from its stand-in (``corr`` =
    the stand-in's measured transfer / its model): all of it when the new bucket is no
    larger (``model_ns``, its all-reduce's time by the model, against the stand-in's), and
    when larger the stand-in's unexplained *time* spread over the bigger one,
    ``1 + (corr - 1) * stand_in_model_ns / model_ns``.

    What a bucket's time does not explain is in part per call (the ranks' skew, waking a
    thread) and in part per byte, and one bucket cannot tell them apart. Splitting a
    bucket keeps its ratio for each piece (16 buckets of 1 MB out of 15 MB); merging keeps
    its unexplained time but does not multiply it by the bigger bucket's size. The cnn at
    4 Gbit/s: its 0.37 MB last bucket's all-reduce took 0.66-11.45 ms over ten steps where
    the calibration says 1.30 ms (``benchmarks/collective_gaps.py CELL/baseline
    CELL/comm.json --calls 20``); in step 7 the ratio carried from it (2.4x on rank 0,
    4.7x on rank 1) made fusion=16MB's one 2.5 MB bucket 12.2 and 23.9 ms where the model
    says 5.0 ms (``.result.graph.dur_ns`` of that what-if's gloo:all_reduce nodes;
    ``benchmarks/predict_cell.py`` on the cell: fusion=16..100MB -13 to -15% with the
    ratio, -2.6 to +0.1% with this). A ratio, so a bucket's two halves under DeAR
    (reduce-scatter, all-gather) carry it alike::

        stand-in 1.4 ms by the model, 3.4 ms measured (corr 2.4); new bucket 5.0 ms
        ratio: 5.0 * 2.4 = 12.1 ms   ->   5.0 * (1 + 1.4 * 1.4 / 5.0) = 7.0 ms
    """
    if model_ns <= stand_in_model_ns or model_ns <= 0:
        return float(corr)
    return 1.0 + (corr - 1.0) * stand_in_model_ns / model_ns
