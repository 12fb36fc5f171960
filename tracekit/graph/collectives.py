"""Match the communication nodes of one collective instance across ranks.

Every comm node (an NCCL kernel, a ``gloo:*`` work item) belongs to a *channel* on its
rank: its process group when the trace names it (``pg_name``), else the stream it ran on
(NCCL) or the rank's gloo pool. Nodes of the same instance on different ranks share a
``coll_id``:

- by ``(process group, seq)`` when every node of the channel carries a sequence number;
- else by order of start within the channel on each rank (a channel runs its collectives
  in issue order). When ranks disagree on the count, order is matched step by step and
  steps that still disagree stay unmatched, reported in the notes.

An instance is kept only if it is plausible: one node per rank, the same collective, and
every participant started before any finished (a collective cannot end on one rank
before another rank joined). A channel where most instances fail that test (point-to-point
traffic, or ranks in different groups) is left unmatched altogether, and the notes say so.
A byte count that differs across ranks is reported, not hidden.

Waiting vs transfer, per instance: ``latest = max(start)``; each participant waited
``latest - start`` (``wait_ns``) and transferred ``done - latest`` (its ``dur_ns``), where
``done`` is the earliest evidence of completion on its rank: the event's end, or the start
of a host op that waited for it (HOST_WAIT) when that came first (and after ``latest``).
gloo marks the work's future complete, which releases ``work.wait()``, *before* it closes
the ``gloo:*`` event; on a busy 2-core machine the runloop thread is often descheduled in
between (up to 5 ms measured, while the waiting main thread had already resumed). The
excess stays in the trace as a gap after the node. Ranks are not forced to complete
together: a runloop thread descheduled before the future is complete really holds its
rank back. The last to arrive waited 0. A node with no matched peer keeps its measured
duration as transfer: with peers missing from the traces (an incomplete world) waiting
cannot be separated, and the notes say so.

Example, two ranks (µs)::

    rank 0  gloo:all_reduce [100, 900]     rank 1  gloo:all_reduce [300, 950]
    rank 1  main thread resumes from work.wait() at 910 (HOST_WAIT edge)
    -> coll_id 0 on both; latest 300; rank 0: wait 200, dur 600;
       rank 1: wait 0, dur 610 (its last 40 µs are host delay, a gap before its next op)
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tracekit.graph.draft import GraphDraft
from tracekit.graph.model import EdgeKind, NodeKind

#: a channel whose instances overlap in time less often than this is not matched at all
MIN_PLAUSIBLE_FRACTION = 0.5


def match_collectives(d: GraphDraft, *, world_size: int, ranks_present: list[int]) -> dict:
    """Fill ``d.coll_id`` and ``d.wait`` for every comm node; append notes. Returns counts."""
    ev = d.ev
    comm = np.flatnonzero(d.kind == NodeKind.COMM)
    stats = {"instances": 0, "matched": 0, "unmatched_nodes": 0, "bytes_mismatch": 0,
             "missing_peers": 0}
    if len(comm) == 0:
        return stats
    idx = d.index[comm]
    rank = ev.rank[idx]
    pg = np.array([ev.pg_names[c] for c in ev.pg_name[idx]], dtype=object)
    lanes = d.lanes
    on_gpu, lane_of = d.is_gpu[comm], d.lane[comm]
    channel = [
        f"pg {pg[i]}" if pg[i] else (f"stream {lanes[lane_of[i]].local_id}" if on_gpu[i]
                                     else "gloo")
        for i in range(len(comm))
    ]
    by_channel: dict[str, list[int]] = defaultdict(list)
    for i, ch in enumerate(channel):
        by_channel[ch].append(i)

    next_id = 0
    groups: list[np.ndarray] = []  # each: positions into `comm`
    for ch, members in sorted(by_channel.items()):
        members = np.asarray(members)
        instances, notes = _instances(d, comm, members, rank, ch)
        d.notes.extend(notes)
        multi = [g for g in instances if len(g) > 1]
        ok = [_plausible(d, comm[g]) for g in multi]
        if multi and np.mean(ok) < MIN_PLAUSIBLE_FRACTION:
            d.notes.append(
                f"collectives on {ch} do not line up in time across ranks "
                f"({sum(ok)} of {len(multi)} would overlap): point-to-point traffic or "
                "different groups; left unmatched and timed as measured")
            instances = [np.array([m]) for m in members]
        else:
            bad = len(multi) - sum(ok)
            if bad:
                d.notes.append(f"{bad} collective instance(s) on {ch} have a participant that "
                               "finished before another started; left unmatched")
            kept = []
            for g, good in zip(multi, ok):
                kept.extend([g] if good else [np.array([m]) for m in g])
            instances = kept + [g for g in instances if len(g) == 1]
        for g in instances:
            groups.append(g)
            d.coll_id[comm[g]] = next_id
            next_id += 1

    resume = _host_resume(d)
    present = set(ranks_present)
    for g in groups:
        nodes = comm[g]
        stats["instances"] += 1
        if len(nodes) == 1:
            stats["unmatched_nodes"] += 1
        else:
            stats["matched"] += 1
            latest = d.start[nodes].max()
            d.wait[nodes] = latest - d.start[nodes]
            d.end[nodes] = _completion(d, nodes, latest, resume)
            b = ev.comm_bytes[d.index[nodes]]
            if len(set(b[b >= 0].tolist())) > 1:
                stats["bytes_mismatch"] += 1
        size = int(ev.group_size[d.index[nodes]].max())
        expected = size if size > 0 else world_size
        if len(nodes) < expected and len(present) < world_size:
            stats["missing_peers"] += 1
    if stats["bytes_mismatch"]:
        d.notes.append(f"{stats['bytes_mismatch']} matched collective(s) move different byte "
                       "counts on different ranks: check that ranks ran the same model")
    if stats["missing_peers"]:
        d.notes.append(
            f"incomplete world: {stats['missing_peers']} collective(s) have peers missing from "
            f"the traces (ranks present: {len(present)} of {world_size}); their transfer time "
            "includes waiting for the absent ranks (cannot be separated)")
    return stats


def _host_resume(d: GraphDraft) -> np.ndarray:
    """Per node: the earliest start of a host op that waited for it (HOST_WAIT), else max."""
    resume = np.full(d.n, np.iinfo(np.int64).max, dtype=np.int64)
    src, dst = d.edges_of(EdgeKind.HOST_WAIT)
    from_comm = d.kind[src] == NodeKind.COMM
    np.minimum.at(resume, src[from_comm], d.start[dst[from_comm]])
    return resume


def _completion(d: GraphDraft, nodes: np.ndarray, latest: int, resume: np.ndarray) -> np.ndarray:
    """When one collective instance completed on each of its ranks (see module doc)."""
    woke = resume[nodes]
    early = (woke > latest) & (woke < d.end[nodes])
    return np.where(early, woke, d.end[nodes])


def _instances(d: GraphDraft, comm: np.ndarray, members: np.ndarray, rank: np.ndarray,
               ch: str) -> tuple[list[np.ndarray], list[str]]:
    """Group one channel's nodes (positions into ``comm``) into instances."""
    ev = d.ev
    notes: list[str] = []
    seq = ev.seq[d.index[comm[members]]]
    ranks = np.unique(rank[members])
    if len(ranks) == 1:
        return [np.array([m]) for m in members], notes
    if (seq >= 0).all():
        out: dict[int, list[int]] = defaultdict(list)
        for m, s in zip(members, seq):
            out[int(s)].append(int(m))
        groups = []
        for _seq, g in sorted(out.items()):
            rs = rank[g]
            if len(np.unique(rs)) == len(rs):
                groups.append(np.array(g))
            else:
                groups.extend(np.array([m]) for m in g)
        return groups, notes
    per_rank = {int(r): members[rank[members] == r] for r in ranks}
    per_rank = {r: m[np.argsort(d.start[comm[m]], kind="stable")] for r, m in per_rank.items()}
    counts = {r: len(m) for r, m in per_rank.items()}
    if len(set(counts.values())) == 1:
        k = next(iter(counts.values()))
        return [np.array([per_rank[r][i] for r in per_rank]) for i in range(k)], notes
    # counts differ: match step by step
    steps = ev.step[d.index[comm]]
    groups = []
    bad_steps = []
    for s in sorted(set(steps[members].tolist())):
        in_step = {r: m[steps[m] == s] for r, m in per_rank.items()}
        c = {r: len(m) for r, m in in_step.items() if len(m)}
        if len(set(c.values())) == 1 and len(c) == len(per_rank):
            k = next(iter(c.values()))
            groups.extend(np.array([in_step[r][i] for r in in_step]) for i in range(k))
        else:
            bad_steps.append((s, c))
            groups.extend(np.array([m]) for r in in_step for m in in_step[r])
    total = ", ".join(f"rank {r}: {n}" for r, n in sorted(counts.items()))
    if bad_steps:
        detail = "; ".join(
            f"step {s}: " + ", ".join(f"rank {r} {n}" for r, n in sorted(c.items()))
            for s, c in bad_steps[:3])
        notes.append(f"collective count differs across ranks on {ch} ({total}); unmatched in "
                     f"{len(bad_steps)} step(s) ({detail}): those are timed as measured")
    return groups, notes


def _plausible(d: GraphDraft, nodes: np.ndarray) -> bool:
    """Every participant started before any finished, and all run the same collective."""
    colls = set(d.ev.collective[d.index[nodes]].tolist())
    return len(colls) == 1 and d.start[nodes].max() < d.end[nodes].min()
