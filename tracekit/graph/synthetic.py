"""Synthetic graphs and event tables shaped like data-parallel GPU training, for benchmarks
and tests. Deterministic for a given seed.

Per rank and step (the shape of DDP with NCCL)::

    cpu lane      launch k0, launch k1, ..., launch k_{K-1}, [launch allreduce b] ..., sync
    compute lane          k0 -> k1 -> ... (each after its launch: LAUNCH edges)
    comm lane                        allreduce b0, b1, ...  (STREAM_WAIT from the kernel
                                     that produced the bucket; one collective per bucket
                                     across all ranks: shared coll_id)
    next step's first launch waits for the last allreduce and the last kernel (HOST_WAIT)

:func:`synthetic_graph` builds the :class:`Graph` directly (engine benchmarks up to 10^7
nodes); :func:`synthetic_events` builds the equivalent event table (assembly benchmarks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracekit.core.schema import EVENT_COLUMNS, EventKind
from tracekit.graph.model import EdgeKind, Graph, Lane, NodeKind


def synthetic_graph(*, ranks: int, steps: int, kernels: int, buckets: int,
                    seed: int = 0) -> Graph:
    """A graph of ``ranks * steps * (2 * kernels + 2 * buckets + 1)`` nodes (see module doc)."""
    rng = np.random.default_rng(seed)
    K, B = kernels, buckets
    per_step_cpu = K + B + 1  # launches, comm launches, sync
    per_step = per_step_cpu + K + B
    n_rank = steps * per_step
    n = ranks * n_rank
    lanes = []
    for r in range(ranks):
        lanes += [Lane(id=3 * r, rank=r, kind="cpu", local_id=1000 + r, name="main",
                       is_main=True),
                  Lane(id=3 * r + 1, rank=r, kind="gpu", local_id=7, name="stream 7"),
                  Lane(id=3 * r + 2, rank=r, kind="comm", local_id=13, name="stream 13")]
    # node layout per rank: [cpu nodes of all steps][kernels of all steps][comm of all steps]
    cpu_n, ker_n, com_n = steps * per_step_cpu, steps * K, steps * B
    base = np.arange(ranks, dtype=np.int64) * n_rank
    rank = np.repeat(np.arange(ranks, dtype=np.int32), n_rank)
    local = np.tile(np.concatenate([np.zeros(cpu_n), np.ones(ker_n), np.full(com_n, 2)]),
                    ranks).astype(np.int32)
    lane = (rank * 3 + local).astype(np.int32)
    kind = np.select([local == 0, local == 1], [NodeKind.LAUNCH, NodeKind.COMPUTE],
                     NodeKind.COMM).astype(np.int8)
    dur = rng.integers(3_000, 8_000, n)
    dur[local == 1] = rng.integers(20_000, 200_000, int(np.sum(local == 1)))
    dur[local == 2] = rng.integers(200_000, 2_000_000, int(np.sum(local == 2)))
    step_cpu = np.repeat(np.arange(steps), per_step_cpu)
    step_k = np.repeat(np.arange(steps), K)
    step_b = np.repeat(np.arange(steps), B)
    step = np.tile(np.concatenate([step_cpu, step_k, step_b]), ranks).astype(np.int32)
    # within a rank: cpu position j of step s
    s_idx = np.arange(steps)
    cpu_first = s_idx * per_step_cpu  # first launch of each step (rank-relative)
    # kernel i of step s is launched by cpu node s*per_step_cpu + i
    kpos = cpu_n + np.arange(ker_n)
    klaunch = (step_k * per_step_cpu + np.tile(np.arange(K), steps))
    # bucket b of step s: launched by cpu node s*per_step_cpu + K + b, waits on kernel
    # (b + 1) * K // B - 1 of the step
    bpos = cpu_n + ker_n + np.arange(com_n)
    blaunch = step_b * per_step_cpu + K + np.tile(np.arange(B), steps)
    bready = cpu_n + step_b * K + (np.tile(np.arange(B), steps) + 1) * K // B - 1
    src_l, dst_l, kind_l = [], [], []

    def add(s, d, k):
        src_l.append(s)
        dst_l.append(d)
        kind_l.append(np.full(len(s), int(k), dtype=np.int8))

    rel_src = [klaunch, blaunch, bready]
    rel_dst = [kpos, bpos, bpos]
    rel_kind = [EdgeKind.LAUNCH, EdgeKind.LAUNCH, EdgeKind.STREAM_WAIT]
    # next step's first launch waits for the last bucket and last kernel of the step
    if steps > 1:
        rel_src += [cpu_n + ker_n + (s_idx[:-1] + 1) * B - 1, cpu_n + (s_idx[:-1] + 1) * K - 1]
        rel_dst += [cpu_first[1:], cpu_first[1:]]
        rel_kind += [EdgeKind.HOST_WAIT, EdgeKind.HOST_WAIT]
    for s, d, k in zip(rel_src, rel_dst, rel_kind):
        add((base[:, None] + s[None, :]).ravel(), (base[:, None] + d[None, :]).ravel(), k)
    # lane order: consecutive ids within each lane segment
    same = np.flatnonzero(lane[1:] == lane[:-1])
    add(same, same + 1, EdgeKind.LANE_ORDER)
    src = np.concatenate(src_l)
    dst = np.concatenate(dst_l)
    ekind = np.concatenate(kind_l)
    delay = rng.integers(500, 5_000, len(src))
    coll = np.full(n, -1, dtype=np.int64)
    comm_nodes = (base[:, None] + bpos[None, :])  # ranks x (steps*B)
    coll[comm_nodes.ravel()] = np.tile(np.arange(com_n), ranks)
    start = np.zeros(n, dtype=np.int64)
    return Graph(rank=rank, lane=lane, kind=kind, step=step,
                 name=local.astype(np.int32), start_ns=start, dur_ns=dur.astype(np.int64),
                 wait_ns=np.zeros(n, np.int64), bytes=np.where(local == 2, 1 << 22, -1),
                 coll_id=coll, event_row=np.full(n, -1, dtype=np.int64),
                 src=src, dst=dst, edge_kind=ekind, delay_ns=delay.astype(np.int64),
                 inferred=np.zeros(len(src), dtype=bool),
                 names=["cudaLaunchKernel", "kernel", "ncclKernel_AllReduce_RING_LL_Sum_float"],
                 lanes=lanes)


def synthetic_events(*, ranks: int, steps: int, kernels: int, buckets: int,
                     seed: int = 0) -> pd.DataFrame:
    """An event table (schema of :mod:`tracekit.core.schema`) for the same shape of run:
    per rank a main thread with ``ProfilerStep#N``, launches with correlations, kernels on
    stream 7 and NCCL all-reduces on stream 13 (with process group and sequence number)."""
    rng = np.random.default_rng(seed)
    K, B = kernels, buckets
    rows: dict[str, list[np.ndarray]] = {c: [] for c in EVENT_COLUMNS}
    cols: dict[str, list] = {c: [] for c in EVENT_COLUMNS}
    del rows
    t_step = 0
    for s in range(steps):
        n_launch = K + B
        # host: launches back to back, 5 us each with 2 us gaps; kernels run 50 us each
        launch_ts = t_step + 10_000 + np.arange(n_launch) * 7_000
        k_start = launch_ts[:K] + 3_000 + np.arange(K) * 45_000
        k_dur = rng.integers(30_000, 60_000, K)
        step_end = int(max(k_start[-1] + k_dur[-1], launch_ts[-1]) + 2_000_000)
        last_kernel = ((np.arange(B) + 1) * K) // B - 1
        b_ready = k_start[last_kernel] + k_dur[last_kernel]
        b_start = np.maximum(b_ready, launch_ts[K:] + 3_000) + np.arange(B) * 10
        b_dur = rng.integers(200_000, 800_000, B)
        for r in range(ranks):
            corr0 = (s * ranks + r) * (n_launch + 1) * 10
            corr = corr0 + np.arange(n_launch)
            jitter = int(rng.integers(0, 50_000))
            _extend(cols, rank=r, lane_kind="cpu", lane=1000 + r, lane_name="python3",
                    name=[f"ProfilerStep#{s}"], kind=EventKind.STEP.value,
                    ts=[t_step], dur=[step_end - t_step], step=s)
            _extend(cols, rank=r, lane_kind="cpu", lane=1000 + r, lane_name="python3",
                    name=["cudaLaunchKernel"] * n_launch, kind=EventKind.LAUNCH.value,
                    ts=launch_ts + jitter, dur=np.full(n_launch, 5_000), step=s,
                    correlation=corr, cat="cuda_runtime")
            _extend(cols, rank=r, lane_kind="gpu", lane=7, lane_name="stream 7",
                    name=[f"kernel_{i % 17}" for i in range(K)], kind=EventKind.KERNEL.value,
                    ts=k_start + jitter, dur=k_dur, step=s, correlation=corr[:K], cat="kernel")
            _extend(cols, rank=r, lane_kind="gpu", lane=13, lane_name="stream 13",
                    name=["ncclKernel_AllReduce_RING_LL_Sum_float"] * B,
                    kind=EventKind.COMM.value, ts=b_start + jitter, dur=b_dur - jitter // 2,
                    step=s, correlation=corr[K:], cat="kernel", collective="all_reduce",
                    comm_bytes=1 << 22, pg_name="0", seq=s * B + np.arange(B),
                    group_size=ranks)
        t_step = step_end + 1_000
    data = {}
    for c, (dt, _) in EVENT_COLUMNS.items():
        v = np.concatenate(cols[c]) if cols[c] else np.zeros(0)
        data[c] = pd.Categorical(v) if dt == "category" else v.astype(dt)
    df = pd.DataFrame(data)
    order = np.lexsort((df["ts_ns"].to_numpy(), df["lane"].to_numpy(),
                        (df["lane_kind"] == "gpu").to_numpy(), df["rank"].to_numpy()))
    return df.iloc[order].reset_index(drop=True)


def _extend(cols: dict, *, rank: int, lane_kind: str, lane: int, lane_name: str, name,
            kind: str, ts, dur, step: int, correlation=None, cat: str = "cpu_op",
            collective: str = "", comm_bytes: int = -1, pg_name: str = "", seq=None,
            group_size: int = -1) -> None:
    ts = np.asarray(ts, dtype=np.int64)
    dur = np.asarray(dur, dtype=np.int64)
    m = len(ts)

    def full(v):
        return np.full(m, v) if np.ndim(v) == 0 else np.asarray(v)

    vals = {
        "rank": full(rank), "lane_kind": full(lane_kind), "lane": full(lane),
        "lane_name": full(lane_name), "pid": full(rank), "name": np.asarray(name, dtype=object),
        "cat": full(cat), "kind": full(kind), "ts_ns": ts, "end_ns": ts + dur, "dur_ns": dur,
        "step": full(step), "correlation": full(-1 if correlation is None else 0)
        if correlation is None else np.asarray(correlation),
        "external_id": full(-1), "collective": full(collective), "comm_bytes": full(comm_bytes),
        "in_nelems": full(-1), "out_nelems": full(-1), "dtype": full(""),
        "group_size": full(group_size), "pg_name": full(pg_name), "pg_ranks": full(""),
        "seq": full(-1) if seq is None else np.asarray(seq), "wait_on_stream": full(-1),
        "wait_on_corr": full(-1), "nccl_algo": full(""), "nccl_proto": full(""),
        "nccl_channels": full(-1), "nccl_comm": full(""), "nested_events": full(0),
    }
    for c in EVENT_COLUMNS:
        cols[c].append(vals[c])
