"""NCCL log parsing, attaching the log to a trace, and the NCCL environment of a rank.

Log lines are produced by :func:`nccl_line`, a transcription of NCCL's own format strings:
``src/enqueue.cc`` (identical from 2.4 to 2.2x; ``%zi`` became ``%zu`` in 2.23)::

    INFO(NCCL_COLL,"%s: opCount %lx sendbuff %p recvbuff %p count %zu datatype %d op %d
         root %d comm %p [nranks=%d] stream %p", ...)

behind the prefix of ``src/debug.cc``: ``"%s:%d:%d [%d] NCCL INFO "`` (host, pid, tid,
cudaDev), optionally preceded by a timestamp (NCCL >= 2.26, ``NCCL_DEBUG_TIMESTAMP_*``).
No torch needed.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from collectors.nccl_env import nccl_debug_env, nccl_log_name, uses_nccl
from collectors.nccl_log import attach_nccl_log, parse_nccl_log, read_nccl_logs
from tracekit.core.schema import EVENT_COLUMNS, check_schema, empty_events

DTYPE = {"float32": 7, "float16": 6, "bfloat16": 9, "int64": 4}


def c_pointer(value: int) -> str:
    """glibc's %p: 0x-prefixed lowercase hex, '(nil)' for NULL."""
    return f"0x{value:x}" if value else "(nil)"


def nccl_line(op_name: str, op_count: int, count: int, *, datatype: int = 7, op: int = 0,
              root: int = 0, comm: int = 0x55D0C6A0, nranks: int = 2, stream: int = 0x55D0C2F0,
              sendbuff: int = 0x7F3A4C000000, recvbuff: int = 0x7F3A4C000000,
              host: str = "node-a", pid: int = 4242, tid: int = 4242, dev: int = 0,
              timestamp: str | None = None) -> str:
    prefix = f"[{timestamp}] " if timestamp is not None else ""
    # printf-style on purpose: these are NCCL's C format strings, with %p -> c_pointer
    prefix += "%s:%d:%d [%d] NCCL INFO " % (host, pid, tid, dev)  # noqa: UP031
    body = ("%s: opCount %x sendbuff %s recvbuff %s count %d datatype %d op %d root %d "  # noqa: UP031
            "comm %s [nranks=%d] stream %s") % (
        op_name, op_count, c_pointer(sendbuff), c_pointer(recvbuff), count, datatype, op,
        root, c_pointer(comm), nranks, c_pointer(stream))
    return prefix + body


# ----- parsing ------------------------------------------------------------------------
def test_parses_the_enqueue_line_fields():
    lines = [
        "node-a:4242:4242 [0] NCCL INFO Bootstrap : Using eth0:10.0.0.1<0>",
        "node-a:4242:4242 [0] NCCL INFO comm 0x55d0c6a0 rank 1 nranks 2 cudaDev 0 nvmlDev 0 "
        "busId 1000 commId 0x9a3b - Init COMPLETE",
        nccl_line("AllReduce", 0x1F, 262144),
        nccl_line("AllGather", 0x20, 1000, datatype=DTYPE["bfloat16"]),
        nccl_line("ReduceScatter", 0x21, 500, datatype=DTYPE["float16"]),
        nccl_line("Broadcast", 0x22, 10, datatype=DTYPE["int64"], root=1, sendbuff=0),
        "some unrelated output of the training script",
    ]
    df = parse_nccl_log(lines, rank=1)
    assert list(df["op_name"]) == ["AllReduce", "AllGather", "ReduceScatter", "Broadcast"]
    assert list(df["collective"]) == ["all_reduce", "all_gather", "reduce_scatter", "broadcast"]
    assert list(df["op_count"]) == [31, 32, 33, 34]  # opCount is hexadecimal
    assert list(df["line"]) == [3, 4, 5, 6]
    assert list(df["dtype"]) == ["float32", "bfloat16", "float16", "int64"]
    assert list(df["nranks"]) == [2, 2, 2, 2]
    assert set(df["comm_rank"]) == {1}
    assert list(df["root"]) == [0, 0, 0, 1]
    assert df["sendbuff"].iloc[3] == "(nil)"
    assert (df["rank"] == 1).all() and (df["host"] == "node-a").all()
    assert (df["pid"] == 4242).all() and (df["ts_ns"] == -1).all()
    # all-reduce: count is the buffer; all-gather: count is per rank (output = count * n);
    # reduce-scatter: count is what each rank receives (input = count * n)
    assert list(df["comm_bytes"]) == [262144 * 4, 1000 * 2 * 2, 500 * 2 * 2, 10 * 8]
    assert list(df["in_nelems"]) == [262144, 1000, 1000, 10]
    assert list(df["out_nelems"]) == [262144, 2000, 500, 10]


