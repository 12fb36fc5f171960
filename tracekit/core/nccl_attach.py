"""Attach NCCL's log (:mod:`tracekit.core.nccl_log`) to a trace's NCCL kernels: sizes,
dtypes, group sizes and ``opCount`` where the trace lacks them, and NCCL's algorithm,
protocol, channels and communicator. Needs pandas, not torch.

Before: a kernel ``ncclDevKernel_Generic`` with no args; the rank's log holds
``AllReduce: opCount 1f ... count 262144 datatype 7 ... comm 0x55d0c6a0 [nranks=2]`` and,
on rank 0, ``AllReduce: 1048576 Bytes -> Algo RING proto LL128 channel{Lo..Hi}={0..15}``.
After: ``comm_bytes`` 1048576, ``dtype`` float32, ``group_size`` 2, ``seq`` 31,
``nccl_algo`` ring, ``nccl_proto`` ll128, ``nccl_channels`` 16.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tracekit.core.schema import Collective, EventKind, LaneKind

#: point-to-point lines are fused into one kernel per group: they cannot be matched 1:1
_P2P = {Collective.SEND.value, Collective.RECV.value, Collective.SEND_RECV.value}


@dataclass(frozen=True, kw_only=True)
class AttachResult:
    """The event table with NCCL log fields filled in, and what was matched."""

    events: pd.DataFrame
    #: rank -> number of trace collectives that got a log line
    matched: dict[int, int] = field(default_factory=dict)
    #: rank -> 'time' (aligned by timestamps) or 'order' (by sequence of collectives)
    method: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def attach_nccl_log(log: pd.DataFrame, events: pd.DataFrame) -> AttachResult:
    """Fill ``comm_bytes``, ``in_nelems``, ``out_nelems``, ``dtype``, ``group_size`` and
    ``seq`` (NCCL's ``opCount``) of the trace's NCCL kernels from the log, where missing,
    and set ``nccl_algo``, ``nccl_proto``, ``nccl_channels`` (from tuning lines) and
    ``nccl_comm`` (the communicator: its commId, else its address).

    For each rank, each GPU stream's comm events (in time order) are matched to the log
    lines of one (communicator, stream) pair (in file order): by time when the log has
    timestamps (each kernel takes the last line of the same collective logged before it
    started), else by order: the first position where the log's sequence of collectives
    (and sizes, where the trace knows them) equals the trace's. The trace only covers the
    profiled steps and training repeats the same collectives every step, so by order the
    window may land a whole number of steps early: sizes and dtypes are right either way,
    and ``seq`` stays consistent across ranks (every rank makes the same choice), which is
    what matching collectives across ranks needs. Point-to-point lines are not matched.
    Returns a copy; ``events`` is not modified.
    """
    out = events.copy()
    result = AttachResult(events=out)
    if log.empty or out.empty:
        return result
    fill = _Filler(out)
    is_comm = ((out["kind"] == EventKind.COMM.value)
               & (out["lane_kind"] == LaneKind.GPU.value)).to_numpy()
    coll_log = log[~log["collective"].isin(_P2P) & (log["collective"] != "")]
    for rank in sorted(set(out["rank"].unique()) & set(coll_log["rank"].unique())):
        rank = int(rank)
        rmask = is_comm & (out["rank"] == rank).to_numpy()
        groups = [g.sort_values("line") for _, g in coll_log[coll_log["rank"] == rank]
                  .groupby(["comm", "stream"], sort=False)]
        total, methods = 0, set()
        used: set[int] = set()
        for lane, trace in out[rmask].groupby("lane", observed=True):
            trace = trace.sort_values("ts_ns", kind="stable")
            best = None
            for gi, g in enumerate(groups):
                if gi in used:
                    continue
                pairs, method = _align(trace, g)
                if pairs and (best is None or len(pairs) > len(best[1])):
                    best = (gi, pairs, method)
            if best is None:
                result.notes.append(f"rank {rank} stream {lane}: no NCCL log lines match "
                                    f"its {len(trace)} collectives")
                continue
            gi, pairs, method = best
            used.add(gi)
            methods.add(method)
            for ev_index, log_row in pairs:
                fill.apply(ev_index, log_row)
            total += len(pairs)
        result.matched[rank] = total
        if methods:
            result.method[rank] = "time" if methods == {"time"} else "order"
    fill.finish()
    return result


def attach_run_nccl_logs(run) -> AttachResult:
    """:func:`attach_nccl_log` for a loaded run (``tracekit.load_run``): reads
    ``<run folder>/nccl/*.log``; ``result.events`` is ``run.events`` with the fields
    filled (the run itself is not modified)."""
    from tracekit.core.nccl_log import read_nccl_logs  # its regexes: only for a log

    folder = Path(run.path)
    log = read_nccl_logs(folder if folder.is_dir() else folder.parent)
    return attach_nccl_log(log, run.events)


def nccl_log_folder(root: Path) -> Path | None:
    """The run folder's ``nccl/`` when it holds ``*.log`` files, else None."""
    folder = (root if root.is_dir() else root.parent) / "nccl"
    return folder if folder.is_dir() and any(folder.glob("*.log")) else None


def attach_logs_to_events(root: Path, events: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """What :func:`tracekit.core.run.load_run` does with a run's NCCL logs: ``(events,
    notes)``, the events with the log's fields attached and one note saying how many
    collectives got a log line (or why none did)."""
    folder = nccl_log_folder(root)
    if folder is None:
        return events, []
    from tracekit.core.nccl_log import read_nccl_logs  # its regexes: only for a log

    log = read_nccl_logs(folder.parent)
    if log.empty:
        return events, [f"{folder}: no NCCL collective lines (was NCCL_DEBUG_SUBSYS=COLL "
                        "set?); collective sizes come from the traces alone"]
    result = attach_nccl_log(log, events)
    n_comm = int(((events["kind"] == EventKind.COMM.value)
                  & (events["lane_kind"] == LaneKind.GPU.value)).sum())
    matched = sum(result.matched.values())
    methods = sorted(set(result.method.values()))
    tuned = int((result.events["nccl_algo"].astype(str) != "").sum())
    note = (f"NCCL log ({folder}): {matched} of {n_comm} NCCL kernels matched to a log line"
            + (f" (by {' and '.join(methods)})" if methods else "")
            + (f"; {tuned} with NCCL's algorithm / protocol" if tuned else ""))
    return result.events, [note] + result.notes


def _align(trace: pd.DataFrame, group: pd.DataFrame) -> tuple[list, str]:
    """Pairs (event index, log row) for one stream's events against one log group."""
    t_coll = trace["collective"].astype(str).to_numpy()
    l_coll = group["collective"].to_numpy()
    if (group["ts_ns"] >= 0).all() and len(group):
        pairs = _align_by_time(trace, group, t_coll, l_coll)
        if len(pairs) >= 0.9 * len(trace):
            return pairs, "time"
    return _align_by_order(trace, group, t_coll, l_coll), "order"


def _align_by_time(trace, group, t_coll, l_coll) -> list:
    l_ts = group["ts_ns"].to_numpy()
    rows = [r for _, r in group.iterrows()]
    pairs, j = [], 0
    for i, (ev_index, ts) in enumerate(zip(trace.index, trace["ts_ns"].to_numpy())):
        k = int(np.searchsorted(l_ts, ts, side="right")) - 1
        while k >= j and l_coll[k] != t_coll[i]:
            k -= 1
        if k < j:
            continue
        pairs.append((ev_index, rows[k]))
        j = k + 1
    return pairs


def _align_by_order(trace, group, t_coll, l_coll) -> list:
    n, m = len(t_coll), len(l_coll)
    if n == 0 or m < n:
        return []
    t_in = trace["in_nelems"].to_numpy()
    l_in = group["in_nelems"].to_numpy()
    known = t_in >= 0
    for o in np.flatnonzero(l_coll[: m - n + 1] == t_coll[0]):
        window = slice(int(o), int(o) + n)
        if not (l_coll[window] == t_coll).all():
            continue
        if known.any() and not (l_in[window][known] == t_in[known]).all():
            continue
        rows = [r for _, r in group.iloc[window].iterrows()]
        return list(zip(trace.index, rows))
    return []


class _Filler:
    """Writes log values into the event table's missing cells, then fixes dtypes. The
    algorithm, protocol and channels of a tuning line replace what a kernel name said
    (a ``_RING_LL`` kernel can run another protocol; the tuning line is NCCL's choice)."""

    _INTS = ("comm_bytes", "in_nelems", "out_nelems", "group_size", "seq", "nccl_channels")
    _STRS = ("dtype", "nccl_algo", "nccl_proto", "nccl_comm")

    def __init__(self, events: pd.DataFrame) -> None:
        self.events = events
        self.ints = {c: events[c].to_numpy(copy=True) for c in self._INTS}
        self.strs = {c: events[c].astype(str).to_numpy(copy=True).astype(object)
                     for c in self._STRS}
        self.pos = {ix: i for i, ix in enumerate(events.index)}

    def apply(self, ev_index, row) -> None:
        i = self.pos[ev_index]
        for col, value in (("comm_bytes", row["comm_bytes"]), ("in_nelems", row["in_nelems"]),
                           ("out_nelems", row["out_nelems"]), ("group_size", row["nranks"]),
                           ("seq", row["op_count"])):
            if self.ints[col][i] < 0 <= value:
                self.ints[col][i] = value
        if not self.strs["dtype"][i] and row["dtype"]:
            self.strs["dtype"][i] = row["dtype"]
        if row["algorithm"]:
            self.strs["nccl_algo"][i] = row["algorithm"]
            self.strs["nccl_proto"][i] = row["protocol"]
        if row["channels"] >= 0:
            self.ints["nccl_channels"][i] = row["channels"]
        self.strs["nccl_comm"][i] = row["comm_id"] or row["comm"]

    def finish(self) -> None:
        for col, values in self.ints.items():
            self.events[col] = values.astype(self.events[col].dtype)
        for col, values in self.strs.items():
            self.events[col] = pd.Categorical(values)
