"""Find DDP's gradient synchronization in a graph: which gradient becomes ready where,
which bucket collectives carry them, and what waits for them.

The fusion, overlap and DeAR what-ifs re-plan exactly this part of a step, so it is read
once per run (:func:`find_gradient_sync`) into a :class:`GradientSync`:

- **gradients**, one per trainable parameter, in the order they become ready. Each step's
  backward runs one ``AccumulateGrad`` per parameter on the autograd thread (the main
  thread on CPU); the k-th one of a step is the k-th parameter in ready order. The ready
  order is DDP's own (its rebuilt buckets, from the manifest), else reverse registration
  order (DDP's approximation), and sizes come from the manifest's parameter table.
  Without a manifest, gradients are anonymous and each baseline bucket's bytes are split
  evenly over its gradients (an assumption the notes state).
- **bucket collectives**: all-reduces issued by DDP's autograd hook, i.e. whose issue
  node (the source of the ISSUE or LAUNCH edge into the comm node) follows an
  ``AccumulateGrad`` on the same thread with only DDP hook work in between
  (``reducer::``, copies, views). The bucket ends at that gradient.
- **waits**: per bucket, the targets of its wait edges (HOST_WAIT, COMM_DONE,
  STREAM_WAIT) after the last issue (DDP's ``finalize_backward`` waits bucket by bucket);
  when the graph inferred none, a long lane gap after the last issue during which the
  last bucket transferred is taken as that wait (on a busy CPU the gloo event's recorded
  end can lag the host's wake-up by milliseconds, so the graph's own inference misses
  it); the sync point for new buckets is the earliest of them, else the node after the
  last issue.
- **forward first use** (for DeAR): with ``tracekit profile``'s ``tracekit.fwd:<module>``
  annotations, the first node of each module's forward per rank and step.
- **optimizer** (for DeAR): the backward lane's nodes inside torch.optim's
  ``Optimizer.step#...`` annotation, per rank and step.

Before (rank 0, step 6 of a 16-layer MLP, DDP buckets 1 MB + 15 MB)::

    264 torch::autograd::AccumulateGrad   265 reducer::mul_out   266 c10d::allreduce_ -> 1101 gloo:all_reduce
    ...
    341 torch::autograd::AccumulateGrad   342 reducer::mul_out   343 c10d::allreduce_ -> 1106 gloo:all_reduce
    1106 --HOST_WAIT--> 348 aten::as_strided

After: ``RankStepSync(grad_nodes=[262, 264, 269, ...], bucket_comm=[1101, 1106],
bucket_issue=[266, 343], bucket_last_grad=[1, 31], bucket_waits=((), ((348, 60813),)),
wait_target=348, ...)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from replay.whatif.bucketing import ParamSpec
from tracekit.core.collectives import normalize_collective
from tracekit.errors import TracekitError
from tracekit.graph.model import EdgeKind, Graph, NodeKind
from tracekit.log import get_logger

log = get_logger(__name__)

_ACCUMULATE = "AccumulateGrad"
#: nodes that may sit between a gradient's AccumulateGrad and DDP's collective issue
_HOOK_WORK = re.compile(r"reducer|mul_out|copy|as_strided|view|detach|div|AccumulateGrad|"
                        r"record_param_comms|empty|zero", re.IGNORECASE)
_WAIT_EDGES = (EdgeKind.HOST_WAIT, EdgeKind.COMM_DONE, EdgeKind.STREAM_WAIT)
_ISSUE_EDGES = (EdgeKind.ISSUE, EdgeKind.LAUNCH)
FWD_PREFIX = "tracekit.fwd:"
#: torch.optim's profiler annotation of ``optimizer.step()`` (``Optimizer.step#SGD.step``)
OPTIMIZER_PREFIX = "Optimizer.step#"


@dataclass(frozen=True, kw_only=True)
class RankStepSync:
    """Gradient synchronization of one rank in one step (node ids of the graph)."""

    rank: int
    step: int
    #: the thread that runs backward (AccumulateGrad) and issues the collectives
    lane: int
    #: AccumulateGrad node of each gradient, in ready order
    grad_nodes: np.ndarray
    #: per gradient, the node after which DDP would issue a bucket that this gradient
    #: completes: the AccumulateGrad or the hook work right after it (``reducer::mul_out``)
    ready_nodes: np.ndarray
    #: baseline bucket collectives, in issue order, and their issue nodes
    bucket_comm: np.ndarray
    bucket_issue: np.ndarray
    #: position in ``grad_nodes`` of each bucket's last gradient
    bucket_last_grad: np.ndarray
    #: the node that waits until every bucket is reduced (-1: none found) and the delay
    #: of that wait edge
    wait_target: int
    wait_delay_ns: int
    #: per baseline bucket: the nodes that waited for it (DDP's finalize waits bucket by
    #: bucket, copying each one's results in between) with each wait edge's delay;
    #: empty where nothing waited for the bucket (it finished before the host needed it)
    bucket_waits: tuple[tuple[tuple[int, int], ...], ...]
    #: a wait on the buckets the graph left as a lane-order gap (no wait edge was
    #: inferred): the node after the gap; its lane-order delay is reset to the lane's usual
    #: one when the buckets are re-planned (the wait edges above then carry the wait); -1
    gap_wait_target: int
    #: comm lanes the bucket collectives ran on, in order of first use
    comm_lanes: tuple[int, ...]
    #: module qualname -> first node of its forward in this step (DeAR); {} unknown
    forward_first: dict[str, int] = field(default_factory=dict)
    #: nodes of ``lane`` inside this step's ``Optimizer.step#`` annotation (DeAR moves
    #: them); empty when the trace has none
    optimizer_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True, kw_only=True)
class GradientSync:
    """DDP's gradient synchronization in every replayed step of every rank."""

    #: one entry per gradient in ready order: index (parameter index), bytes, dtype
    params: tuple[ParamSpec, ...]
    #: baseline buckets as tuples of positions in ready order
    buckets: tuple[tuple[int, ...], ...]
    per_rank_step: dict[tuple[int, int], RankStepSync]
    #: parameter index -> module that owns it ('' unknown)
    param_module: dict[int, str]
    #: modules in forward order with their parameter indices (from the manifest)
    forward_order: tuple[tuple[str, tuple[int, ...]], ...]
    #: median duration of the host op that issues a collective, and of ISSUE edge delays
    issue_dur_ns: int
    issue_delay_ns: int
    #: the name pattern of the run's comm nodes, e.g. 'gloo:' or 'nccl:'
    comm_prefix: str
    #: DDP's bucket limits in the run (manifest), for the notes; None unknown
    bucket_cap_mb: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def ready_order(self) -> list[int]:
        return [p.index for p in self.params]

    @property
    def bucket_bytes(self) -> list[int]:
        return [sum(self.params[i].bytes for i in b) for b in self.buckets]