def test_timestamp_prefixes_of_newer_nccl():
    epoch = nccl_line("AllReduce", 1, 8, timestamp="1716000000.123456")
    local = nccl_line("AllReduce", 2, 8, timestamp="2024-05-05 06:16:47")
    df = parse_nccl_log([epoch, local])
    assert df["ts_ns"].iloc[0] == 1716000000_123456000
    expected = int(time.mktime(time.strptime("2024-05-05 06:16:47", "%Y-%m-%d %H:%M:%S")))
    assert df["ts_ns"].iloc[1] == expected * 1_000_000_000
    assert (df["rank"] == -1).all()


def test_line_without_nranks_and_unknown_datatype():
    line = nccl_line("AllReduce", 5, 16, datatype=42).replace(" [nranks=2]", "")
    df = parse_nccl_log([line])
    assert df["nranks"].iloc[0] == -1
    assert df["dtype"].iloc[0] == "" and df["comm_bytes"].iloc[0] == -1


def test_rank_comes_from_the_file_name(tmp_path):
    (tmp_path / "nccl").mkdir()
    (tmp_path / "nccl" / "rank3.log").write_text(nccl_line("AllReduce", 0, 4) + "\n")
    (tmp_path / "nccl" / "rank0.node-a.99.log").write_text(nccl_line("AllGather", 0, 4) + "\n")
    df = read_nccl_logs(tmp_path)
    assert sorted(zip(df["rank"], df["collective"])) == [(0, "all_gather"), (3, "all_reduce")]
    assert read_nccl_logs(tmp_path / "nowhere").empty


# ----- attaching to a trace -----------------------------------------------------------
def _kernels(rank: int, specs: list[tuple[str, int]], *, stream: int = 7, t0: int = 10_000,
             gap: int = 1_000_000, known_nelems: dict[int, int] | None = None) -> pd.DataFrame:
    """Event rows for NCCL kernels on one GPU stream, without sizes unless given."""
    n = len(specs)
    base = empty_events()
    data = {c: np.full(n, -1, dtype=dt) if dt not in ("category",) else [""] * n
            for c, (dt, _) in EVENT_COLUMNS.items()}
    data.update({
        "rank": np.full(n, rank, dtype=np.int32),
        "lane_kind": ["gpu"] * n, "lane": np.full(n, stream, dtype=np.int64),
        "lane_name": [f"stream {stream}"] * n, "pid": np.zeros(n, dtype=np.int64),
        "name": [f"ncclDevKernel_{k}_RING_LL_Sum_float" for k, _ in specs],
        "cat": ["kernel"] * n, "kind": ["comm"] * n,
        "ts_ns": np.array([t0 + i * gap for i in range(n)], dtype=np.int64),
        "dur_ns": np.full(n, 5000, dtype=np.int64),
        "step": np.array([s for _, s in specs], dtype=np.int32),
        "collective": [{"AllReduce": "all_reduce", "AllGather": "all_gather",
                        "ReduceScatter": "reduce_scatter"}[k] for k, _ in specs],
    })
    data["end_ns"] = data["ts_ns"] + data["dur_ns"]
    df = pd.DataFrame(data)
    for i, v in (known_nelems or {}).items():
        df.loc[i, "in_nelems"] = v
    for c, (dt, _) in EVENT_COLUMNS.items():
        df[c] = df[c].astype(dt) if dt != "category" else pd.Categorical(df[c])
    assert list(df.columns) == list(base.columns)
    return df


STEP_OPS = [("ReduceScatter", 4096), ("AllReduce", 1000), ("AllGather", 2048)]


def _log_for_steps(n_steps: int, *, t0_ns: int | None = None, gap_ns: int = 1_000_000,
                   comm: int = 0x55D0C6A0, stream: int = 0x55D0C2F0, rank_pid: int = 4242):
    lines, k = [], 0
    for _ in range(n_steps):
        for op, count in STEP_OPS:
            ts = None
            if t0_ns is not None:
                ts = f"{(t0_ns + k * gap_ns - 200_000) / 1e9:.6f}"  # logged before the kernel
            lines.append(nccl_line(op, k, count, comm=comm, stream=stream, pid=rank_pid,
                                   timestamp=ts))
            k += 1
    return lines


def test_attach_by_order_fills_missing_fields_and_keeps_known_ones():
    # the log covers 10 steps, the trace only steps 5..6 (6 kernels)
    log = parse_nccl_log(_log_for_steps(10), rank=0)
    specs = [(op, s) for s in (5, 6) for op, _ in STEP_OPS]
    events = _kernels(0, specs)
    events.loc[1, "comm_bytes"] = 123  # already known: must survive
    result = attach_nccl_log(log, events)
    out = result.events
    check_schema(out)
    assert result.matched == {0: 6} and result.method == {0: "order"}
    assert list(out["in_nelems"]) == [8192, 1000, 2048] * 2
    assert list(out["out_nelems"]) == [4096, 1000, 4096] * 2
    assert list(out["comm_bytes"]) == [8192 * 4, 123, 4096 * 4, 8192 * 4, 1000 * 4, 4096 * 4]
    assert list(out["dtype"].astype(str)) == ["float32"] * 6
    assert list(out["group_size"]) == [2] * 6
    # by order, the window lands on the first matching position: consecutive opCounts
    seq = list(out["seq"])
    assert seq == list(range(seq[0], seq[0] + 6)) and seq[0] % 3 == 0
    assert events["comm_bytes"].iloc[0] == -1  # the input is not modified


