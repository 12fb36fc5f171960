"""NCCL / RCCL kernels of every version, and the host ops that say what they are.

Kernel names changed over NCCL's life, and some say nothing about the collective:

=====================  ====================================================  ==============
NCCL                   kernel name                                           says
=====================  ====================================================  ==============
<= 2.6                 ``ncclAllReduceRingLLKernel_sum_f32(CollectiveArgs)``  coll, algo, proto
2.7 - 2.18             ``ncclKernel_AllReduce_RING_LL_Sum_float(...)``        coll, algo, proto
2.19+                  ``ncclDevKernel_AllGather_RING_LL(...)``,              coll, algo, proto
                       ``ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL``
2.19+, RCCL            ``ncclDevKernel_Generic(ncclDevKernelArgsStorage<4096ul>)``  nothing
MSCCL                  ``mscclKernel_Sum_float_LL(...)``                      proto
=====================  ====================================================  ==============

(``SendRecv`` kernels name no algorithm.) A kernel name names the kernel NCCL compiled,
not always the algorithm it ran (a ``_RING_LL`` kernel can run Simple); the NCCL log's
tuning line, when captured, is the authority (:mod:`tracekit.core.nccl_log`).

:func:`link_host_collectives` fills what a kernel lacks (the collective of a ``Generic``
kernel, what a ``SendRecv`` kernel ran for, sizes in older traces whose kernels carry no
``Collective name`` args) from the host op that launched it: the innermost ``record_param_comms`` / ``nccl:*`` / ``c10d::*``
op around its launch call on the same thread, else a ``nccl:*`` GPU annotation around the
kernel on its stream (CUDA-graph replays have no launch per kernel).

Example::

    host thread  record_param_comms [100, 160] {"Collective name": "allreduce",
                                                 "In msg nelems": 2873320, "dtype": "BFloat16"}
                   hipLaunchKernel [120, 130] correlation 4079
    stream 4     ncclDevKernel_Generic [200, 8730] correlation 4079
    -> the kernel: collective all_reduce, in_nelems 2873320, dtype BFloat16, comm_bytes 5746640
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from tracekit.core.schema import Collective, EventKind, LaneKind

_PREFIXES = ("ncclKernel", "ncclDevKernel", "mscclKernel", "rcclKernel")
#: NCCL <= 2.6: ncclAllReduceRingLLKernel_sum_f32, ncclBroadcastTreeLL128Kernel_copy_i8
_OLD_NAME = re.compile(r"^nccl(AllReduce|AllGather|ReduceScatter|Broadcast|Reduce|SendRecv|"
                       r"Send|Recv)(Ring|Tree|CollNet)?(LL128|LL|Simple)?Kernel")
_ALGO_PROTO = re.compile(
    r"_(RING|TREE|COLLNET_DIRECT|COLLNET_CHAIN|COLLNET|NVLS_TREE|NVLS|PAT)_(LL128|LL|SIMPLE)"
    r"(?![A-Za-z])", re.IGNORECASE)
_PROTO_ONLY = re.compile(r"_(LL128|LL|SIMPLE)(?![A-Za-z])", re.IGNORECASE)
_HOST_COMM = ("record_param_comms", "nccl:", "c10d::")
#: the collective columns copied from the launching host op where the kernel has none
_FILL_INT = ("comm_bytes", "in_nelems", "out_nelems", "group_size", "seq")
_FILL_STR = ("dtype", "pg_name", "pg_ranks")


def is_nccl_kernel(name: str) -> bool:
    """True for the name of an NCCL / RCCL / MSCCL device kernel of any version."""
    return name.startswith(_PREFIXES) or _OLD_NAME.match(name) is not None


def algo_proto_of_kernel(name: str) -> tuple[str, str]:
    """``('ring', 'll')`` from a kernel name that says it; ``''`` for what it does not.

    >>> algo_proto_of_kernel("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*)")
    ('ring', 'll')
    >>> algo_proto_of_kernel("ncclAllReduceTreeLL128Kernel_sum_f16(CollectiveArgs)")
    ('tree', 'll128')
    >>> algo_proto_of_kernel("ncclDevKernel_Generic(ncclDevKernelArgsStorage<4096ul>)")
    ('', '')
    """
    head = name.split("(", 1)[0]
    m = _OLD_NAME.match(head)
    if m:
        return (m.group(2) or "").lower(), (m.group(3) or "").lower()
    m = _ALGO_PROTO.search(head)
    if m:
        return m.group(1).lower(), m.group(2).lower()
    if head.startswith("mscclKernel"):
        p = _PROTO_ONLY.search(head)
        return "", p.group(1).lower() if p else ""
    return "", ""


def nccl_kernel_columns(name_codes: np.ndarray, name_uniques: list[str],
                        is_kernel: np.ndarray) -> dict:
    """The ``nccl_*`` columns of the event table at ingestion: algorithm and protocol
    from NCCL kernel names (decided once per distinct name); channels and communicator
    come only from NCCL's log (:mod:`tracekit.core.nccl_attach`)."""
    n = len(name_codes)
    algo_of = np.zeros(len(name_uniques), dtype=np.int32)
    proto_of = np.zeros(len(name_uniques), dtype=np.int32)
    algos, protos = {"": 0}, {"": 0}
    for code, nm in enumerate(name_uniques):
        if is_nccl_kernel(nm):
            a, p = algo_proto_of_kernel(nm)
            algo_of[code] = algos.setdefault(a, len(algos))
            proto_of[code] = protos.setdefault(p, len(protos))
    a_codes = np.where(is_kernel, algo_of[name_codes], 0) if n else np.zeros(0, np.int32)
    p_codes = np.where(is_kernel, proto_of[name_codes], 0) if n else np.zeros(0, np.int32)
    return {
        "nccl_algo": pd.Categorical.from_codes(a_codes, list(algos)),
        "nccl_proto": pd.Categorical.from_codes(p_codes, list(protos)),
        "nccl_channels": np.full(n, -1, dtype=np.int32),
        "nccl_comm": pd.Categorical.from_codes(np.zeros(n, dtype=np.int32), [""]),
    }


