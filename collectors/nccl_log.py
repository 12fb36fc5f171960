"""Parse NCCL's own log (``NCCL_DEBUG=INFO``, ``NCCL_DEBUG_SUBSYS=COLL``) and attach it
to the collectives of a trace. Needs pandas, not torch.

NCCL (``src/enqueue.cc``, unchanged from 2.4 to 2.2x) logs one line per collective call::

    host-a:4242:4242 [0] NCCL INFO AllReduce: opCount 1f sendbuff 0x7f3a4c000000
        recvbuff 0x7f3a4c000000 count 262144 datatype 7 op 0 root 0 comm 0x55d0c6a0
        [nranks=2] stream 0x55d0c2f0

(one line in the file), optionally preceded by a timestamp (NCCL >= 2.26 with
``NCCL_DEBUG_TIMESTAMP_LEVELS`` including INFO: ``[2024-05-05 06:16:47] `` by default, or
``[1716000000.123456] `` with the format tracekit sets). ``opCount`` is hexadecimal, ``count``
is in elements (per rank for AllGather / ReduceScatter / Gather / Scatter / AlltoAll),
``datatype`` and ``op`` are the ``ncclDataType_t`` / ``ncclRedOp_t`` enum values. With
``SUBSYS`` including ``INIT`` NCCL also logs ``comm 0x55d0c6a0 rank 0 nranks 2 ... Init
COMPLETE``, which gives each communicator's rank.

:func:`parse_nccl_log` turns lines into a table (columns :data:`NCCL_LOG_COLUMNS`);
:func:`attach_nccl_log` copies sizes, dtypes, group sizes and ``opCount`` (as ``seq``) onto
the trace's NCCL kernels where the trace lacks them.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tracekit.core.collectives import normalize_collective
from tracekit.core.schema import Collective, EventKind, LaneKind
from tracekit.errors import TracekitError

#: ncclDataType_t -> (name as in torch / the trace, bytes per element)
NCCL_DATATYPES: dict[int, tuple[str, int]] = {
    0: ("int8", 1), 1: ("uint8", 1), 2: ("int32", 4), 3: ("uint32", 4), 4: ("int64", 8),
    5: ("uint64", 8), 6: ("float16", 2), 7: ("float32", 4), 8: ("float64", 8),
    9: ("bfloat16", 2), 10: ("float8_e4m3fn", 1), 11: ("float8_e5m2", 1),
}
#: ncclRedOp_t built-in values (custom PreMulSum ops get larger numbers)
NCCL_REDOPS: dict[int, str] = {0: "sum", 1: "prod", 2: "max", 3: "min", 4: "avg"}

#: collectives whose ``count`` is per rank: the full buffer is ``count * nranks`` elements
_PER_RANK_COUNT = {Collective.ALL_GATHER.value, Collective.REDUCE_SCATTER.value,
                   Collective.GATHER.value, Collective.SCATTER.value,
                   Collective.ALL_TO_ALL.value}
#: point-to-point lines are fused into one kernel per group: they cannot be matched 1:1
_P2P = {Collective.SEND.value, Collective.RECV.value, Collective.SEND_RECV.value}

_PREFIX = re.compile(
    r"^(?:\[(?P<ts>[^\]]*)\]\s*)?(?:(?P<host>[^\s:]+):(?P<pid>\d+):(?P<tid>\d+)\s+)?"
    r"(?:\[(?P<dev>\d+)\]\s+)?NCCL INFO\s+(?P<msg>.*)$"
)
_COLL = re.compile(
    r"^(?P<op_name>[A-Za-z0-9_]+): opCount (?P<op_count>[0-9a-fA-F]+) "
    r"sendbuff (?P<sendbuff>\S+) recvbuff (?P<recvbuff>\S+) count (?P<count>\d+) "
    r"datatype (?P<datatype>\d+) op (?P<op>\d+) root (?P<root>-?\d+) comm (?P<comm>\S+)"
    r"(?: \[nranks=(?P<nranks>\d+)\])? stream (?P<stream>\S+)"
)
_INIT = re.compile(r"comm (?P<comm>0x[0-9a-fA-F]+|\(nil\)) rank (?P<rank>\d+) nranks (?P<nranks>\d+)")
_RANK_IN_NAME = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)

#: column -> meaning, in table order
NCCL_LOG_COLUMNS: dict[str, str] = {
    "rank": "global rank of the process that wrote the line (from the file name), -1",
    "line": "line number in its file (1-based)",
    "ts_ns": "epoch ns when NCCL logged it (enqueue time), -1 without timestamps",
    "host": "host name from the line prefix",
    "pid": "process id from the line prefix, -1",
    "tid": "thread id from the line prefix, -1",
    "cuda_dev": "CUDA device index from the line prefix, -1",
    "op_name": "NCCL's name: AllReduce, AllGather, ReduceScatter, Broadcast, ...",
    "collective": "normalized collective name (tracekit Collective values)",
    "op_count": "NCCL opCount: the op's sequence number on its communicator",
    "count": "element count as NCCL logs it (per rank for gather/scatter-like ops)",
    "datatype": "ncclDataType_t value",
    "dtype": "datatype name ('float32', ...), '' when unknown",
    "elem_bytes": "bytes per element, 0 when unknown",
    "op": "ncclRedOp_t value",
    "root": "root rank (broadcast / reduce), else as logged",
    "comm": "communicator address (identifies the communicator within a process)",
    "comm_rank": "this process's rank in the communicator (from the Init line), -1",
    "nranks": "communicator size, -1 when the line has no [nranks=N]",
    "stream": "CUDA stream address the op was enqueued on",
    "sendbuff": "send buffer address",
    "recvbuff": "receive buffer address",
    "in_nelems": "elements each rank contributes",
    "out_nelems": "elements each rank receives",
    "comm_bytes": "bytes of the full (unsharded) buffer, as the trace's comm_bytes, -1",
}


def _timestamp_ns(text: str | None) -> int:
    """'1716000000.123456' (epoch) or '2024-05-05 06:16:47[.123]' (local) -> epoch ns."""
    if not text:
        return -1
    text = text.strip()
    whole, _, frac = text.partition(".")
    if whole.isdigit() and (not frac or frac.isdigit()):  # exact: a double loses ~100 ns
        return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            dt = datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return int(time.mktime(dt.timetuple())) * 1_000_000_000 + dt.microsecond * 1000
    return -1


def parse_nccl_log(
    source: str | Path | Iterable[str], *, rank: int | None = None
) -> pd.DataFrame:
    """Parse NCCL log lines (a file path or an iterable of lines) into a table with the
    columns of :data:`NCCL_LOG_COLUMNS`, one row per collective line, in file order.

    ``rank`` defaults to the number in the file name (``rank3.log``), else -1. Lines that
    are not collective lines (init, warnings, other programs' output) are skipped.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if rank is None:
            m = _RANK_IN_NAME.search(path.name)
            rank = int(m.group(1)) if m else None
        try:
            lines: Iterable[str] = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            raise TracekitError("no such NCCL log; check the path", path=str(path)) from None
        except OSError as exc:
            raise TracekitError(f"cannot read NCCL log ({exc.strerror})", path=str(path)) from None
    else:
        lines = source
    rows = []
    comm_rank: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        pm = _PREFIX.match(raw.strip())
        if pm is None:
            continue
        msg = pm.group("msg")
        cm = _COLL.match(msg)
        if cm is None:
            im = _INIT.search(msg)
            if im is not None and "Init COMPLETE" in msg:
                comm_rank[im.group("comm")] = int(im.group("rank"))
            continue
        rows.append((number, pm, cm))
    return _table(rows, comm_rank, -1 if rank is None else rank)


def _table(rows: list, comm_rank: dict[str, int], rank: int) -> pd.DataFrame:
    def col(group: str, src: int) -> list:
        return [r[src].group(group) for r in rows]

    op_names = col("op_name", 2)
    collective = [normalize_collective(n) for n in op_names]
    datatype = np.array([int(x) for x in col("datatype", 2)], dtype=np.int64)
    count = np.array([int(x) for x in col("count", 2)], dtype=np.int64)
    nranks = np.array([int(x) if x else -1 for x in col("nranks", 2)], dtype=np.int64)
    dtype = [NCCL_DATATYPES.get(int(d), ("", 0))[0] for d in datatype]
    elem = np.array([NCCL_DATATYPES.get(int(d), ("", 0))[1] for d in datatype], dtype=np.int64)
    per_rank = np.array([c in _PER_RANK_COUNT for c in collective], dtype=bool)
    n = np.where(nranks > 0, nranks, -1)
    full = np.where(per_rank, np.where(n > 0, count * n, -1), count)
    is_ag = np.array([c in (Collective.ALL_GATHER.value, Collective.GATHER.value)
                      for c in collective], dtype=bool)
    is_rs = np.array([c in (Collective.REDUCE_SCATTER.value, Collective.SCATTER.value)
                      for c in collective], dtype=bool)
    in_n = np.where(is_rs, full, np.where(per_rank & ~is_ag, full, count))
    out_n = np.where(is_ag, full, np.where(per_rank & ~is_rs, full, count))
    comm_bytes = np.where((full >= 0) & (elem > 0), full * elem, -1)
    comms = col("comm", 2)
    df = pd.DataFrame({
        "rank": np.full(len(rows), rank, dtype=np.int32),
        "line": np.array([r[0] for r in rows], dtype=np.int64),
        "ts_ns": np.array([_timestamp_ns(t) for t in col("ts", 1)], dtype=np.int64),
        "host": [h or "" for h in col("host", 1)],
        "pid": np.array([int(x) if x else -1 for x in col("pid", 1)], dtype=np.int64),
        "tid": np.array([int(x) if x else -1 for x in col("tid", 1)], dtype=np.int64),
        "cuda_dev": np.array([int(x) if x else -1 for x in col("dev", 1)], dtype=np.int64),
        "op_name": op_names,
        "collective": collective,
        "op_count": np.array([int(x, 16) for x in col("op_count", 2)], dtype=np.int64),
        "count": count,
        "datatype": datatype,
        "dtype": dtype,
        "elem_bytes": elem,
        "op": np.array([int(x) for x in col("op", 2)], dtype=np.int64),
        "root": np.array([int(x) for x in col("root", 2)], dtype=np.int64),
        "comm": comms,
        "comm_rank": np.array([comm_rank.get(c, -1) for c in comms], dtype=np.int64),
        "nranks": nranks,
        "stream": col("stream", 2),
        "sendbuff": col("sendbuff", 2),
        "recvbuff": col("recvbuff", 2),
        "in_nelems": in_n.astype(np.int64),
        "out_nelems": out_n.astype(np.int64),
        "comm_bytes": comm_bytes.astype(np.int64),
    })
    assert list(df.columns) == list(NCCL_LOG_COLUMNS)
    return df


def read_nccl_logs(run_dir: str | Path) -> pd.DataFrame:
    """Parse every ``<run>/nccl/*.log`` (rank from each file name) into one table."""
    folder = Path(run_dir) / "nccl"
    files = sorted(folder.glob("*.log")) if folder.is_dir() else []
    tables = [parse_nccl_log(f) for f in files]
    if not tables:
        return parse_nccl_log([])
    return pd.concat(tables, ignore_index=True)


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
    ``seq`` (NCCL's ``opCount``) of the trace's NCCL kernels from the log, where missing.

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
    folder = Path(run.path)
    log = read_nccl_logs(folder if folder.is_dir() else folder.parent)
    return attach_nccl_log(log, run.events)


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
    """Writes log values into the event table's missing cells, then fixes dtypes."""

    def __init__(self, events: pd.DataFrame) -> None:
        self.events = events
        self.ints = {c: events[c].to_numpy(copy=True) for c in
                     ("comm_bytes", "in_nelems", "out_nelems", "group_size", "seq")}
        self.dtype = events["dtype"].astype(str).to_numpy(copy=True)
        self.pos = {ix: i for i, ix in enumerate(events.index)}

    def apply(self, ev_index, row) -> None:
        i = self.pos[ev_index]
        for col, value in (("comm_bytes", row["comm_bytes"]), ("in_nelems", row["in_nelems"]),
                           ("out_nelems", row["out_nelems"]), ("group_size", row["nranks"]),
                           ("seq", row["op_count"])):
            if self.ints[col][i] < 0 <= value:
                self.ints[col][i] = value
        if not self.dtype[i] and row["dtype"]:
            self.dtype[i] = row["dtype"]

    def finish(self) -> None:
        for col, values in self.ints.items():
            self.events[col] = values.astype(self.events[col].dtype)
        self.events["dtype"] = pd.Categorical(self.dtype)
