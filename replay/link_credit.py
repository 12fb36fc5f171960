"""A link's burst credit: how much faster a collective runs after the link sat idle.

A link shaped by a token bucket (``tc tbf``, cloud instances' burst networking, the
emulated cluster of ``benchmarks/cluster.py`` with its 1 MB bucket) lets an idle link's
first bytes through at once and the rest at its rate. ``tracekit calibrate`` times its
curves on a busy link (each call right after an untimed all-reduce, as in a training
step where buckets follow each other), then times one large all-reduce both ways
(``link_credit`` in the worker's raw document, :mod:`collectors.calibrate_worker`): on a
busy link and after an idle pause long enough to refill the bucket. The difference is
what a full bucket is worth, in seconds of transfer (``burst_s``): a collective that
follows an idle gap of at least that long runs up to ``burst_s`` faster than the
calibrated curve says. On an unshaped link it is small but need not be 0: on plain
loopback, where gloo is CPU-bound, an 8 MB all-reduce right after another took 18.6 ms
and 11.9 ms after 0.25 s idle (this machine, 2 cores).

Before/after (illustrative figures, those of ``tests/test_calibration.py``: 5 calls
each of an 8 MB all-reduce; ms, the fastest rank's time per call, as the curves read
it)::

    drained  [36.1, 35.8, 36.4, 36.0, 35.9]   idle (0.25 s)  [34.2, 34.0, 34.3, 33.9, 34.1]
    -> {"busy_ms": 36.0, "idle_ms": 34.1, "burst_s": 0.0019, "lower_bound": False}

The credit is the median over the pairs (each busy call and the idle call after it) of
what the idle call saved, counted only when the idle call won so many pairs that a link
without credit (each idle call as likely slower as faster) would win that many once in 20
runs or less (a one-sided binomial test: of 30 pairs, 20; of 10, 9). A fixed share of
10 pairs (8, the rule before) missed a real bucket about once in three calibrations: at
2 Gbit/s one calibration found 3.9 ms of credit and the next, with the same busy and idle
medians (32.9 / 27.9 and 31.9 / 28.1 ms), none, and FSDP2's predicted step on the mlp
moved by 30%. ``wins`` and ``pairs`` are kept. ``lower_bound`` says the idle call was
mostly within the burst (under a quarter of the busy time), so the bucket may hold more
than the probe measured. On the emulated link the busy calls themselves vary (a 4 MB
all-reduce at 200 Mbit/s: 276-336 ms), so it takes several pairs: six gave 49-66 ms where
the bucket alone is worth 42 ms.

The replay uses it (:class:`LinkCredit`): the curves price every collective as on a busy
link, and each collective then saves what the link's bucket holds when it starts. The
bucket refills while the link is idle and a transfer spends it first, so in time units::

    credit  = min(burst, credit_left + idle gap before the collective on its link)
    saving  = min(credit, its wire time)          (wire time: the link share of its busy
                                                   duration, calibrated; 1 when unknown)
    duration = busy duration - saving;  credit_left = credit - saving

A link is a host's (every rank of a host sends through it); a collective across hosts
saves what its poorest link holds. A run's own measured collectives got their credit
already: :func:`busy_durations` adds back what the baseline's schedule gave each, so a
variant that keeps a collective and its gap reproduces it exactly, and one that moves it
next to another (fusion=1MB's back-to-back buckets) or after an idle stretch (FSDP2's
blocking all-gathers between units' compute) gains or loses the credit its own schedule
gives. Measured on the emulated link (2 Gbit/s, burst worth 4.45 ms, mlp cell of the
2026-12-07 campaign; ``python benchmarks/collective_gaps.py CELL/baseline-fsdp
CELL/comm.json``, and ``CELL/baseline``): FSDP2's 1 MB reduce-scatters (gloo all-reduces)
took 4.63 ms (median) after 9 ms gaps where the busy-link curve says 8.12 ms; DDP's 15 MB
bucket after an 11 ms gap saved 2.82 ms of 125 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from replay.cost_model import CommCostModel
from replay.interference.cores import host_cores, per_transfer
from replay.interference.model import Scheduler
from replay.interference.settle import settle
from tracekit.core.collectives import normalize_collective
from tracekit.graph.model import Graph, NodeKind

if TYPE_CHECKING:
    from tracekit.core.run import Run

#: an idle call under this share of the busy one was mostly inside the burst
_SATURATED = 0.25
#: a link without credit wins this many pairs this rarely at most (one-sided binomial)
_NOISE_CHANCE = 0.05


def win_chance(wins: int, pairs: int) -> float:
    """The chance of at least ``wins`` wins in ``pairs`` fair coin flips."""
    return sum(math.comb(pairs, k) for k in range(wins, pairs + 1)) / 2 ** pairs if pairs else 1.0


def summarize_link_credit(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The ``link_credit`` entry of ``comm.json`` from the worker's raw one (module doc);
    None when the raw document has none or it cannot be read."""
    try:
        busy = np.asarray(raw["per_rank_drained_ns"], dtype=float).min(axis=0)
        idle = np.asarray(raw["per_rank_idle_ns"], dtype=float).min(axis=0)
    except (KeyError, TypeError, ValueError):
        return None
    if busy.size == 0 or idle.size == 0:
        return None
    n = min(busy.size, idle.size)
    saved = busy[:n] - idle[:n]  # each busy call and the idle call after it
    busy_ns, idle_ns = float(np.median(busy)), float(np.median(idle))
    wins = int((saved > 0).sum())
    counted = win_chance(wins, n) <= _NOISE_CHANCE
    burst_s = max(float(np.median(saved)), 0.0) / 1e9 if counted else 0.0
    return {"collective": raw.get("collective", "all_reduce"), "bytes": int(raw.get("bytes", 0)),
            "idle_wait_s": float(raw.get("idle_s", 0.0)), "busy_ms": busy_ns / 1e6,
            "idle_ms": idle_ns / 1e6, "burst_s": burst_s, "wins": wins, "pairs": n,
            "lower_bound": bool(burst_s > 0 and idle_ns < _SATURATED * busy_ns)}