def _codes(column: pd.Series, *values: str) -> tuple[np.ndarray, list[int]]:
    """A categorical column's codes, and the code of each of ``values`` (-2, which no row
    has, for one that is not a category): comparing codes is comparing the strings."""
    cats = column.cat.categories
    where = {c: i for i, c in enumerate(cats)}
    return column.cat.codes.to_numpy(), [where.get(v, -2) for v in values]


def _name_is(names: pd.Series, prefixes: tuple[str, ...]) -> np.ndarray:
    """Per event: its (categorical) name starts with one of ``prefixes``; decided once
    per distinct name."""
    cats = names.cat.categories
    table = np.fromiter((str(c).startswith(prefixes) for c in cats), dtype=bool,
                        count=len(cats))
    codes = names.cat.codes.to_numpy()
    return table[codes] & (codes >= 0) if len(cats) else np.zeros(len(names), dtype=bool)


def _innermost(starts: np.ndarray, ends: np.ndarray, lanes: np.ndarray, t: np.ndarray,
               lane: np.ndarray) -> np.ndarray:
    """For each time ``t`` on ``lane``: the index of the latest-starting interval of that
    lane that contains it (intervals sorted by lane, start), -1 when none does. Looks back
    over a few intervals: nested collective ops are at most three or four deep. One pass
    per lane and look-back depth, in numpy."""
    out = np.full(len(t), -1, dtype=np.int64)
    key_lane = lanes.astype(np.int64)
    for ln in np.unique(lane).tolist():
        q = np.flatnonzero(lane == ln)
        lo = int(np.searchsorted(key_lane, ln, side="left"))
        hi = int(np.searchsorted(key_lane, ln, side="right"))
        tq = t[q]
        j = lo + np.searchsorted(starts[lo:hi], tq, side="right") - 1
        found = np.full(len(q), -1, dtype=np.int64)
        for back in range(9):  # j, j - 1, ... j - 8, never before the lane's first
            k = j - back
            hit = (found < 0) & (k >= lo)
            hit[hit] = ends[k[hit]] >= tq[hit]
            found[hit] = k[hit]
        out[q] = found
    return out


