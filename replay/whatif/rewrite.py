"""Re-plan DDP's gradient communication in a graph: new buckets, where each is issued,
and whether it is one all-reduce or DeAR's reduce-scatter + all-gather.

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
   model's, scaled by that bucket's measured transfer / model ratio (the contention it
   ran under carries over); a bucket the baseline had unchanged keeps its measured time;
4. all-reduce mode: every bucket -> the node DDP's ``finalize_backward`` waits in
   (HOST_WAIT). DeAR mode: the reduce-scatters are not waited for in backward; in each
   step's forward, before the first module that uses a bucket's parameters, an issue op
   and an all-gather (depending on the previous step's reduce-scatter of the bucket), and
   the module waits for it (PARAM_READY), as ``samples/train_dear.py`` does.

Before/after, rank 0 of one step, buckets {1 MB, 15 MB} -> ``fusion=4MB`` (four buckets
of 4.0 MB): two ``c10d::allreduce_`` + two ``gloo:all_reduce`` nodes become four of each,
the four all-reduces dealt in turn to gloo's two threads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from replay.whatif.gradients import GradientSync
from tracekit.errors import TracekitError
from tracekit.graph.edit import add_edges, add_nodes, new_coll_ids, remove_nodes, renumbering
from tracekit.graph.model import EdgeKind, Graph, NodeKind


@dataclass(frozen=True, kw_only=True)
class GradientPlan:
    """How a variant synchronizes gradients."""

    #: buckets as tuples of gradient positions (ready order), in issue order
    buckets: tuple[tuple[int, ...], ...]
    #: issue each bucket when its gradients are ready (DDP); False: all after backward
    overlap: bool = True
    #: DeAR: reduce-scatter in backward, all-gather before first use in the next forward
    dear: bool = False

    def same_as(self, sync: GradientSync) -> bool:
        return self.buckets == sync.buckets and self.overlap and not self.dear


@dataclass(frozen=True, kw_only=True)
class Rewritten:
    graph: Graph
    #: for every node of the new graph, its id in the old graph (-1: created here)
    origin: np.ndarray
    notes: list[str] = field(default_factory=list)


@dataclass
class _NewNodes:
    cols: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    n: int = 0

    def add(self, **kw) -> int:
        for k, v in {"bytes": -1, "coll_id": -1, **kw}.items():
            self.cols[k].append(v)
        self.n += 1
        return self.n - 1


def _lane_links(graph: Graph) -> tuple[dict[int, int], dict[int, int]]:
    lane = np.flatnonzero(graph.edge_kind == EdgeKind.LANE_ORDER)
    out_edge = {int(graph.src[e]): int(e) for e in lane}
    in_edge = {int(graph.dst[e]): int(e) for e in lane}
    return out_edge, in_edge


def _comm_anchor(graph: Graph, lane: int, first_old: int, removed: np.ndarray):
    """Where new collectives go on ``lane``: after the last kept node before the
    baseline's first bucket there, else before the first kept node after it."""
    on = np.flatnonzero(graph.lane == lane)
    before = on[(on < first_old) & ~removed[on]]
    if len(before):
        return "after", int(before[-1])
    after = on[(on > first_old) & ~removed[on]]
    if len(after):
        return "before", int(after[0])
    return "empty", lane


def _kept(graph: Graph, node: int, removed: np.ndarray, nxt: dict[int, int]) -> int:
    while node >= 0 and removed[node]:
        e = nxt.get(node)
        node = int(graph.dst[e]) if e is not None else -1
    return node


