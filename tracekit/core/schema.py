"""The event table: tracekit's stable, columnar representation of one trace.

Every trace, whatever Kineto shape it came in, becomes one pandas DataFrame with exactly
the columns of :data:`EVENT_COLUMNS`, one row per duration event (Chrome ``ph: "X"``),
sorted by ``(rank, lane_kind, lane, ts_ns)``. A run's table concatenates its ranks.

Before (Kineto JSON, two of the 216k events of a GPU trace)::

    {"ph":"X","cat":"cuda_runtime","name":"cudaLaunchKernel","pid":783658,"tid":783658,
     "ts":1669783687389292,"dur":32,"args":{"External id":73689,"correlation":73689}}
    {"ph":"X","cat":"kernel","name":"ncclKernel_AllReduce_RING_LL_Sum_float(...)","pid":1,
     "tid":14,"ts":1669783687929439,"dur":15,"args":{"stream":14,"correlation":153197, ...}}

After (one row each; absent values are -1 or "")::

    rank lane_kind  lane    name              kind    ts_ns            dur_ns correlation collective comm_bytes
    1    cpu        783658  cudaLaunchKernel  launch  16697836873892.. 32000  73689       ""         -1
    1    gpu        14      ncclKernel_All..  comm    16697836879294.. 15000  153197      all_reduce -1

Times are integer nanoseconds on one clock shared by every rank of a run: absolute
epoch time (``baseTimeNanoseconds`` + relative ``ts`` for newer traces, ``ts`` in
absolute microseconds for older ones). Steps come from ``ProfilerStep#N`` annotations
(``step`` is N, or -1 outside every step); a trace with none is one window, step 0.
"""

from __future__ import annotations

from enum import Enum

import numpy as np


class LaneKind(str, Enum):
    """Where an event runs: a host thread or a device stream. Comm channels are derived later."""

    CPU = "cpu"
    GPU = "gpu"


class EventKind(str, Enum):
    """What an event is, decided once at ingestion so that no later stage re-parses names.

    - ``STEP``: a ``ProfilerStep#N`` annotation (one per step and rank; not a resource user).
    - ``ANNOTATION``: other ``record_function`` / user annotations (module boundaries, ...).
    - ``CPU_OP``: an operator on a host thread (``aten::*``, autograd nodes, ``c10d::*``).
    - ``LAUNCH``: a CUDA runtime call that puts work on a stream (kernel launch, memcpy,
      memset, ``cudaStreamWaitEvent``); linked to its GPU event by ``correlation``.
    - ``RUNTIME``: any other CUDA runtime / driver call (``cudaStreamSynchronize`` ...).
    - ``KERNEL``: a GPU compute kernel.
    - ``MEMCPY`` / ``MEMSET``: GPU copies and fills.
    - ``SYNC``: a ``cuda_sync`` event (stream wait event, stream / context synchronize).
    - ``COMM``: the transfer of a collective occupying a resource: an NCCL kernel on a GPU
      stream, or a ``gloo:*`` event on a gloo worker thread.
    """

    STEP = "step"
    ANNOTATION = "annotation"
    CPU_OP = "cpu_op"
    LAUNCH = "launch"
    RUNTIME = "runtime"
    KERNEL = "kernel"
    MEMCPY = "memcpy"
    MEMSET = "memset"
    SYNC = "sync"
    COMM = "comm"


class Collective(str, Enum):
    """Normalized collective names, whatever the backend calls them."""

    ALL_REDUCE = "all_reduce"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_GATHER = "all_gather"
    ALL_TO_ALL = "all_to_all"
    BROADCAST = "broadcast"
    REDUCE = "reduce"
    GATHER = "gather"
    SCATTER = "scatter"
    SEND = "send"
    RECV = "recv"
    SEND_RECV = "send_recv"
    BARRIER = "barrier"
    #: an NCCL kernel that does not say which collective it runs (``ncclDevKernel_Generic``)
    #: and whose launching op does not either
    UNKNOWN = "unknown"


