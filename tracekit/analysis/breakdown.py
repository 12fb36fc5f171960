"""Per-rank, per-step time breakdown: step time, compute, communication, exposed
communication, overlap and idle. This is what ``tracekit summary`` prints.

Definitions (all are lengths of unions of intervals, :mod:`tracekit.core.intervals`, so
nothing is counted twice when streams or threads run at once):

- **step window**: the ``ProfilerStep#N`` annotation on the host, extended to the end
  of the last GPU event launched in that step (a step's kernels often finish after its
  host window closed); see :mod:`tracekit.core.steps`. A trace without ``ProfilerStep``
  is one window, step 0, from its first event to its last. Every interval below is
  clipped to the window.
- **compute**: GPU rank: kernels, memcpys and memsets on any stream, NCCL kernels
  excluded. CPU rank: the operators (``cpu_op``) on the main training thread (the one
  holding ``ProfilerStep``; without steps the thread with the most operator time, see
  :mod:`tracekit.core.threads`), minus time inside operators that only wait for
  communication (wait ops and blocking collectives, :mod:`tracekit.core.waits`). In
  torch 2.13 gloo traces DDP's reducer waits for its buckets and ``Work.wait()`` record
  no operator at all: they are gaps on the main thread, so they are not compute either.
  Python time between operators is not compute.
- **comm**: the transfer events of collectives (NCCL kernels; ``gloo:*`` events on
  ``pt_gloo_runloop`` threads), on any stream or thread.
- **exposed comm** = comm minus compute: time communication runs while nothing computes.
- **overlap** = comm ∩ compute.
- **idle** = window minus (compute ∪ comm).

So ``compute + exposed + idle == step`` exactly, and ``comm == exposed + overlap``.

Before (a CPU rank's events in one step window, µs)::

    main thread  aten::addmm   [0, 400)     c10d::barrier [700, 900)
    gloo thread  gloo:all_reduce [300, 800)

After (``summarize(run).steps``, one row)::

    rank step ms   compute_ms comm_ms exposed_comm_ms overlap_ms idle_ms
    0    3    1.0  0.4        0.5     0.4             0.1        0.2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tracekit.analysis.stragglers import Straggler, find_stragglers
from tracekit.core.columns import equals, isin
from tracekit.core.intervals import clip, difference, union, union_length
from tracekit.core.run import Run
from tracekit.core.schema import EventKind, LaneKind
from tracekit.core.steps import step_windows
from tracekit.core.threads import main_threads
from tracekit.core.waits import waits_for_comm
from tracekit.log import get_logger

log = get_logger(__name__)

_GPU_COMPUTE_KINDS = (EventKind.KERNEL.value, EventKind.MEMCPY.value, EventKind.MEMSET.value)

#: columns of :attr:`Summary.steps`, in order
STEP_COLUMNS = [
    "rank", "step", "basis", "start_ns", "end_ns", "step_ns", "compute_ns", "comm_ns",
    "exposed_comm_ns", "overlap_ns", "idle_ns",
    "ms", "compute_ms", "comm_ms", "exposed_comm_ms", "overlap_ms", "idle_ms",
]


# --- the breakdown ----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class StepBreakdown:
    """Lengths in ns of one step window's parts (see the module docstring)."""

    window_ns: int
    compute_ns: int
    comm_ns: int
    exposed_comm_ns: int
    overlap_ns: int
    idle_ns: int


def breakdown(window: tuple[int, int], compute: tuple[np.ndarray, np.ndarray],
              comm: tuple[np.ndarray, np.ndarray]) -> StepBreakdown:
    """Split one window into compute / exposed comm / idle, given raw (possibly
    overlapping, unclipped) compute and comm intervals."""
    lo, hi = window
    c = union(*clip(*compute, lo, hi))
    m = union(*clip(*comm, lo, hi))
    c_len = int((c[1] - c[0]).sum())
    m_len = int((m[1] - m[0]).sum())
    both = union_length(np.concatenate([c[0], m[0]]), np.concatenate([c[1], m[1]]))
    return StepBreakdown(
        window_ns=hi - lo,
        compute_ns=c_len,
        comm_ns=m_len,
        exposed_comm_ns=both - c_len,
        overlap_ns=c_len + m_len - both,
        idle_ns=(hi - lo) - both,
    )


@dataclass(frozen=True, kw_only=True)
class Summary:
    """The breakdown of a run: one row per (rank, step) in :attr:`steps`."""

    world_size: int
    ranks_present: list[int]
    #: one row per rank and step, columns :data:`STEP_COLUMNS`; ``basis`` is 'gpu' or 'cpu'
    steps: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    #: ranks whose compute per step exceeds the fastest rank's by more than 5%, largest
    #: excess first (:mod:`tracekit.analysis.stragglers`)
    stragglers: list[Straggler] = field(default_factory=list)

    @property
    def step_ms(self) -> float:
        """Median over steps of the slowest rank's step time (ms); steps present on only
        some ranks count when no step is present on all."""
        if self.steps.empty:
            return 0.0
        n_ranks = self.steps.groupby("step")["rank"].nunique()
        common = n_ranks.index[n_ranks == len(self.ranks_present)]
        rows = self.steps[self.steps["step"].isin(common)] if len(common) else self.steps
        return float(rows.groupby("step")["ms"].max().median())

    def to_json(self) -> dict[str, Any]:
        """The ``tracekit summary --json`` object."""
        # one pass over the rows (not a filter of the table per rank)
        cols = ["step", "ms", "compute_ms", "comm_ms", "exposed_comm_ms", "idle_ms",
                "overlap_ms"]
        values = {c: self.steps[c].tolist() for c in ["rank", *cols]}
        by_rank: dict[int, list[dict]] = {}
        for i, r in enumerate(values["rank"]):
            by_rank.setdefault(int(r), []).append({
                "step": int(values["step"][i]),
                **{c: round(float(values[c][i]), 6) for c in cols[1:]},
            })
        ranks = [{"rank": int(rank), "steps": by_rank.get(int(rank), [])}
                 for rank in self.ranks_present]
        return {
            "world_size": int(self.world_size),
            "ranks_present": [int(r) for r in self.ranks_present],
            "step_ms": round(self.step_ms, 6),
            "ranks": ranks,
            "stragglers": [s.to_json() for s in self.stragglers],
            "notes": list(self.notes),
        }