def _node_all_reduce(graph: Graph) -> np.ndarray:
    """Per node, whether its name normalizes to the collective ``all_reduce``."""
    names = np.array([normalize_collective(n) == "all_reduce" for n in graph.names] or [False],
                     dtype=bool)
    return names[graph.name]


def _rank_step_groups(rank: np.ndarray, step: np.ndarray):
    """``(rank, step, nodes)`` for every (rank, step) of the nodes, in ascending order,
    each group's node ids ascending (what ``groupby([rank, step])`` over the node ids
    gives), without a sort of the whole graph: a built graph's nodes are sorted by rank,
    so one rank at a time."""
    n = len(rank)
    if n == 0:
        return
    by_rank = None
    if not bool((rank[1:] >= rank[:-1]).all()):
        by_rank = np.argsort(rank, kind="stable")
    sorted_rank = rank if by_rank is None else rank[by_rank]
    cuts = np.flatnonzero(sorted_rank[1:] != sorted_rank[:-1]) + 1
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), n]):
        ids = np.arange(lo, hi) if by_rank is None else by_rank[lo:hi]
        st = step[ids]
        o = np.argsort(st, kind="stable")
        st = st[o]
        scuts = np.flatnonzero(st[1:] != st[:-1]) + 1
        for a, b in zip([0, *scuts.tolist()], [*scuts.tolist(), len(ids)]):
            yield sorted_rank[lo], st[a], ids[o[a:b]]