#: Column name -> (dtype, meaning). The order is the table's column order. Stable: new
#: columns are only ever appended.
EVENT_COLUMNS: dict[str, tuple[str, str]] = {
    "rank": ("int32", "global rank of the process that recorded the event"),
    "lane_kind": ("category", "'cpu' (host thread) or 'gpu' (device stream), see LaneKind"),
    "lane": ("int64", "thread id for cpu lanes, stream id for gpu lanes"),
    "lane_name": ("category", "thread name ('pt_gloo_runloop', 'python main') or 'stream N'"),
    "pid": ("int64", "Kineto pid (process id on cpu, device index on gpu)"),
    "name": ("category", "event name as recorded"),
    "cat": ("category", "Kineto category ('cpu_op', 'kernel', 'cuda_runtime', ...)"),
    "kind": ("category", "what the event is, see EventKind"),
    "ts_ns": ("int64", "start, integer ns on the run's common (epoch) clock"),
    "end_ns": ("int64", "end, ns, ts_ns + dur_ns"),
    "dur_ns": ("int64", "duration, ns"),
    "step": ("int32", "ProfilerStep number containing the start, -1 if none (0: no steps)"),
    "correlation": ("int64", "CUDA correlation id linking a launch to its GPU event, -1"),
    "external_id": ("int64", "Kineto 'External id' linking GPU work to its cpu_op, -1"),
    "collective": ("category", "normalized collective name (see Collective), '' if none"),
    "comm_bytes": ("int64", "bytes of the full (unsharded) buffer of a collective, -1 unknown"),
    "in_nelems": ("int64", "input elements of a collective, -1 unknown"),
    "out_nelems": ("int64", "output elements of a collective, -1 unknown"),
    "dtype": ("category", "element type of a collective ('Float', 'float', ...), ''"),
    "group_size": ("int32", "number of ranks in the collective's group, -1 unknown"),
    "pg_name": ("category", "process group name ('0' is the default group), ''"),
    "pg_ranks": ("category", "ranks of the process group as recorded, e.g. '[0, 1]', ''"),
    "seq": ("int64", "collective sequence number within its process group, -1 unknown"),
    "wait_on_stream": ("int64", "SYNC: the stream waited on ('Stream Wait Event'), -1"),
    "wait_on_corr": ("int64", "SYNC: correlation of the cudaEventRecord waited on, -1"),
    "nccl_algo": ("category", "NCCL kernel: algorithm (ring, tree, nvls, ...) from NCCL's "
                  "log, else from the kernel name, ''"),
    "nccl_proto": ("category", "NCCL kernel: protocol (ll, ll128, simple), as nccl_algo, ''"),
    "nccl_channels": ("int32", "NCCL kernel: channels it ran on (NCCL's log), -1 unknown"),
    "nccl_comm": ("category", "NCCL kernel: its communicator (commId, else address) from "
                  "NCCL's log, ''"),
    "nested_events": ("int16", "host events nested inside this one that the compact table "
                      "leaves out (tracekit.core.reduce), 0: what a graph node stands for "
                      "besides itself when the profiler's per-event cost is taken out"),
}

#: Integer columns use -1 for "absent"; string columns use "".
MISSING_INT = -1

#: Bytes per element for the dtype spellings seen in Kineto traces and record_param_comms.
DTYPE_BYTES: dict[str, int] = {
    "float": 4, "float32": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8,
    "double": 8, "int": 4, "int32": 4, "int64": 8, "long": 8, "int16": 2, "short": 2,
    "int8": 1, "uint8": 1, "char": 1, "byte": 1, "bool": 1, "c10::half": 2,
    "c10::bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1, "complexfloat": 8,
    # caffe2::TypeMeta spellings used by "Input type" (record_shapes)
    "long int": 8, "short int": 2, "signed char": 1, "unsigned char": 1,
    "unsigned short": 2, "unsigned int": 4, "unsigned long": 8,
    "c10::complex<float>": 8, "c10::complex<double>": 16, "c10::complex<c10::half>": 4,
    "c10::float8_e4m3fn": 1, "c10::float8_e5m2": 1, "complexdouble": 16,
}


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype spelling (``'Float'``, ``'c10::Half'``, ``'torch.float32'``);
    0 when unknown."""
    key = dtype.strip().lower().removeprefix("torch.").removeprefix("at::")
    return DTYPE_BYTES.get(key, 0)


def empty_events() -> pd.DataFrame:  # noqa: F821 - pandas imported lazily
    """An event table with no rows and the exact schema."""
    import pandas as pd

    data = {}
    for col, (dt, _) in EVENT_COLUMNS.items():
        if dt == "category":
            data[col] = pd.Categorical([])
        else:
            data[col] = np.empty(0, dtype=dt)
    return pd.DataFrame(data)


def check_schema(df) -> None:
    """Assert that ``df`` has exactly the event-table columns and dtypes (for tests and
    for code that builds tables by hand, e.g. the replayed timeline)."""
    cols = list(df.columns)
    expected = list(EVENT_COLUMNS)
    if cols[: len(expected)] != expected:
        missing = [c for c in expected if c not in cols]
        raise AssertionError(f"event table columns differ; missing {missing}, got {cols}")
    for col, (dt, _) in EVENT_COLUMNS.items():
        got = str(df[col].dtype)
        if got != dt:
            raise AssertionError(f"column {col!r} has dtype {got}, expected {dt}")


def events_from_rows(rows: list[dict]) -> pd.DataFrame:  # noqa: F821
    """An event table with the exact schema from a few hand-written rows (tests, examples).

    Each row gives ``ts_ns`` and ``dur_ns`` and any other columns; ``end_ns`` is derived,
    absent integer columns are -1 (``nested_events`` 0) and absent string columns ''.
    """
    import pandas as pd

    data = {}
    for col, (dt, _) in EVENT_COLUMNS.items():
        if col == "end_ns":
            values = [r["ts_ns"] + r["dur_ns"] for r in rows]
        elif dt == "category":
            values = [str(r.get(col, "")) for r in rows]
        else:
            values = [r.get(col, 0 if col == "nested_events" else MISSING_INT) for r in rows]
        data[col] = pd.Series(values, dtype=dt)
    return pd.DataFrame(data)
