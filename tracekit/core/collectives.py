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

Before / after for three events (``args`` abridged)::

    ncclKernel_AllReduce_RING_LL_Sum_float  {"Collective name": "allreduce",
                                             "In msg nelems": 7875584, "dtype": "Float"}
      -> collective 'all_reduce', in_nelems 7875584, comm_bytes 31502336, is_comm True
    gloo:all_reduce  {"Input Dims": [[131584]], "Input type": ["float"]}
      -> collective 'all_reduce', in_nelems 131584, dtype 'float', comm_bytes 526336
    c10d::allreduce_ {"Input Dims": [[[131584]], [], ...], "Input type": ["TensorList", ...]}
      -> collective 'all_reduce', comm_bytes -1 (no dtype), is_comm False (it only queues)
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from itertools import repeat
from math import prod

import msgspec
import numpy as np

from tracekit.core.nccl_kernels import is_nccl_kernel
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
_NCCL_KERNEL_PREFIXES = ("ncclKernel", "ncclDevKernel")
_COMM_PREFIXES = ("gloo:", "nccl:", "c10d::", "record_param_comms") + _NCCL_KERNEL_PREFIXES

#: the values of the ``collective`` column, '' first (the category order of the column)
COLLECTIVE_VALUES: list[str] = [""] + [c.value for c in Collective]
_COLLECTIVE_CODE = {v: i for i, v in enumerate(COLLECTIVE_VALUES)}


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


def _is_shape(d) -> bool:
    return isinstance(d, list) and all(type(x) is int and x >= 0 for x in d)


def _is_tensor_type(t) -> bool:
    """An ``Input type`` entry that names a tensor's dtype ('float', 'c10::Half', ...), not
    'Scalar', 'ScalarList', 'TensorList' or '' (any other argument)."""
    return isinstance(t, str) and t != "" and t != "Scalar" and not t.endswith("List")


def input_nelems(dims, types) -> list[int]:
    """Element count of each tensor input, from ``Input Dims`` and ``Input type``.

    ``Input Dims`` lists one entry per operator argument: a shape for a tensor (``[]`` for
    a 0-d tensor), a list of shapes for a ``TensorList``, ``[]`` for anything else.
    ``Input type`` says which is which; without it a non-empty shape counts as a tensor.

    >>> input_nelems([[2048], [4096], [], []], ["float", "float", "", "Scalar"])
    [2048, 4096]
    >>> input_nelems([[[131584]], [], []], ["TensorList", "", ""])
    [131584]
    >>> input_nelems([[]], ["float"])  # a 0-d tensor holds one element
    [1]
    """
    if not isinstance(dims, list):
        return []
    typed = isinstance(types, list) and len(types) == len(dims)
    out = []
    for i, d in enumerate(dims):
        t = types[i] if typed else None
        if t == "TensorList" or (t is None and d and all(isinstance(x, list) for x in d)):
            shapes = [s for s in d if _is_shape(s)] if isinstance(d, list) else []
            if shapes:
                out.append(sum(prod(s) for s in shapes))
        elif _is_shape(d) and (_is_tensor_type(t) or (t is None and len(d) > 0)):
            out.append(prod(d))
    return out


def _first_dtype(types) -> str:
    if not isinstance(types, list):
        return ""
    return next((t for t in types if isinstance(t, str) and dtype_bytes(t)), "")


def _as_int(v) -> int:
    """A recorded number (int, float, numeric string) -> int in int64 range, -1 if none."""
    if v is None or isinstance(v, bool):
        return -1
    try:
        x = int(float(v)) if type(v) is not int else v
    except (TypeError, ValueError, OverflowError):
        return -1
    return x if -(2**63) <= x < 2**63 else -1


@dataclass(frozen=True, kw_only=True)
class CommFields:
    """Collective columns for the events at ``index`` (every other event has none).

    ``collective`` holds codes into :data:`COLLECTIVE_VALUES`; the string columns are
    Python lists aligned with ``index``.
    """

    index: np.ndarray
    is_comm: np.ndarray
    collective: np.ndarray
    comm_bytes: np.ndarray
    in_nelems: np.ndarray
    out_nelems: np.ndarray
    dtype: list[str]
    group_size: np.ndarray
    pg_name: list[str]
    pg_ranks: list[str]
    seq: np.ndarray


def _has_comm_args(a) -> bool:
    return (
        a.collective_name is not None
        or len(a.input_dims) > 0
        or a.in_nelems != -1
        or a.out_nelems != -1
        or a.group_size != -1
        or a.seq != -1
        or a.dtype is not None
        or a.pg_name is not None
        or len(a.pg_ranks) > 0
    )


def _raw(value: msgspec.Raw):
    """Raw JSON kept by the parser -> its Python value (None when the arg was absent)."""
    return msgspec.json.decode(value) if len(value) else None