def test_attach_by_time_finds_the_exact_ops():
    t0 = 1_716_000_000_000_000_000
    log = parse_nccl_log(_log_for_steps(10, t0_ns=t0), rank=0)
    specs = [(op, s) for s in (5, 6) for op, _ in STEP_OPS]
    events = _kernels(0, specs, t0=t0 + 15 * 1_000_000)  # kernels of ops 15..20
    result = attach_nccl_log(log, events)
    assert result.method == {0: "time"}
    assert list(result.events["seq"]) == list(range(15, 21))


def test_attach_uses_known_sizes_to_pick_the_window_and_each_rank_alone():
    # step sizes differ, so the trace's one known size pins the window to step 2
    lines = []
    k = 0
    for step in range(4):
        for op, count in STEP_OPS:
            lines.append(nccl_line(op, k, count + step))
            k += 1
    log = pd.concat([parse_nccl_log(lines, rank=0), parse_nccl_log(lines, rank=1)],
                    ignore_index=True)
    specs = [(op, 2) for op, _ in STEP_OPS]
    events = pd.concat([_kernels(0, specs, known_nelems={1: 1002}),
                        _kernels(1, specs)], ignore_index=True)
    for c, (dt, _) in EVENT_COLUMNS.items():
        if dt == "category":
            events[c] = events[c].astype(str).astype("category")
    out = attach_nccl_log(log, events).events
    assert list(out.loc[out["rank"] == 0, "seq"]) == [6, 7, 8]
    assert list(out.loc[out["rank"] == 1, "seq"]) == [0, 1, 2]  # no size known: first match


def test_attach_reports_streams_without_a_match():
    log = parse_nccl_log([nccl_line("Broadcast", 0, 4)], rank=0)
    events = _kernels(0, [("AllReduce", 0)])
    result = attach_nccl_log(log, events)
    assert result.matched == {0: 0}
    assert result.notes and "no NCCL log lines match" in result.notes[0]
    assert result.events["seq"].iloc[0] == -1


# ----- environment --------------------------------------------------------------------
def test_nccl_env_for_an_nccl_rank(tmp_path):
    env = nccl_debug_env({}, run_dir=tmp_path, rank=3, backend="nccl", cuda_available=False)
    assert env["NCCL_DEBUG"] == "INFO"
    assert "COLL" in env["NCCL_DEBUG_SUBSYS"].split(",")
    assert env["NCCL_DEBUG_FILE"] == str(tmp_path.resolve() / "nccl" / "rank3.log")
    assert nccl_log_name(3) == "nccl/rank3.log"
    assert "INFO" in env["NCCL_DEBUG_TIMESTAMP_LEVELS"].split(",")


@pytest.mark.parametrize(("backend", "cuda", "expected"), [
    ("nccl", False, True), ("cpu:gloo,cuda:nccl", False, True), ("gloo", True, False),
    (None, True, True), (None, False, False), ("", True, True),
])
def test_which_runs_use_nccl(backend, cuda, expected, tmp_path):
    assert uses_nccl(backend, cuda) is expected
    env = nccl_debug_env({}, run_dir=tmp_path, rank=0, backend=backend, cuda_available=cuda)
    assert bool(env) is expected


def test_nccl_env_respects_what_the_job_set(tmp_path):
    own = nccl_debug_env({"NCCL_DEBUG": "WARN"}, run_dir=tmp_path, rank=0, backend="nccl",
                         cuda_available=True)
    assert own == {}
    partial = nccl_debug_env({"NCCL_DEBUG_FILE": "/x/%h.%p.log"}, run_dir=tmp_path, rank=0,
                             backend="nccl", cuda_available=True)
    assert "NCCL_DEBUG_FILE" not in partial and partial["NCCL_DEBUG"] == "INFO"


def test_attach_to_a_loaded_run_reads_its_nccl_folder(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "nccl").mkdir()
    (tmp_path / "nccl" / "rank0.log").write_text(
        "\n".join(_log_for_steps(4)) + "\n")
    run = SimpleNamespace(path=str(tmp_path), events=_kernels(0, [(op, 1) for op, _ in STEP_OPS]))
    from collectors.nccl_log import attach_run_nccl_logs

    result = attach_run_nccl_logs(run)
    assert result.matched == {0: 3}
    assert list(result.events["comm_bytes"]) == [8192 * 4, 1000 * 4, 4096 * 4]