def credit_note(credit: dict[str, Any] | None) -> str | None:
    """One line about the link's burst credit for the comm model's notes (None: not
    measured)."""
    if not credit:
        return None
    timed = (f"a {credit['bytes'] / 2**20:.0f} MB all-reduce took {credit['busy_ms']:.1f} ms "
             f"on a busy link, {credit['idle_ms']:.1f} ms after {credit['idle_wait_s']:.2f} s "
             "idle")
    if "wins" in credit:
        timed += f"; the idle call faster in {credit['wins']} of {credit['pairs']} pairs"
    if credit.get("burst_s", 0.0) <= 0:
        return f"link: no burst credit ({timed})"
    least = "at least " if credit.get("lower_bound") else ""
    return (f"link: a burst credit worth {least}{credit['burst_s'] * 1e3:.1f} ms of transfer "
            f"({timed}; a token-bucket link lets its burst through at once); the curves are "
            "for a busy link, and the replay credits each collective with what the bucket "
            "refilled in the idle time before it")


@dataclass(frozen=True, kw_only=True)
class LinkCredit:
    """A token-bucket link per host (see module doc): what it holds when full, which link
    each rank sends through, and the share of each comm node's duration spent on the
    wire."""

    #: transfer time a full bucket is worth (ns) at the variant's link rate (a variant on
    #: another wire gets its own with ``dataclasses.replace``, as it gets its nodes'
    #: ``wire_share``)
    burst_ns: float
    #: per rank: its host's link (an index)
    link_of_rank: np.ndarray
    #: per node of the graph it is used with: the share of its duration on the wire
    #: (0 for nodes that are not comm transfers)
    wire_share: np.ndarray

    def savings(self, graph: Graph, dur_ns: np.ndarray, start_ns: np.ndarray,
                end_ns: np.ndarray) -> np.ndarray:
        """Per node (ns, float), what the link's bucket saves each comm node of
        ``graph`` with busy durations ``dur_ns`` in the schedule ``start_ns``/``end_ns``
        (module doc); 0 for every other node."""
        out = np.zeros(graph.n_nodes)
        comm = np.flatnonzero((graph.kind == NodeKind.COMM) & (self.wire_share > 0))
        if self.burst_ns <= 0 or not len(comm):
            return out
        key = np.where(graph.coll_id[comm] >= 0, graph.coll_id[comm].astype(np.int64),
                       -1 - comm.astype(np.int64))
        _, inst = np.unique(key, return_inverse=True)
        inst = inst.reshape(-1)
        n = int(inst.max()) + 1
        first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(first, inst, start_ns[comm])
        np.maximum.at(last, inst, end_ns[comm])
        wire = np.zeros(n)
        np.maximum.at(wire, inst, self.wire_share[comm] * np.asarray(dur_ns, float)[comm])
        links = self.link_of_rank[graph.rank[comm]]
        members: list[list[int]] = [[] for _ in range(n)]
        for i, ln in zip(inst.tolist(), links.tolist()):
            if ln not in members[i]:
                members[i].append(ln)
        free: dict[int, int] = {}
        left: dict[int, float] = {}
        saving = np.zeros(n)
        for i in np.argsort(first, kind="stable").tolist():
            t, end = int(first[i]), int(last[i])
            have = {ln: self.burst_ns if ln not in free
                    else min(self.burst_ns, left[ln] + max(t - free[ln], 0))
                    for ln in members[i]}
            saving[i] = min(min(have.values()), wire[i])
            for ln, held in have.items():
                left[ln] = held - saving[i]
                free[ln] = max(free.get(ln, end), end)
        out[comm] = np.minimum(saving[inst],
                               self.wire_share[comm] * np.asarray(dur_ns, float)[comm])
        return out

    def settle(self, graph: Graph, busy_ns: np.ndarray, schedule: Scheduler,
               start: np.ndarray | None = None, passes: int = 6
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The savings that the schedule of ``busy_ns - savings`` gives back (the damped
        loop of :func:`~replay.interference.settle.settle`, from ``start``: the savings a
        variant's nodes had in the baseline, so an unchanged variant is exact in one
        pass): ``(savings, start_ns, end_ns)``."""
        busy = np.asarray(busy_ns, dtype=float)
        res = settle(state=np.zeros(graph.n_nodes) if start is None else np.asarray(start, float),
                     durations=lambda saved: np.rint(busy - saved).astype(np.int64),
                     measure=lambda st, en: self.savings(graph, busy, st, en),
                     schedule=schedule, passes=passes, what="link credit", atol=1000.0)
        return res.state, res.start_ns, res.end_ns


def busy_durations(graph: Graph, credit: LinkCredit, start_ns: np.ndarray,
                   end_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A measured run's durations as on a busy link, and the savings its schedule gave:
    each comm node's measured duration plus what the bucket saved it there. Solved by
    fixed point, since a saving is bounded by the (busy) wire time it comes off (the
    iteration shrinks the error by the wire share each round)."""
    dur = graph.dur_ns.astype(float)
    saved = np.zeros(graph.n_nodes)
    for _ in range(200):
        new = credit.savings(graph, dur + saved, start_ns, end_ns)
        if np.allclose(new, saved, rtol=0, atol=1000):
            break
        saved = new
    return dur + saved, saved


#: a collective this small moves next to nothing: its time is the latency floor that a
#: link's bucket cannot cut
_FLOOR_BYTES = 1024


def wire_shares(graph: Graph, comm: CommCostModel | None, world: int) -> np.ndarray:
    """Per node, the share of its duration on the wire, which a link's bucket can cut:
    for a comm transfer what its cost has above a 1 KB call's (the latency floor: wake-ups,
    syscalls, steps), times the share of the link it keeps busy (calibrated; 1 where not
    measured); 0 for other nodes."""
    def wire(name: str, nbytes: float) -> float | None:
        coll = normalize_collective(name) or "all_reduce"
        total = comm.time_ns(coll, nbytes, world)
        floor = comm.time_ns(coll, min(nbytes, _FLOOR_BYTES), world)
        link = comm.link_share(coll, nbytes)
        part = max(total - floor, 0.0) / total if total > 0 else 0.0
        return part * (1.0 if link is None else min(max(link, 0.0), 1.0))

    value = per_transfer(graph, wire if comm is not None else None)
    share = np.where(np.isnan(value), 1.0, np.clip(value, 0.0, 1.0))
    return np.where(graph.kind == NodeKind.COMM, share, 0.0)


def run_link_credit(run: Run, graph: Graph, comm: CommCostModel | None) -> LinkCredit | None:
    """The run's links as token buckets, when the calibration measured a burst credit."""
    burst = comm.link_burst_ns() if comm is not None else 0.0
    if burst <= 0 or not bool((graph.kind == NodeKind.COMM).any()):
        return None
    return LinkCredit(burst_ns=burst, link_of_rank=host_cores(run, graph).host_of_rank,
                      wire_share=wire_shares(graph, comm, max(int(run.world_size), 1)))
