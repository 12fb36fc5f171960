"""Parse NCCL's own log (``NCCL_DEBUG=INFO``, ``NCCL_DEBUG_SUBSYS=COLL,TUNING,INIT``): one
row per collective call, with the algorithm, protocol and channels NCCL chose when the
log says. Needs pandas, not torch. Attaching the rows to a trace's kernels is
:mod:`tracekit.core.nccl_attach`; ``tracekit profile`` writes ``<run>/nccl/rank<N>.log``
and :func:`tracekit.core.run.load_run` reads it.

Lines read (each behind NCCL's prefix ``host:pid:tid [cudaDev] NCCL INFO ``, optionally
preceded by a timestamp, NCCL >= 2.26, or by a launcher's tag such as ``[0] ``)::

    AllReduce: opCount 1f sendbuff 0x7f3a4c000000 recvbuff 0x7f3a4c000000 count 262144
        datatype 7 op 0 root 0 comm 0x55d0c6a0 [nranks=2] stream 0x55d0c2f0      (COLL)
    AllReduce: 1048576 Bytes -> Algo RING proto LL128 channel{Lo..Hi}={0..15}     (TUNING,
        NCCL >= 2.19; newer ones append `` comm 0x..`` or `` cgaClusterSize N``)
    AllGather: 37756928 Bytes -> Algo 1 proto 2 time 2860.208008                  (TUNING,
        older NCCL, numeric algorithm and protocol; the ``AllGather: `` is optional)
    comm 0x55d0c6a0 rank 0 nranks 2 cudaDev 0 nvmlDev 0 busId 1000 commId 0x9a3b
        - Init COMPLETE                                                           (INIT)

``opCount`` is hexadecimal, ``count`` in elements (per rank for AllGather / ReduceScatter /
Gather / Scatter / AlltoAll), ``datatype`` and ``op`` the ``ncclDataType_t`` /
``ncclRedOp_t`` values. NCCL prints a tuning line on the communicator's rank 0 only, after
the COLL line of the same call (a group's calls first, then their tuning lines, in
order); :func:`read_nccl_logs` gives every rank the choice rank 0's log recorded for the
same call (same communicator id and opCount), since all ranks of a collective run the same
algorithm and protocol.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from tracekit.core.collectives import normalize_collective
from tracekit.core.schema import Collective
from tracekit.errors import TracekitError

#: ncclDataType_t -> (name as in torch / the trace, bytes per element)
NCCL_DATATYPES: dict[int, tuple[str, int]] = {
    0: ("int8", 1), 1: ("uint8", 1), 2: ("int32", 4), 3: ("uint32", 4), 4: ("int64", 8),
    5: ("uint64", 8), 6: ("float16", 2), 7: ("float32", 4), 8: ("float64", 8),
    9: ("bfloat16", 2), 10: ("float8_e4m3fn", 1), 11: ("float8_e5m2", 1),
}
#: ncclRedOp_t built-in values (custom PreMulSum ops get larger numbers)
NCCL_REDOPS: dict[int, str] = {0: "sum", 1: "prod", 2: "max", 3: "min", 4: "avg"}
#: NCCL_ALGO_* (nccl_common.h / devcomm.h), as numbers in older tuning lines
NCCL_ALGOS = {0: "tree", 1: "ring", 2: "collnet_direct", 3: "collnet_chain", 4: "nvls",
              5: "nvls_tree", 6: "pat"}
#: NCCL_PROTO_*
NCCL_PROTOS = {0: "ll", 1: "ll128", 2: "simple"}

#: collectives whose ``count`` is per rank: the full buffer is ``count * nranks`` elements
_PER_RANK_COUNT = {Collective.ALL_GATHER.value, Collective.REDUCE_SCATTER.value,
                   Collective.GATHER.value, Collective.SCATTER.value,
                   Collective.ALL_TO_ALL.value}

_PREFIX = re.compile(
    r"^(?:\[(?P<ts>[^\]]*)\]\s*)?(?:\(.*?\)\s*)?(?:(?P<host>[^\s:\[]+):(?P<pid>\d+):(?P<tid>\d+)\s+)?"
    r"(?:\[(?P<dev>\d+)\]\s+)?NCCL INFO\s+(?P<msg>.*)$"
)
_COLL = re.compile(
    r"^(?P<op_name>[A-Za-z0-9_]+): opCount (?P<op_count>[0-9a-fA-F]+) "
    r"sendbuff (?P<sendbuff>\S+) recvbuff (?P<recvbuff>\S+) count (?P<count>\d+) "
    r"datatype (?P<datatype>\d+) op (?P<op>\d+) root (?P<root>-?\d+) comm (?P<comm>\S+)"
    r"(?: \[nranks=(?P<nranks>\d+)\])? stream (?P<stream>\S+)"
)
_TUNING = re.compile(
    r"^(?:(?P<op_name>[A-Za-z0-9_]+):\s*)?(?P<nbytes>\d+) Bytes -> Algo (?P<algo>\w+) "
    r"proto (?P<proto>\w+)(?: channel\{Lo\.\.Hi\}=\{(?P<lo>\d+)\.\.(?P<hi>\d+)\})?"
    r"(?: time (?P<time>[\d.]+))?(?: comm (?P<comm>0x[0-9a-fA-F]+))?")
_INIT = re.compile(r"comm (?P<comm>0x[0-9a-fA-F]+|\(nil\)) rank (?P<rank>\d+) nranks (?P<nranks>\d+)"
                   r"(?:.*?commId (?P<comm_id>0x[0-9a-fA-F]+))?")
_RANK_IN_NAME = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)
#: a launcher's tag before the line (``mpirun --tag-output``: ``[1,0]<stdout>:``, ``[0] ``;
#: ``srun -l``: ``0: ``; Ray: ``(RayTrainWorker pid=615, ip=10.0.0.1) ``)
_TAG = re.compile(r"^(?:\[\d+(?:,\d+)*\](?:<\w+>)?:?\s*|\d+:\s+|\(\w+ pid=\d+[^)]*\)\s*)")

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
    "comm_id": "the communicator's commId (the same on every rank, Init line), else ''",
    "algorithm": "algorithm NCCL chose (ring, tree, nvls, collnet_direct, ...), '' unknown",
    "protocol": "protocol NCCL chose (ll, ll128, simple), '' unknown",
    "channels": "channels the call ran on (TUNING channel{Lo..Hi}), -1 unknown",
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


def _lines_of(source: str | Path | Iterable[str], rank: int | None):
    if not isinstance(source, (str, Path)):
        return source, rank
    path = Path(source)
    if rank is None:
        m = _RANK_IN_NAME.search(path.name)
        rank = int(m.group(1)) if m else None
    try:
        return path.read_text(errors="replace").splitlines(), rank
    except FileNotFoundError:
        raise TracekitError("no such NCCL log; check the path", path=str(path)) from None
    except OSError as exc:
        raise TracekitError(f"cannot read NCCL log ({exc.strerror})", path=str(path)) from None


def _tuning_choice(tm: re.Match) -> tuple[str, str, int]:
    """(algorithm, protocol, channels) of a tuning line, names lowercased."""
    algo, proto = tm.group("algo"), tm.group("proto")
    algo = NCCL_ALGOS.get(int(algo), "") if algo.isdigit() else algo.lower()
    proto = NCCL_PROTOS.get(int(proto), "") if proto.isdigit() else proto.lower()
    channels = int(tm.group("hi")) - int(tm.group("lo")) + 1 if tm.group("lo") else -1
    return algo, proto, channels


def parse_tuning_line(line: str) -> dict | None:
    """One NCCL tuning line (either format, with or without prefix) -> ``{"op_name",
    "nbytes", "algorithm", "protocol", "channels"}``; None for any other line.

    >>> parse_tuning_line("NCCL INFO AllReduce: 4096 Bytes -> Algo TREE proto LL "
    ...                   "channel{Lo..Hi}={0..1}")["channels"]
    2
    """
    pm = _PREFIX.match(_TAG.sub("", line.strip(), count=1))
    tm = _TUNING.match(pm.group("msg")) if pm else None
    if tm is None:
        return None
    algo, proto, channels = _tuning_choice(tm)
    return {"op_name": tm.group("op_name") or "", "nbytes": int(tm.group("nbytes")),
            "algorithm": algo, "protocol": proto, "channels": channels}


def parse_nccl_log(
    source: str | Path | Iterable[str], *, rank: int | None = None
) -> pd.DataFrame:
    """Parse NCCL log lines (a file path or an iterable of lines) into a table with the
    columns of :data:`NCCL_LOG_COLUMNS`, one row per collective line, in file order.

    ``rank`` defaults to the number in the file name (``rank3.log``), else -1. Lines that
    are not NCCL lines (other programs' output) are skipped. A tuning line gives its
    choice to the earliest earlier collective line of the same process still without
    one whose operation and size it names.
    """
    lines, rank = _lines_of(source, rank)
    rows, choices = [], []
    comm_rank: dict[str, int] = {}
    comm_id: dict[str, str] = {}
    waiting: list[int] = []  # rows without a tuning choice yet, oldest first
    for number, raw in enumerate(lines, start=1):
        pm = _PREFIX.match(_TAG.sub("", raw.strip(), count=1))
        if pm is None:
            continue
        msg = pm.group("msg")
        cm = _COLL.match(msg)
        if cm is not None:
            rows.append((number, pm, cm))
            choices.append(("", "", -1))
            waiting.append(len(rows) - 1)
            continue
        tm = _TUNING.match(msg)
        if tm is not None:
            _pair_tuning(tm, rows, choices, waiting, pm.group("pid"))
            continue
        im = _INIT.search(msg)
        if im is not None and "Init COMPLETE" in msg:
            comm_rank[im.group("comm")] = int(im.group("rank"))
            if im.group("comm_id"):
                comm_id[im.group("comm")] = im.group("comm_id")
    return _table(rows, choices, comm_rank, comm_id, -1 if rank is None else rank)


def _pair_tuning(tm: re.Match, rows: list, choices: list, waiting: list[int],
                 pid: str | None) -> None:
    nbytes = int(tm.group("nbytes"))
    op_name = tm.group("op_name")
    for k, i in enumerate(waiting):
        _, pm, cm = rows[i]
        if pid and pm.group("pid") and pm.group("pid") != pid:
            continue
        if op_name and cm.group("op_name") != op_name:
            continue
        elem = NCCL_DATATYPES.get(int(cm.group("datatype")), ("", 0))[1]
        count = int(cm.group("count"))
        n = int(cm.group("nranks") or 1)
        if elem and nbytes not in (count * elem, count * elem * n):
            continue
        choices[i] = _tuning_choice(tm)
        del waiting[:k + 1]  # earlier calls without a line will not get one
        return


def _table(rows: list, choices: list, comm_rank: dict[str, int], comm_id: dict[str, str],
           rank: int) -> pd.DataFrame:
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
        "comm_id": [comm_id.get(c, "") for c in comms],
        "algorithm": [c[0] for c in choices],
        "protocol": [c[1] for c in choices],
        "channels": np.array([c[2] for c in choices], dtype=np.int64),
    })
    assert list(df.columns) == list(NCCL_LOG_COLUMNS)
    return df


def read_nccl_logs(run_dir: str | Path) -> pd.DataFrame:
    """Parse every ``<run>/nccl/*.log`` (rank from each file name) into one table, and
    give each rank's calls the algorithm / protocol / channels that the communicator's
    rank 0 logged for the same call (:func:`share_tuning`)."""
    folder = Path(run_dir) / "nccl"
    files = sorted(folder.glob("*.log")) if folder.is_dir() else []
    tables = [parse_nccl_log(f) for f in files]
    if not tables:
        return parse_nccl_log([])
    return share_tuning(pd.concat(tables, ignore_index=True))


def share_tuning(log: pd.DataFrame) -> pd.DataFrame:
    """Rows without a tuning choice take the one logged for the same call elsewhere: the
    same communicator (``comm_id``; without one, the same operation, size and group size)
    and opCount."""
    known = (log["algorithm"] != "").to_numpy()
    if not known.any() or known.all():
        return log
    exact = list(zip(log["comm_id"], log["op_name"], log["op_count"], log["count"],
                     log["nranks"]))
    loose = [k[1:] for k in exact]
    cols = ("algorithm", "protocol", "channels")
    values = {c: log[c].to_numpy(copy=True) for c in cols}
    by_exact = {exact[i]: i for i in np.flatnonzero(known)}
    by_loose = {loose[i]: i for i in np.flatnonzero(known)}
    for i in np.flatnonzero(~known):
        j = by_exact.get(exact[i])
        if j is None and not exact[i][0]:
            j = by_loose.get(loose[i])
        if j is not None:
            for c in cols:
                values[c][i] = values[c][j]
    out = log.copy()
    for c in cols:
        out[c] = values[c]
    return out