def summarize(run: Run) -> Summary:
    """Break every rank's every step into compute, comm, exposed comm, overlap and idle.

    See the module docstring for the definitions. Steps are the rank's own
    ``ProfilerStep#N`` windows (or step 0, the whole trace, when it has none).
    """
    rows: list[dict[str, Any]] = []
    notes = list(run.notes)
    for rank in run.ranks:
        ev = run.rank_events(rank)
        rank_rows, rank_notes = _summarize_rank(rank, ev)
        rows.extend(rank_rows)
        notes.extend(rank_notes)
    steps = pd.DataFrame(rows, columns=STEP_COLUMNS)
    for col in STEP_COLUMNS:
        if col.endswith("_ns") or col in ("rank", "step"):
            steps[col] = steps[col].astype(np.int64)
    return Summary(world_size=run.world_size, ranks_present=run.ranks, steps=steps,
                   notes=notes, stragglers=find_stragglers(run, steps))


class _ByStart:
    """Intervals sorted by start, to hand each window only those that may reach into it
    (a superset: :func:`clip` empties the others), instead of every interval of the rank
    for every step."""

    def __init__(self, s: np.ndarray, e: np.ndarray) -> None:
        o = np.argsort(s, kind="stable")
        self.s, self.e = s[o], e[o]
        self.reach = np.maximum.accumulate(self.e) if len(self.e) else self.e

    def near(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """The intervals that may overlap ``[lo, hi)``: every one before them ends by
        ``lo``, every one after them starts at or after ``hi``."""
        a = int(np.searchsorted(self.reach, lo, side="right"))
        b = max(a, int(np.searchsorted(self.s, hi, side="left")))
        return self.s[a:b], self.e[a:b]


def _summarize_rank(rank: int, ev: pd.DataFrame) -> tuple[list[dict], list[str]]:
    notes: list[str] = []
    if ev.empty:
        return [], [f"rank {rank}: no events"]
    kind = ev["kind"]
    ts = ev["ts_ns"].to_numpy()
    end = ev["end_ns"].to_numpy()
    is_gpu = equals(ev["lane_kind"], LaneKind.GPU.value)
    is_comm = equals(kind, EventKind.COMM.value)
    basis = "gpu" if is_gpu.any() else "cpu"

    if basis == "gpu":
        compute_mask = is_gpu & isin(kind, _GPU_COMPUTE_KINDS)
        wait_mask = np.zeros(len(ev), dtype=bool)
    else:
        lane = ev["lane"].to_numpy()
        main = main_threads(ev).get(rank, -1)
        on_main = (lane == main) & ~is_gpu
        is_op = equals(kind, EventKind.CPU_OP.value)
        compute_mask = on_main & is_op
        wait_mask = compute_mask & waits_for_comm(ev["name"])
        if not compute_mask.any():
            notes.append(f"rank {rank}: no operators on the main thread; compute is 0")
        elif not equals(kind, EventKind.STEP.value).any():
            label = str(ev["lane_name"].iloc[int(np.argmax(on_main))])
            notes.append(f"rank {rank}: no ProfilerStep; main thread taken to be {label!r} "
                         "(the most operator time)")

    windows = step_windows(ev, device_tail=True)
    computes = _ByStart(ts[compute_mask], end[compute_mask])
    waits = _ByStart(ts[wait_mask], end[wait_mask])
    comms = _ByStart(ts[is_comm], end[is_comm])
    rows = []
    for n, lo, hi in zip(windows["step"].tolist(), windows["start_ns"].tolist(),
                         windows["end_ns"].tolist()):
        compute = union(*clip(*computes.near(lo, hi), lo, hi))
        if len(waits.s):
            compute = difference(compute, union(*clip(*waits.near(lo, hi), lo, hi)))
        b = breakdown((lo, hi), compute, comms.near(lo, hi))
        rows.append({
            "rank": rank, "step": n, "basis": basis, "start_ns": lo, "end_ns": hi,
            "step_ns": b.window_ns, "compute_ns": b.compute_ns, "comm_ns": b.comm_ns,
            "exposed_comm_ns": b.exposed_comm_ns, "overlap_ns": b.overlap_ns,
            "idle_ns": b.idle_ns,
            "ms": b.window_ns / 1e6, "compute_ms": b.compute_ns / 1e6,
            "comm_ms": b.comm_ns / 1e6, "exposed_comm_ms": b.exposed_comm_ns / 1e6,
            "overlap_ms": b.overlap_ns / 1e6, "idle_ms": b.idle_ns / 1e6,
        })
    return rows, notes