def splice(graph: Graph, inserts: list[tuple[str, int, list[int]]],
           lane_gap: dict[int, int] | None = None, lead: dict[int, int] | None = None) -> Graph:
    """Put new nodes on lane chains in bulk. Each insert is ``("after", node, [new...])``,
    ``("before", node, [new...])`` or ``("empty", lane, [new...])``; the new nodes are
    chained in the order given. The existing edge on the anchor's side keeps its delay;
    new links get ``lane_gap[lane]`` (0 when not given). ``lead[anchor]`` moves that much
    of an "after" anchor's outgoing delay onto the link into the first new node (the host
    time the baseline spent between the anchor and the op the new node replaces)."""
    lane_gap = lane_gap or {}
    lead = lead or {}
    delay = graph.delay_ns.copy()
    out_edge, in_edge = _lane_links(graph)
    src, dst = graph.src.copy(), graph.dst.copy()
    lane = graph.lane.copy()
    add_s, add_d, add_delay = [], [], []
    for where, anchor, nodes in inserts:
        if not nodes:
            continue
        chain_s, chain_d = nodes[:-1], nodes[1:]
        gap = lane_gap.get(int(anchor if where == "empty" else graph.lane[anchor]), 0)
        add_s += chain_s
        add_d += chain_d
        add_delay += [gap] * len(chain_s)
        if where == "after":
            lane[nodes] = lane[anchor]
            e = out_edge.get(anchor)
            moved = lead.get(anchor, 0)
            if e is not None:  # anchor -> next becomes last_new -> next (same delay)
                src[e] = nodes[-1]
                out_edge[nodes[-1]] = e
                moved = min(moved, int(delay[e])) if moved > 0 else 0
                delay[e] -= moved
            add_s.append(anchor)
            add_d.append(nodes[0])
            add_delay.append(gap + moved)
            out_edge[anchor] = -1  # further inserts after this anchor go after nodes[-1]
        elif where == "before":
            lane[nodes] = lane[anchor]
            e = in_edge.get(anchor)
            if e is not None and e >= 0:  # prev -> anchor becomes prev -> first_new
                dst[e] = nodes[0]
                in_edge[nodes[0]] = e
            add_s.append(nodes[-1])
            add_d.append(anchor)
            add_delay.append(gap)
            in_edge[anchor] = -1
        else:
            lane[nodes] = anchor
    g = replace(graph, src=src, dst=dst, delay_ns=delay, lane=lane.astype(graph.lane.dtype),
                notes=list(graph.notes))
    return add_edges(g, add_s, add_d, EdgeKind.LANE_ORDER, delay_ns=add_delay) if add_s else g


def _group_inserts(inserts: list[tuple[str, int, list[int]]]) -> list[tuple[str, int, list[int]]]:
    """Merge inserts at the same anchor (order kept), so each anchor is spliced once."""
    merged: dict[tuple[str, int], list[int]] = {}
    for where, anchor, nodes in inserts:
        merged.setdefault((where, anchor), []).extend(nodes)
    return [(w, a, ns) for (w, a), ns in merged.items()]


def _close_gaps(graph: Graph, nodes: list[int]) -> Graph:
    """Reset the lane-order delay into each of ``nodes`` to its lane's median delay."""
    lane_e = np.flatnonzero(graph.edge_kind == EdgeKind.LANE_ORDER)
    delay = graph.delay_ns.copy()
    into = {int(graph.dst[e]): int(e) for e in lane_e}
    for v in nodes:
        e = into.get(v)
        if e is None:
            continue
        same_lane = lane_e[graph.lane[graph.dst[lane_e]] == graph.lane[v]]
        delay[e] = min(int(delay[e]), max(int(np.median(graph.delay_ns[same_lane])), 0))
    return replace(graph, delay_ns=delay, notes=list(graph.notes))


def _first_use(sync: GradientSync, bucket: tuple[int, ...]) -> str:
    params = {sync.params[i].index for i in bucket}
    for module, ps in sync.forward_order:
        if params & set(ps):
            return module
    raise TracekitError(
        "dear needs to know which module first uses each bucket's parameters, and the "
        "manifest has no forward order for them; record the run with 'tracekit profile'")