def _in_edge_source(graph: Graph, kinds) -> np.ndarray:
    """Per node, the source of its (last) incoming edge of ``kinds``; -1 none."""
    sel = np.flatnonzero(np.isin(graph.edge_kind, [int(k) for k in kinds]))
    out = np.full(graph.n_nodes, -1, dtype=np.int64)
    dst = graph.dst[sel]
    order = None  # the edges of a built graph are sorted by target: no sort
    if len(dst) > 1 and not bool((dst[1:] >= dst[:-1]).all()):
        order = np.argsort(dst, kind="stable")
        dst = dst[order]
    # per target, its last edge: the end of its run (a stable sort keeps edge order)
    ends = np.flatnonzero(np.append(dst[1:] != dst[:-1], True)) if len(dst) else dst
    last = sel[ends] if order is None else sel[order[ends]]
    out[graph.dst[last]] = graph.src[last]
    return out


def _by_target(graph: Graph, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges where ``mask`` holds, sorted by target (stable), and their targets."""
    sel = np.flatnonzero(mask)
    sel = sel[np.argsort(graph.dst[sel], kind="stable")]
    return sel, graph.dst[sel]


def module_annotations(run, prefix: str = FWD_PREFIX) -> pd.DataFrame:
    """``<prefix><module>`` annotations of the run (``tracekit.fwd:`` by default; any
    name prefix, e.g. ``Optimizer.step#``): rank, step, module (the name after the
    prefix), ts_ns, end_ns."""
    ev = run.events
    names = ev["name"]
    cats = [c for c in names.cat.categories if str(c).startswith(prefix)] if hasattr(
        names, "cat") else sorted({n for n in names.astype(str) if n.startswith(prefix)})
    ann = ev[names.isin(cats)] if cats else ev.iloc[:0]
    return pd.DataFrame({"rank": ann["rank"].to_numpy(), "step": ann["step"].to_numpy(),
                         "module": [str(n)[len(prefix):] for n in ann["name"]],
                         "ts_ns": ann["ts_ns"].to_numpy(),
                         "end_ns": ann["ts_ns"].to_numpy() + ann["dur_ns"].to_numpy()})


def _optimizer_nodes(spans: dict, graph: Graph, rank: int, step: int,
                     lane_nodes: np.ndarray) -> np.ndarray:
    """Nodes of the lane, in this step, that start inside an ``Optimizer.step#`` span."""
    mine = spans.get((rank, step))
    if mine is None or mine.empty:
        return np.zeros(0, dtype=np.int64)
    on_lane = lane_nodes[graph.step[lane_nodes] == step]
    starts = graph.start_ns[on_lane]
    inside = np.zeros(len(on_lane), dtype=bool)
    for t0, t1 in zip(mine["ts_ns"], mine["end_ns"]):
        inside |= (starts >= t0) & (starts < t1)
    return on_lane[inside].astype(np.int64)


def first_nodes(ann: dict, graph: Graph, rank: int, step: int,
                lane_nodes: np.ndarray) -> dict[str, int]:
    """Module -> the first node of the lane at or after its annotation began (``ann``:
    :func:`module_annotations` grouped by rank and step)."""
    return _forward_first(ann, graph, rank, step, lane_nodes)


def _forward_first(ann: dict, graph: Graph, rank: int, step: int,
                   lane_nodes: np.ndarray) -> dict[str, int]:
    """Module -> the first node of the lane at or after its forward annotation began."""
    mine = ann.get((rank, step))
    if mine is None or mine.empty:
        return {}
    on_lane = lane_nodes[graph.step[lane_nodes] == step]
    starts = graph.start_ns[on_lane]
    out: dict[str, int] = {}
    for module, ts in zip(mine["module"], mine["ts_ns"]):
        i = int(np.searchsorted(starts, ts, side="left"))
        if i < len(on_lane) and module not in out:
            out[module] = int(on_lane[i])
    return out


#: a lane gap after the last issue counts as DDP's wait when it is at least this long ...
MIN_GAP_NS = 1_000_000
#: ... and the last bucket's transfer covers at least this fraction of it
MIN_GAP_OVERLAP = 0.5


def _unexplained_wait(graph: Graph, lane_nodes: np.ndarray, last_issue_pos: int,
                      comms: np.ndarray, lane_in_delay: np.ndarray) -> int:
    """The node after the longest lane gap following the last issue, when the host sat
    idle there while the last bucket collective transferred (a wait the graph did not
    infer: on a busy CPU the gloo event's recorded end can lag the host's wake-up by
    milliseconds); -1 when there is none."""
    after = lane_nodes[last_issue_pos + 1:]
    if len(after) == 0:
        return -1
    gaps = lane_in_delay[after]
    k = int(np.argmax(gaps))
    gap, node = int(gaps[k]), int(after[k])
    if gap < MIN_GAP_NS:
        return -1
    gap_end = int(graph.start_ns[node])
    last = comms[np.argmax(graph.measured_end_ns[comms])]
    t_start = int(graph.start_ns[last] + graph.wait_ns[last])
    t_end = t_start + int(graph.dur_ns[last])
    covered = min(gap_end, t_end) - max(gap_end - gap, t_start)
    return node if covered >= MIN_GAP_OVERLAP * gap else -1


def _params_from_manifest(run, n_grads: int) -> tuple[list[ParamSpec], dict[int, str]] | None:
    m = run.manifest
    if m is None or not m.parameters:
        return None
    by_index = {p.index: p for p in m.parameters if p.requires_grad}
    if len(by_index) != n_grads:
        return None
    order = [i for b in m.ddp_buckets for i in b] if m.ddp_buckets else []
    if sorted(order) != sorted(by_index):
        order = sorted(by_index, reverse=True)
    params = [ParamSpec(index=i, bytes=by_index[i].bytes, dtype=by_index[i].dtype or "float32")
              for i in order]
    return params, {i: p.module for i, p in by_index.items()}


def find_gradient_sync(run, graph: Graph) -> GradientSync:
    """Read DDP's gradient synchronization from ``graph`` (built by ``build_graph`` from
    ``run``: node ids in lane order). Raises :class:`TracekitError` when the run has no
    DDP-style gradient all-reduces."""
    index = _GraphIndex.of(graph)
    per: dict[tuple[int, int], RankStepSync] = {}
    counts = set()
    bucket_layouts = set()
    sizes_by_layout: dict[tuple, list] = {}
    issue_durs, issue_delays = [], []
    prefix = "gloo:"
    ann = module_annotations(run)
    annotations = {key: g for key, g in ann.groupby(["rank", "step"])} if len(ann) else {}
    opt = module_annotations(run, OPTIMIZER_PREFIX)
    optimizer = {key: g for key, g in opt.groupby(["rank", "step"])} if len(opt) else {}
    for rank, step, nodes in _rank_step_groups(graph.rank, graph.step):
        if step < 0:
            continue
        rs = _rank_step_sync(graph, index, annotations, int(rank), int(step), nodes,
                             optimizer)
        if rs is None:
            continue
        comms, issues, lasts = rs.bucket_comm, rs.bucket_issue, rs.bucket_last_grad
        issue_durs += [int(graph.dur_ns[i]) for i in issues]
        issue_delays += graph.delay_ns[index.edges_into(index.issue_edges, comms)].tolist()
        prefix = graph.names[graph.name[comms[0]]].split(":")[0] + ":" if ":" in \
            graph.names[graph.name[comms[0]]] else "nccl:"
        per[(int(rank), int(step))] = rs
        counts.add(len(rs.grad_nodes))
        layout = tuple(lasts.tolist())
        bucket_layouts.add(layout)
        sizes_by_layout.setdefault(layout, []).append(graph.bytes[comms].tolist())
    n_grads, lasts = _common_bucket_layout(per, counts, bucket_layouts)
    buckets = tuple(tuple(range(a + 1, b + 1)) for a, b in zip([-1, *lasts[:-1]], lasts))
    params, module_of, notes = _gradient_params(run, n_grads, buckets,
                                                sizes_by_layout[tuple(lasts)])
    m = run.manifest
    forward = tuple((mod, tuple(ps)) for mod, ps in (m.forward_order if m else []))
    return GradientSync(
        params=tuple(params), buckets=buckets, per_rank_step=per, param_module=module_of,
        forward_order=forward,
        issue_dur_ns=int(np.median(issue_durs)) if issue_durs else 0,
        issue_delay_ns=max(int(np.median(issue_delays)), 0) if issue_delays else 0,
        comm_prefix=prefix, bucket_cap_mb=m.bucket_cap_mb if m else None, notes=notes)


@dataclass(frozen=True, kw_only=True)
class _GraphIndex:
    """What :func:`find_gradient_sync` looks up in the whole graph, computed once."""

    all_reduce: np.ndarray  #: per node, its normalized collective name is 'all_reduce'
    names: np.ndarray  #: the name table as an object array
    is_accg: np.ndarray  #: per node, an AccumulateGrad
    issue_of: np.ndarray  #: per node, the node that issued it (ISSUE / LAUNCH), -1
    #: wait edges (HOST_WAIT, COMM_DONE, STREAM_WAIT) sorted by target, and their targets
    wait_edges: tuple[np.ndarray, np.ndarray]
    #: ISSUE and LAUNCH edges sorted by target, and their targets
    issue_edges: tuple[np.ndarray, np.ndarray]
    lane_in_delay: np.ndarray  #: per node, the delay of its lane-order edge in (0 none)
    #: node ids sorted by lane (stable; None when the ids are: a built graph), and where
    #: each lane's run starts
    by_lane: tuple[np.ndarray | None, np.ndarray]

    @classmethod
    def of(cls, graph: Graph) -> _GraphIndex:
        names = np.array(graph.names or [""], dtype=object)
        lane_e = graph.edge_kind == EdgeKind.LANE_ORDER
        lane_in_delay = np.zeros(graph.n_nodes, dtype=np.int64)
        lane_in_delay[graph.dst[lane_e]] = graph.delay_ns[lane_e]
        lane = graph.lane
        order = None if bool((lane[1:] >= lane[:-1]).all()) else np.argsort(lane, kind="stable")
        starts = np.searchsorted(lane if order is None else lane[order],
                                 np.arange(len(graph.lanes) + 1))
        return cls(
            all_reduce=_node_all_reduce(graph),
            names=names,
            is_accg=np.array([_ACCUMULATE in n for n in names], dtype=bool)[graph.name],
            issue_of=_in_edge_source(graph, _ISSUE_EDGES),
            wait_edges=_by_target(graph, np.isin(graph.edge_kind,
                                                 [int(k) for k in _WAIT_EDGES])),
            issue_edges=_by_target(graph, np.isin(graph.edge_kind,
                                                  [int(k) for k in _ISSUE_EDGES])),
            lane_in_delay=lane_in_delay, by_lane=(order, starts))

    def lane_nodes(self, lane: int) -> np.ndarray:
        """The nodes of ``lane``, in id order."""
        order, starts = self.by_lane
        if order is None:
            return np.arange(starts[lane], starts[lane + 1])
        return order[starts[lane]:starts[lane + 1]]

    @staticmethod
    def edges_into(edges: tuple[np.ndarray, np.ndarray], targets: np.ndarray) -> np.ndarray:
        """Of ``edges`` (sorted by target), those into any of ``targets``, by target."""
        sel, dst = edges
        lo = np.searchsorted(dst, targets, side="left")
        hi = np.searchsorted(dst, targets, side="right")
        parts = [sel[a:b] for a, b in zip(lo.tolist(), hi.tolist()) if b > a]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def may_precede_issue(self, graph: Graph, v: int) -> bool:
        """Whether node ``v`` may sit between a gradient's AccumulateGrad and DDP's issue
        of its bucket: anything but compute, or compute that is DDP hook work."""
        return not (graph.kind[v] == NodeKind.COMPUTE
                    and not _HOOK_WORK.search(self.names[graph.name[v]]))


@dataclass(frozen=True, kw_only=True)
class _BackwardLane:
    """The thread that runs backward in one rank's step, and its gradients on it."""

    lane: int
    accg: np.ndarray  #: its AccumulateGrad nodes, in order (the gradients)
    lane_nodes: np.ndarray  #: every node of the step on the lane, in order
    pos_in_lane: dict[int, int]  #: node -> position in ``lane_nodes``
    grad_pos: dict[int, int]  #: AccumulateGrad node -> gradient position


def _backward_lane(graph: Graph, index: _GraphIndex, nodes: np.ndarray) -> _BackwardLane | None:
    """The lane with most of the step's AccumulateGrads; None when there are none."""
    accg = nodes[index.is_accg[nodes]]
    if len(accg) == 0:
        return None
    lane = int(pd.Series(graph.lane[accg]).mode().iloc[0])
    accg = accg[graph.lane[accg] == lane]
    lane_nodes = nodes[graph.lane[nodes] == lane]
    return _BackwardLane(lane=lane, accg=accg, lane_nodes=lane_nodes,
                         pos_in_lane={int(v): i for i, v in enumerate(lane_nodes)},
                         grad_pos={int(v): i for i, v in enumerate(accg)})


def _rank_step_sync(graph: Graph, index: _GraphIndex, annotations: dict, rank: int,
                    step: int, nodes: np.ndarray, optimizer: dict | None = None
                    ) -> RankStepSync | None:
    """Gradient synchronization of one rank's step (``nodes``: the step's nodes on that
    rank); None when it has no gradients or no bucket collectives."""
    bl = _backward_lane(graph, index, nodes)
    if bl is None:
        return None
    found = _bucket_collectives(graph, index, nodes, bl)
    if found is None:
        return None
    comms, issues, lasts = found
    bucket_waits, wait_target, gap_target = _bucket_waits(graph, index, rank, bl, comms,
                                                          issues)
    return RankStepSync(
        rank=rank, step=step, lane=bl.lane, grad_nodes=bl.accg,
        ready_nodes=_ready_nodes(graph, index, bl), bucket_comm=comms,
        bucket_issue=issues, bucket_last_grad=lasts, wait_target=wait_target,
        wait_delay_ns=0, bucket_waits=bucket_waits, gap_wait_target=gap_target,
        comm_lanes=tuple(dict.fromkeys(int(graph.lane[c]) for c in comms)),
        forward_first=_forward_first(annotations, graph, rank, step,
                                     index.lane_nodes(bl.lane)),
        optimizer_nodes=_optimizer_nodes(optimizer or {}, graph, rank, step,
                                         index.lane_nodes(bl.lane)))


def _bucket_collectives(graph: Graph, index: _GraphIndex, nodes: np.ndarray,
                        bl: _BackwardLane):
    """``(comms, issues, lasts)`` in issue order: the all-reduces issued on the backward
    lane right after an AccumulateGrad (only DDP hook work in between), their issue
    nodes and the position of that gradient; None when there are none."""
    comms, issues, lasts = [], [], []
    lane_nodes, grad_pos = bl.lane_nodes, bl.grad_pos
    for c in nodes[(graph.kind[nodes] == NodeKind.COMM) & index.all_reduce[nodes]]:
        iss = int(index.issue_of[c])
        if iss < 0 or iss not in bl.pos_in_lane:
            continue
        k = bl.pos_in_lane[iss] - 1  # walk back over DDP hook work to an AccumulateGrad
        while k >= 0 and int(lane_nodes[k]) not in grad_pos:
            if not index.may_precede_issue(graph, int(lane_nodes[k])):
                k = -1
                break
            k -= 1
        if k < 0:
            continue
        comms.append(int(c))
        issues.append(iss)
        lasts.append(grad_pos[int(lane_nodes[k])])
    if not comms:
        return None
    order = np.argsort(graph.start_ns[np.array(issues)], kind="stable")
    return np.array(comms)[order], np.array(issues)[order], np.array(lasts)[order]


def _bucket_waits(graph: Graph, index: _GraphIndex, rank: int, bl: _BackwardLane,
                  comms: np.ndarray, issues: np.ndarray):
    """``(bucket_waits, wait_target, gap_target)`` of one rank's step: per bucket the
    (node, delay) of the wait edges after the last issue, the earliest such node (else the
    node after the last issue, -1 none), and the node after an unexplained lane gap that
    stands for the wait when the graph inferred none (-1 none)."""
    comm_pos = {int(c): k for k, c in enumerate(comms)}
    lane, lane_nodes, pos_in_lane = bl.lane, bl.lane_nodes, bl.pos_in_lane
    # DDP's finalize_backward waits after the last issue: wait edges into earlier
    # nodes (gaps the graph explained by an early bucket) are not that point
    last_issue = int(issues[-1])
    per_bucket: dict[int, list[tuple[int, int, int]]] = {}
    into = index.edges_into(index.wait_edges, index.lane_nodes(lane))
    into = into[graph.dst[into] > last_issue]
    for src_, d, dl in zip(graph.src[into], graph.dst[into], graph.delay_ns[into]):
        if graph.rank[d] == rank and int(src_) in comm_pos:
            per_bucket.setdefault(comm_pos[int(src_)], []).append(
                (int(graph.start_ns[d]), int(d), int(dl)))
    if per_bucket:
        _, wait_target, _ = min(min(v) for v in per_bucket.values())
    else:
        after = pos_in_lane[last_issue] + 1
        wait_target = int(lane_nodes[after]) if after < len(lane_nodes) else -1
    gap_target = -1
    if not per_bucket:  # DDP's finalize must wait: look for a gap the graph left
        gap_target = _unexplained_wait(graph, lane_nodes, pos_in_lane[last_issue], comms,
                                       index.lane_in_delay)
        if gap_target >= 0:
            wait_target = gap_target
            ends = graph.measured_end_ns
            for k, c in enumerate(comms):
                end = int(ends[c])
                per_bucket[k] = [(int(graph.start_ns[gap_target]), gap_target,
                                  int(graph.start_ns[gap_target]) - end)]
    bucket_waits = tuple(tuple((d, dl) for _, d, dl in sorted(per_bucket.get(k, [])))
                         for k in range(len(comms)))
    return bucket_waits, wait_target, gap_target


def _ready_nodes(graph: Graph, index: _GraphIndex, bl: _BackwardLane) -> np.ndarray:
    """Per gradient, the last node of the DDP hook work right after its AccumulateGrad
    (the AccumulateGrad itself when none follows)."""
    lane_nodes = bl.lane_nodes
    ready_nodes = bl.accg.copy()
    for j, a in enumerate(bl.accg):
        k = bl.pos_in_lane[int(a)] + 1
        while k < len(lane_nodes):
            v = int(lane_nodes[k])
            if (v in bl.grad_pos or graph.kind[v] != NodeKind.COMPUTE
                    or not _HOOK_WORK.search(index.names[graph.name[v]])):
                break
            ready_nodes[j] = v
            k += 1
    return ready_nodes


def _common_bucket_layout(per: dict, counts: set[int],
                          bucket_layouts: set[tuple]) -> tuple[int, list[int]]:
    """``(n_grads, lasts)``, the gradient count and bucket layout every rank's step
    shares; raises :class:`TracekitError` when there is none, or they differ."""
    if not per:
        raise TracekitError(
            "found no DDP gradient all-reduces (collectives issued from backward right after "
            "an AccumulateGrad) in this run; fusion, overlap and dear apply to DDP training "
            "runs: record one with 'tracekit profile -- torchrun ... train.py'")
    if len(counts) != 1 or len(bucket_layouts) != 1:
        raise TracekitError(
            f"backward differs between steps or ranks ({sorted(counts)} gradients, "
            f"{len(bucket_layouts)} bucket layouts); replay steps with the same structure, "
            "e.g. --step 6 --step 7")
    n_grads = counts.pop()
    lasts = list(bucket_layouts.pop())
    if sorted(lasts) != lasts or lasts[-1] != n_grads - 1:
        raise TracekitError(
            f"DDP's bucket collectives do not cover every gradient in order (last gradients "
            f"{lasts} of {n_grads}); the run may use find_unused_parameters or a custom hook")
    return n_grads, lasts


def _gradient_params(run, n_grads: int, buckets: tuple[tuple[int, ...], ...],
                     sizes: list[list[int]]) -> tuple[list[ParamSpec], dict[int, str], list[str]]:
    """``(params, module_of, notes)``: the gradients in ready order with their sizes
    (the manifest's parameter table, else an even share of each bucket's median bytes
    in the trace, ``sizes``), each parameter's module, and notes on either."""
    notes: list[str] = []
    from_manifest = _params_from_manifest(run, n_grads)
    if from_manifest is not None:
        params, module_of = from_manifest
        measured = [int(x) for x in np.median(sizes, axis=0)]
        expected = [sum(params[i].bytes for i in b) for b in buckets]
        if expected != measured:
            notes.append(f"bucket bytes in the trace {measured} differ from the manifest's "
                         f"parameters {expected}; using the manifest's sizes")
    else:
        medians = np.median(sizes, axis=0)
        params, module_of = [], {}
        for b, size in zip(buckets, medians):
            for i in b:
                params.append(ParamSpec(index=i, bytes=max(int(size) // len(b), 1)))
        notes.append(f"no parameter table (no manifest): each of the {n_grads} gradients is "
                     "assumed to hold an equal share of its bucket's bytes; record with "
                     "'tracekit profile' for exact sizes")
    return params, module_of, notes
