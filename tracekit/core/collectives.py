"""Recognize collectives in trace events and pull out their size, group and sequence.

Three generations of traces describe collectives differently:

- newer NCCL kernels and ``record_param_comms`` carry ``Collective name``, ``In msg nelems``,
  ``Out msg nelems``, ``Group size``, ``dtype``, ``Process Group Name`` / ``Ranks``, ``Seq``;
- older ones only have the kernel name (``ncclKernel_AllReduce_RING_LL_Sum_float``) or an
  annotation (``nccl:all_reduce``), sometimes with ``Input Dims`` / ``Input type``;
- gloo runs on the CPU: ``c10d::allreduce_`` on the calling thread queues the work and a
  ``gloo:all_reduce`` event on a ``pt_gloo_runloop`` thread performs it, with
  ``Input Dims`` and ``Input type``.

``comm_bytes`` is always the size of the full (unsharded) buffer: the all-reduced tensor,
the reduce-scatter input, the all-gather output. Cost models derive the bytes each
algorithm moves from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tracekit.core.schema import Collective, dtype_bytes

_KEYWORDS = [
    ("reducescatter", Collective.REDUCE_SCATTER),
    ("allgather", Collective.ALL_GATHER),
    ("alltoall", Collective.ALL_TO_ALL),
    ("allreduce", Collective.ALL_REDUCE),
    ("broadcast", Collective.BROADCAST),
    ("sendrecv", Collective.SEND_RECV),
    ("barrier", Collective.BARRIER),
    ("send", Collective.SEND),
    ("recv", Collective.RECV),
    ("gather", Collective.GATHER),
    ("scatter", Collective.SCATTER),
    ("reduce", Collective.REDUCE),
]
_NCCL_KERNEL = re.compile(r"^nccl(?:Dev)?Kernel_([A-Za-z]+)")
_COMM_PREFIXES = ("gloo:", "nccl:", "c10d::", "record_param_comms")


def normalize_collective(text: str) -> str:
    """Any spelling of a collective -> a :class:`Collective` value, or '' if none.

    >>> normalize_collective("_reduce_scatter_base")
    'reduce_scatter'
    >>> normalize_collective("ncclKernel_AllReduce_RING_LL_Sum_float")
    'all_reduce'
    """
    m = _NCCL_KERNEL.match(text)
    if m:
        text = m.group(1)
    key = re.sub(r"[^a-z]", "", text.lower().split("::")[-1].split(":")[-1])
    for word, coll in _KEYWORDS:
        if word in key:
            return coll.value
    return ""


def is_comm_transfer(name: str, cat: str) -> bool:
    """True for the event that performs a collective: an NCCL kernel or a gloo:* event."""
    if name.startswith("gloo:"):
        return True
    return cat == "kernel" and name.startswith(("ncclKernel", "ncclDevKernel"))


def _dims_nelems(dims) -> list[int]:
    """``Input Dims`` -> element count of each tensor input (a TensorList input sums)."""
    out = []
    if not isinstance(dims, list):
        return out
    for d in dims:
        if isinstance(d, list) and d and all(isinstance(x, int) for x in d):
            out.append(int(np.prod(d)))
        elif isinstance(d, list) and d and all(isinstance(x, list) for x in d):
            out.append(sum(int(np.prod(t)) for t in d if t and all(isinstance(x, int) for x in t)))
    return out


def _as_int(v) -> int:
    if v is None:
        return -1
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return -1


@dataclass
class CommFields:
    """Collective columns for the events at ``index`` (every other event has none)."""

    index: np.ndarray
    is_comm: np.ndarray
    collective: list[str]
    comm_bytes: np.ndarray
    in_nelems: np.ndarray
    out_nelems: np.ndarray
    dtype: list[str]
    group_size: np.ndarray
    pg_name: list[str]
    pg_ranks: list[str]
    seq: np.ndarray


def comm_fields(
    name_codes: np.ndarray,
    name_uniques: list[str],
    is_kernel: np.ndarray,
    is_step: np.ndarray,
    args: list,
) -> CommFields:
    """Collective fields of the events that are collectives.

    Candidates are found per distinct name (``pd.factorize`` codes), plus any event with a
    ``Collective name`` argument, so only those few events cost a Python-level look.
    """
    coll_of_name = {}
    for code, nm in enumerate(name_uniques):
        if nm.startswith(_COMM_PREFIXES) or nm.startswith(("ncclKernel", "ncclDevKernel")):
            coll = normalize_collective(nm)
            if coll:
                coll_of_name[code] = coll
    cand = np.isin(name_codes, list(coll_of_name)) if coll_of_name else np.zeros(len(args), bool)
    with_arg = [i for i, a in enumerate(args) if a.collective_name is not None]
    if with_arg:
        cand[with_arg] = True
    cand &= ~is_step
    index = np.flatnonzero(cand)
    m = len(index)
    out = CommFields(
        index=index,
        is_comm=np.zeros(m, dtype=bool),
        collective=[""] * m,
        comm_bytes=np.full(m, -1, dtype=np.int64),
        in_nelems=np.full(m, -1, dtype=np.int64),
        out_nelems=np.full(m, -1, dtype=np.int64),
        dtype=[""] * m,
        group_size=np.full(m, -1, dtype=np.int64),
        pg_name=[""] * m,
        pg_ranks=[""] * m,
        seq=np.full(m, -1, dtype=np.int64),
    )
    for j, i in enumerate(index):
        a = args[i]
        nm = name_uniques[name_codes[i]]
        coll = coll_of_name.get(name_codes[i], "")
        if a.collective_name is not None:
            coll = normalize_collective(str(a.collective_name)) or coll
        if not coll:
            continue
        out.collective[j] = coll
        out.is_comm[j] = nm.startswith("gloo:") or (
            bool(is_kernel[i]) and nm.startswith(("ncclKernel", "ncclDevKernel"))
        )
        i_n, o_n = _as_int(a.in_nelems), _as_int(a.out_nelems)
        dt = str(a.dtype) if a.dtype is not None else ""
        if i_n < 0 and a.input_dims is not None:
            counts = _dims_nelems(a.input_dims)
            if counts:
                i_n = counts[0]
                if len(counts) > 1:
                    o_n = max(counts[1:])
            if not dt and isinstance(a.input_type, list):
                dt = next((str(t) for t in a.input_type if t and dtype_bytes(str(t))), "")
        out.in_nelems[j], out.out_nelems[j] = i_n, o_n
        out.dtype[j] = dt
        size = dtype_bytes(dt)
        if size and max(i_n, o_n) >= 0:
            out.comm_bytes[j] = max(i_n, o_n) * size
        out.group_size[j] = _as_int(a.group_size)
        out.seq[j] = _as_int(a.seq)
        if a.pg_name is not None:
            out.pg_name[j] = str(a.pg_name)
        if a.pg_ranks is not None:
            out.pg_ranks[j] = str(a.pg_ranks)
    return out