def materialize(
    graph: Graph,
    sync: GradientSync,
    plan: GradientPlan,
    *,
    cost_ns: Callable[[str, int], float],
) -> Rewritten:
    """Apply ``plan`` to ``graph`` (see module doc). ``cost_ns(collective, bytes)`` is the
    transfer time of one collective on the run's group."""
    n_grads = len(sync.params)
    bucket_bytes = [sum(sync.params[i].bytes for i in b) for b in plan.buckets]
    # DDP launches buckets in index order: bucket i goes when buckets 0..i are all ready
    ready_pos = (np.maximum.accumulate([max(b) for b in plan.buckets]) if plan.overlap
                 else np.full(len(plan.buckets), n_grads - 1))
    removed = np.zeros(graph.n_nodes, dtype=bool)
    for rs in sync.per_rank_step.values():
        removed[rs.bucket_comm] = True
        removed[rs.bucket_issue] = True
    out_edge, _ = _lane_links(graph)
    nxt = {s: e for s, e in out_edge.items()}
    lane_in = {int(graph.dst[e]): (int(graph.src[e]), int(graph.delay_ns[e]))
               for e in np.flatnonzero(graph.edge_kind == EdgeKind.LANE_ORDER)}
    iss_sel = np.flatnonzero(graph.edge_kind == EdgeKind.ISSUE)
    issue_delay = {(int(graph.src[e]), int(graph.dst[e])): int(graph.delay_ns[e])
                   for e in iss_sel}
    steps = sorted({s for _, s in sync.per_rank_step})
    kinds = ("reduce_scatter", "all_gather") if plan.dear else ("all_reduce",)
    coll_base = int(new_coll_ids(graph, 1)[0])

    def coll_id(step: int, b: int, kind: str) -> int:
        return coll_base + (steps.index(step) * len(plan.buckets) + b) * len(kinds) + \
            kinds.index(kind)

    # --- anchors and per-(rank, step) facts, in old ids
    facts = {}
    for key, rs in sync.per_rank_step.items():
        # per baseline bucket: measured transfer / model (the contention it ran under)
        model = np.array([cost_ns("all_reduce", int(b)) for b in graph.bytes[rs.bucket_comm]])
        corr = np.where(model > 0, graph.dur_ns[rs.bucket_comm] / np.maximum(model, 1e-9), 1.0)
        anchors = {}
        for lane in rs.comm_lanes:
            first_old = int(min(c for c in rs.bucket_comm if graph.lane[c] == lane))
            anchors[lane] = _comm_anchor(graph, lane, first_old, removed)
        fallback = _kept(graph, rs.wait_target, removed, nxt) if rs.wait_target >= 0 else -1
        old = [(int(graph.bytes[c]), int(graph.dur_ns[c]), int(graph.lane[c]),
                issue_delay.get((int(i), int(c)), sync.issue_delay_ns), int(graph.dur_ns[i]),
                [(_kept(graph, int(w), removed, nxt), int(wd)) for w, wd in waits],
                lane_in.get(int(i), (-1, 0)))
               for c, i, waits in zip(rs.bucket_comm, rs.bucket_issue, rs.bucket_waits)]
        fwd = {}
        if plan.dear:
            for b, bucket in enumerate(plan.buckets):
                module = _first_use(sync, bucket)
                if module not in rs.forward_first:
                    raise TracekitError(
                        f"dear needs where module {module!r} starts its forward, but the trace "
                        f"of rank {rs.rank} step {rs.step} has no 'tracekit.fwd:{module}' "
                        "annotation; record the run with 'tracekit profile'")
                fwd[b] = rs.forward_first[module]
        facts[key] = (corr, anchors, fwd, old, (fallback, rs.wait_delay_ns))
    # new links on a comm lane get the lane's usual gap between work items
    is_lane = graph.edge_kind == EdgeKind.LANE_ORDER
    comm_lanes = {ln for rs in sync.per_rank_step.values() for ln in rs.comm_lanes}
    lane_gap = {}
    for ln in comm_lanes:
        d = graph.delay_ns[is_lane & (graph.lane[graph.dst] == ln)]
        lane_gap[ln] = max(int(np.median(d)), 0) if len(d) else 0
    g = remove_nodes(graph, removed)
    new_id = renumbering(removed)
    first_new = g.n_nodes

    nodes = _NewNodes()
    inserts: list[tuple[str, int, list[int]]] = []
    leads: dict[int, int] = {}
    edges: dict[EdgeKind, list[tuple[int, int, int]]] = defaultdict(list)
    rs_node: dict[tuple[int, int, int], int] = {}  # (rank, step, bucket) -> new RS id
    ag_node: dict[tuple[int, int, int], int] = {}
    p = sync.comm_prefix
    for (rank, step), rs in sorted(sync.per_rank_step.items()):
        corr, anchors, fwd, old, fallback = facts[(rank, step)]
        # each new bucket stands in for the baseline bucket that held its last gradient:
        # it is waited for where that one was (DDP's finalize goes bucket by bucket), and
        # the first one to stand in for it keeps its issue op's measured time (a
        # preempted c10d::allreduce_ can block for ms: kept once, not per new bucket)
        old_of = np.searchsorted(rs.bucket_last_grad, [max(b) for b in plan.buckets])
        old_of = np.minimum(old_of, len(old) - 1)
        first_of = {int(k): b for b, k in reversed(list(enumerate(old_of)))}
        lanes = list(rs.comm_lanes)
        comm_order: list[int] = []
        main_after: dict[int, list[int]] = defaultdict(list)
        main_before: dict[int, list[int]] = defaultdict(list)
        if plan.dear:  # all-gathers of this step's forward, before first use
            for b in sorted(range(len(plan.buckets)), key=lambda b: fwd[b]):
                before = int(new_id[fwd[b]])
                t0 = int(graph.start_ns[fwd[b]]) - 1  # first in its step window
                iss = nodes.add(lane=rs.lane, kind=int(NodeKind.LAUNCH), name="c10d::allgather_",
                                dur_ns=sync.issue_dur_ns, start_ns=t0, step=step, rank=rank)
                ag = nodes.add(lane=lanes[0], kind=int(NodeKind.COMM), name=f"{p}all_gather",
                               dur_ns=int(round(cost_ns("all_gather", bucket_bytes[b])
                                                * corr[int(old_of[b])])),
                               start_ns=t0, step=step, rank=rank, bytes=bucket_bytes[b],
                               coll_id=coll_id(step, b, "all_gather"))
                main_before[before].append(iss)
                comm_order.append(ag)
                edges[EdgeKind.ISSUE].append((iss, ag, sync.issue_delay_ns))
                edges[EdgeKind.PARAM_READY].append((ag, before, 0))
                ag_node[(rank, step, b)] = ag
        kind = "reduce_scatter" if plan.dear else "all_reduce"
        fixed_lane: dict[int, int] = {}
        for b, pos in enumerate(ready_pos):
            ready = int(rs.ready_nodes[pos])
            t0 = int(graph.start_ns[ready] + graph.dur_ns[ready])
            # a bucket the baseline had (same place, same bytes) keeps its measured timing
            same = (not plan.dear and b < len(old) and old[b][0] == bucket_bytes[b])
            k = int(old_of[b])
            dur = old[b][1] if same else int(round(cost_ns(kind, bucket_bytes[b]) * corr[k]))
            iss = nodes.add(lane=rs.lane, kind=int(NodeKind.LAUNCH),
                            name="c10d::reduce_scatter_" if plan.dear else "c10d::allreduce_",
                            dur_ns=old[k][4] if first_of[k] == b else sync.issue_dur_ns,
                            start_ns=t0, step=step, rank=rank)
            c = nodes.add(lane=lanes[0], kind=int(NodeKind.COMM), name=f"{p}{kind}",
                          dur_ns=dur, start_ns=t0, step=step, rank=rank,
                          bytes=bucket_bytes[b], coll_id=coll_id(step, b, kind))
            if same:
                fixed_lane[c] = old[b][2]
            if same and old[k][6][0] == ready and int(new_id[ready]) not in main_after:
                leads[int(new_id[ready]) + 0] = max(old[k][6][1], 0)
            main_after[int(new_id[ready])].append(iss)
            comm_order.append(c)
            edges[EdgeKind.ISSUE].append((iss, c, old[b][3] if same else sync.issue_delay_ns))
            # a bucket the baseline had is waited for exactly as it was (maybe not at
            # all); a new one where its stand-in was, else at DDP's finalize point
            waits = old[k][5] or ([] if same else [fallback])
            if not plan.dear:
                edges[EdgeKind.HOST_WAIT] += [(c, int(new_id[t]), dl) for t, dl in waits
                                              if t >= 0]
            rs_node[(rank, step, b)] = c
        for a, ns in main_after.items():
            inserts.append(("after", a, ns))
        for a, ns in main_before.items():
            inserts.append(("before", a, ns))
        per_lane: dict[int, list[int]] = defaultdict(list)
        for j, c in enumerate(comm_order):  # gloo's worker threads take turns
            lane = fixed_lane.get(c, lanes[j % len(lanes)])
            nodes.cols["lane"][c] = lane
            per_lane[lane].append(c)
        for lane, ns in per_lane.items():
            where, anchor = anchors[lane]
            inserts.append((where, int(new_id[anchor]) if where != "empty" else anchor, ns))
    if plan.dear:  # an all-gather needs the previous step's reduce-scatter of its bucket
        for (rank, step, b), ag in ag_node.items():
            i = steps.index(step)
            prev = rs_node.get((rank, steps[i - 1], b)) if i > 0 else None
            if prev is not None:
                edges[EdgeKind.COMM_DONE].append((prev, ag, 0))
    g, ids = add_nodes(g, **{k: np.asarray(v) for k, v in nodes.cols.items()})
    assert ids[0] == first_new
    shift = lambda i: i + first_new  # noqa: E731 - new local index -> node id
    resolved = []
    for where, anchor, ns in _group_inserts(inserts):
        # anchors are existing nodes (already new ids) or a lane; new nodes shift
        resolved.append((where, anchor, [shift(v) for v in ns]))
    g = splice(g, resolved, lane_gap, leads)
    # a wait the graph had left as a lane gap is now carried by wait edges: the gap goes
    gap_nodes = [int(new_id[_kept(graph, rs.gap_wait_target, removed, nxt)])
                 for rs in sync.per_rank_step.values() if rs.gap_wait_target >= 0]
    if gap_nodes:
        g = _close_gaps(g, gap_nodes)
    for kind, es in edges.items():  # sources are new nodes; ISSUE/COMM_DONE targets too
        s = [shift(a) for a, _, _ in es]
        d = [shift(b) if kind in (EdgeKind.ISSUE, EdgeKind.COMM_DONE) else b for _, b, _ in es]
        g = add_edges(g, s, d, kind, delay_ns=[dl for _, _, dl in es])
    origin = np.concatenate([np.flatnonzero(~removed), np.full(nodes.n, -1, dtype=np.int64)])
    notes = []
    if plan.dear and len(steps) > 0:
        notes.append(f"dear: the all-gathers of step {steps[0]} have no reduce-scatter before "
                     "them in the replayed window and start when issued")
    return Rewritten(graph=g, origin=origin, notes=notes)