def link_host_collectives(events: pd.DataFrame) -> int:
    """Fill, in place, the collective fields an NCCL kernel lacks from the host op that
    launched it (see module doc). Returns the number of kernels that gained something."""
    kind, (k_comm, k_launch, k_annotation) = _codes(
        events["kind"], EventKind.COMM.value, EventKind.LAUNCH.value,
        EventKind.ANNOTATION.value)
    is_gpu = (events["lane_kind"] == LaneKind.GPU.value).to_numpy()
    comm = np.flatnonzero(is_gpu & (kind == k_comm))
    if len(comm) == 0:
        return 0
    coll, (c_none,) = _codes(events["collective"], "")
    names = events["name"]
    is_host_coll = ~is_gpu & (coll != c_none) & _name_is(names, _HOST_COMM)
    host = np.flatnonzero(is_host_coll)
    corr = events["correlation"].to_numpy()
    ts = events["ts_ns"].to_numpy()
    lane = events["lane"].to_numpy()
    source = np.full(len(comm), -1, dtype=np.int64)
    if len(host):
        o = np.lexsort((ts[host], lane[host]))
        host = host[o]
        launch = np.flatnonzero(~is_gpu & (corr >= 0) & (kind == k_launch))
        lk = corr[launch]
        lo = np.argsort(lk, kind="stable")
        lk, launch = lk[lo], launch[lo]
        pos = np.clip(np.searchsorted(lk, corr[comm]), 0, max(len(lk) - 1, 0))
        has = (len(lk) > 0) & (corr[comm] >= 0)
        has &= lk[pos] == corr[comm] if len(lk) else False
        la = launch[pos[has]]
        found = _innermost(ts[host], events["end_ns"].to_numpy()[host], lane[host], ts[la],
                           lane[la])
        source[np.flatnonzero(has)] = np.where(found >= 0, host[np.maximum(found, 0)], -1)
    _from_gpu_annotations(events, comm, source, coll != c_none, is_gpu, kind == k_annotation,
                          names, ts, lane)
    return _copy_fields(events, comm, source, coll)


def _from_gpu_annotations(events, comm, source, has_coll, is_gpu, is_annotation, names, ts,
                          lane) -> None:
    """Kernels still without a source: a ``nccl:*`` GPU annotation around them."""
    missing = np.flatnonzero(source < 0)
    if len(missing) == 0:
        return
    ann = np.flatnonzero(is_gpu & is_annotation & has_coll & _name_is(names, ("nccl:",)))
    if len(ann) == 0:
        return
    ann = ann[np.lexsort((ts[ann], lane[ann]))]
    k = comm[missing]
    found = _innermost(ts[ann], events["end_ns"].to_numpy()[ann], lane[ann], ts[k], lane[k])
    source[missing] = np.where(found >= 0, ann[np.maximum(found, 0)], -1)


def _copy_fields(events: pd.DataFrame, comm: np.ndarray, source: np.ndarray,
                 coll: np.ndarray) -> int:
    """Copy the launching op's fields (rows ``source``) into its kernel's (rows ``comm``)
    where the kernel has none; ``coll``: the collective column's codes. Compared as
    codes; a string column is rebuilt only when something is copied into it."""
    ok = source >= 0
    dst, src = comm[ok], source[ok]
    if len(dst) == 0:
        return 0
    gained = np.zeros(len(dst), dtype=bool)
    # a Generic kernel names no collective; a SendRecv kernel is how NCCL runs what
    # PyTorch called (all_to_all, a grouped send/recv): the host op names the collective
    _, (c_unknown, c_send_recv, c_none) = _codes(
        events["collective"], Collective.UNKNOWN.value, Collective.SEND_RECV.value, "")
    vague = (coll[dst] == c_unknown) | (coll[dst] == c_send_recv)
    take = vague & (coll[src] != c_none) & (coll[src] != coll[dst])
    gained |= take
    if take.any():
        new_coll = coll.copy()
        new_coll[dst[take]] = coll[src[take]]
        events["collective"] = pd.Categorical.from_codes(
            new_coll, dtype=events["collective"].dtype)
    for col in _FILL_INT:
        values = events[col].to_numpy()
        fill = (values[dst] < 0) & (values[src] >= 0)
        gained |= fill
        if fill.any():
            values = values.copy()
            values[dst[fill]] = values[src[fill]]
            events[col] = values
    for col in _FILL_STR:
        codes, (none,) = _codes(events[col], "")
        fill = (codes[dst] == none) & (codes[src] != none)
        if fill.any():
            values = events[col].to_numpy().astype(object)
            values[dst[fill]] = values[src[fill]]
            events[col] = pd.Categorical(values)
        gained |= fill
    return int(gained.sum())