def _name_classes(name_uniques: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct name: its collective code, and 1 for an NCCL kernel, 2 for a gloo
    event (the transfers), else 0."""
    coll_of_name = np.zeros(len(name_uniques), dtype=np.int8)
    transfer_name = np.zeros(len(name_uniques), dtype=np.int8)
    unknown = _COLLECTIVE_CODE[Collective.UNKNOWN.value]
    for code, nm in enumerate(name_uniques):
        nccl_kernel = is_nccl_kernel(nm)
        if nm.startswith(_COMM_PREFIXES) or nccl_kernel:
            coll_of_name[code] = _COLLECTIVE_CODE[normalize_collective(nm)]
            if nm.startswith("gloo:"):
                transfer_name[code] = 2
            elif nccl_kernel:
                transfer_name[code] = 1
                # ncclDevKernel_Generic: a collective, which one the launching op says
                coll_of_name[code] = coll_of_name[code] or unknown
    return coll_of_name, transfer_name


def comm_fields(
    name_codes: np.ndarray,
    name_uniques: list[str],
    is_kernel: np.ndarray,
    is_step: np.ndarray,
    args: list,
) -> CommFields:
    """Collective fields of the events that are collectives.

    Candidates are found per distinct name (``name_codes`` index ``name_uniques``), plus
    any event with a ``Collective name`` argument. Everything that depends only on the
    name is computed once per name; only candidates that carry collective arguments cost
    a Python-level look.
    """
    n_names = len(name_uniques)
    coll_of_name, transfer_name = _name_classes(name_uniques)
    cand = coll_of_name[name_codes] > 0 if n_names else np.zeros(len(args), dtype=bool)
    named = [a.collective_name for a in args]
    with_arg = np.flatnonzero(np.fromiter(map(operator.is_not, named, repeat(None)),
                                          dtype=bool, count=len(named)))
    if len(with_arg):
        cand[with_arg] = True
    cand &= ~is_step
    index = np.flatnonzero(cand)
    m = len(index)
    codes = name_codes[index]
    collective = coll_of_name[codes].astype(np.int8)
    tname = transfer_name[codes]
    is_comm = (tname == 2) | ((tname == 1) & is_kernel[index])
    comm_bytes = np.full(m, -1, dtype=np.int64)
    in_n = np.full(m, -1, dtype=np.int64)
    out_n = np.full(m, -1, dtype=np.int64)
    group_size = np.full(m, -1, dtype=np.int64)
    seq = np.full(m, -1, dtype=np.int64)
    dtypes, pg_names, pg_ranks = [""] * m, [""] * m, [""] * m

    for j in range(m):
        a = args[index[j]]
        if not _has_comm_args(a):
            continue
        if a.collective_name is not None:
            named = _COLLECTIVE_CODE[normalize_collective(str(a.collective_name))]
            if named:
                collective[j] = named
        i_n, o_n = _as_int(a.in_nelems), _as_int(a.out_nelems)
        dt = a.dtype if isinstance(a.dtype, str) else ""
        if i_n < 0 and len(a.input_dims):
            types = _raw(a.input_type)
            counts = [c if c < 2**62 else -1 for c in input_nelems(_raw(a.input_dims), types)]
            if counts:
                i_n = counts[0]
                if len(counts) > 1:
                    o_n = max(counts[1:])
            if not dt:
                dt = _first_dtype(types)
        in_n[j], out_n[j] = i_n, o_n
        dtypes[j] = dt
        size = dtype_bytes(dt) if dt else 0
        biggest = max(i_n, o_n)
        if size and 0 <= biggest < 2**63 // size:
            comm_bytes[j] = biggest * size
        group_size[j] = _as_int(a.group_size)
        seq[j] = _as_int(a.seq)
        if a.pg_name is not None:
            pg_names[j] = str(a.pg_name)
        if len(a.pg_ranks):
            pg_ranks[j] = str(_raw(a.pg_ranks))

    keep = collective > 0  # a 'Collective name' that names nothing known is not a collective
    if not keep.all():
        sel = np.flatnonzero(keep)
        index, collective, is_comm = index[sel], collective[sel], is_comm[sel]
        comm_bytes, in_n, out_n = comm_bytes[sel], in_n[sel], out_n[sel]
        group_size, seq = group_size[sel], seq[sel]
        dtypes = [dtypes[k] for k in sel]
        pg_names = [pg_names[k] for k in sel]
        pg_ranks = [pg_ranks[k] for k in sel]
    group_size = np.where((group_size >= -1) & (group_size < 2**31), group_size, -1)
    return CommFields(
        index=index,
        is_comm=is_comm,
        collective=collective,
        comm_bytes=comm_bytes,
        in_nelems=in_n,
        out_nelems=out_n,
        dtype=dtypes,
        group_size=group_size,
        pg_name=pg_names,
        pg_ranks=pg_ranks,
        seq=seq,
    )
