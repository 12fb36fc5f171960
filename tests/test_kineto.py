"""Ingestion of real Kineto traces: ranks, steps, kinds, collectives, clocks, syncs.

Expected values are read from the raw JSON in the test (independently of the parser) or
are facts stated in tests/data/README.md.
"""

from __future__ import annotations

import gzip
import json
from math import prod

import numpy as np
import pytest

from tracekit.core.collectives import input_nelems, normalize_collective
from tracekit.core.kineto import parse_trace, rank_from_filename
from tracekit.core.schema import EVENT_COLUMNS, check_schema


def raw_doc(path) -> dict:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


def raw_x_events(path) -> list[dict]:
    return [e for e in raw_doc(path)["traceEvents"] if e.get("ph") == "X"]


# --- every trace ---------------------------------------------------------------------------

def test_every_trace_has_the_schema_and_is_sorted(any_trace):
    events, meta = parse_trace(any_trace)
    check_schema(events)
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert len(events) == meta.n_events > 0
    assert (events["end_ns"] == events["ts_ns"] + events["dur_ns"]).all()
    assert (events["dur_ns"] >= 0).all()
    assert (events["rank"] == meta.rank).all()
    key = events[["lane_kind", "lane", "ts_ns"]].copy()
    key["lane_kind"] = key["lane_kind"].astype(str)
    assert key.equals(key.sort_values(["lane_kind", "lane", "ts_ns"], kind="stable"))


def test_every_duration_event_with_a_numeric_pid_becomes_a_row(any_trace):
    raw = [e for e in raw_x_events(any_trace) if not isinstance(e.get("pid"), str)]
    events, _ = parse_trace(any_trace)
    assert len(events) == len(raw)
    assert sorted(events["name"].astype(str)) == sorted(e["name"] for e in raw)


@pytest.mark.parametrize(
    ("name", "rank", "world", "backend", "steps", "relative"),
    [
        ("a100", 0, 2, "nccl", [4, 5, 6], True),
        ("world128_rank0", 0, 128, "nccl", [551, 552], False),
        ("world128_rank1", 1, 128, "nccl", [551, 552], False),
        ("alexnet", 0, None, "", [], False),
        ("gloo300", 34, 300, "gloo", [551], True),
        ("gloo_2rank_rank0", 0, 2, "gloo", [2, 3, 4], True),
        ("gloo_2rank_rank1", 1, 2, "gloo", [2, 3, 4], True),
    ],
)
def test_meta_of_each_trace(trace_named, name, rank, world, backend, steps, relative):
    path = trace_named(name)
    events, meta = parse_trace(path)
    doc = raw_doc(path)
    assert meta.rank == rank and meta.rank_source == "distributedInfo"
    assert meta.world_size == world
    assert meta.backend == backend
    assert meta.steps == steps
    assert meta.relative_timestamps is relative
    assert meta.process_groups == doc.get("distributedInfo", {}).get("pg_config", [])
    assert meta.device_properties == doc.get("deviceProperties", [])
    step_numbers = set(events["step"].unique().tolist())
    if steps:
        assert set(steps) <= step_numbers <= set(steps) | {-1}
        for n in steps:  # exactly one step annotation per step
            assert ((events["kind"] == "step") & (events["step"] == n)).sum() == 1
    else:
        assert step_numbers == {0}  # no ProfilerStep: one window, step 0
        assert not (events["kind"] == "step").any()


def test_gloo300_keeps_every_process_group(gloo300_trace):
    _, meta = parse_trace(gloo300_trace)
    assert len(meta.process_groups) == len(raw_doc(gloo300_trace)["distributedInfo"]["pg_config"])
    assert len(meta.process_groups) >= 10


def test_kinds_found_in_gpu_traces(a100_trace, alexnet_trace):
    kinds = set(parse_trace(a100_trace)[0]["kind"].astype(str))
    assert {"step", "cpu_op", "launch", "runtime", "kernel", "memcpy", "memset", "comm",
            "annotation"} <= kinds
    assert "sync" in set(parse_trace(alexnet_trace)[0]["kind"].astype(str))


def test_launches_match_gpu_events_by_correlation(a100_trace):
    events, _ = parse_trace(a100_trace)
    gpu = events[events["lane_kind"] == "gpu"]
    launches = events[events["kind"] == "launch"]
    assert len(launches) > 0
    assert set(launches["correlation"]) <= set(gpu["correlation"])
    runtime = events[events["kind"] == "runtime"]
    assert not set(runtime["correlation"][runtime["correlation"] >= 0]) & set(gpu["correlation"])
    # GPU events sit on stream lanes named after the stream
    assert (gpu["lane_name"].astype(str) == "stream " + gpu["lane"].astype(str)).all()


def test_gpu_events_get_the_step_of_their_launch(a100_trace, world128_rank0_trace):
    for path in (a100_trace, world128_rank0_trace):
        events, meta = parse_trace(path)
        cpu = events[(events["lane_kind"] == "cpu") & (events["correlation"] >= 0)]
        step_of_launch = dict(zip(cpu["correlation"], cpu["step"]))
        gpu = events[(events["lane_kind"] == "gpu") & events["correlation"].isin(step_of_launch)]
        assert len(gpu) > 0
        expected = gpu["correlation"].map(step_of_launch)
        assert (gpu["step"] == expected).all()
        assert set(gpu["step"]) & set(meta.steps)


def test_a_kernel_running_after_its_step_closed_keeps_its_launch_step(write_trace):
    """The real traces above sync at the end of each step; here a kernel launched in
    step 1 runs inside step 2's host window and after step 1's window."""
    xs = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1,
         "ts": 0.0, "dur": 100.0},
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "pid": 1, "tid": 1,
         "ts": 120.0, "dur": 80.0},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
         "ts": 50.0, "dur": 5.0, "args": {"correlation": 5, "External id": 4}},
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 150.0,
         "dur": 30.0, "args": {"correlation": 5, "stream": 7, "External id": 4}},
        {"ph": "X", "cat": "kernel", "name": "orphan", "pid": 0, "tid": 7, "ts": 185.0,
         "dur": 5.0, "args": {"stream": 7}},
    ]
    events, meta = parse_trace(write_trace({"traceEvents": xs, "distributedInfo": {"rank": 0}}))
    step = dict(zip(events["name"].astype(str), events["step"]))
    assert meta.steps == [1, 2]
    assert step["cudaLaunchKernel"] == 1 and step["gemm"] == 1
    assert step["orphan"] == 2  # no launch: its start time decides
    kind = dict(zip(events["name"].astype(str), events["kind"].astype(str)))
    assert kind["cudaLaunchKernel"] == "launch" and kind["gemm"] == "kernel"


# --- collectives -----------------------------------------------------------------------------

def test_a100_nccl_kernels_carry_bytes_from_their_args(a100_trace):
    events, _ = parse_trace(a100_trace)
    comm = events[events["kind"] == "comm"]
    raw = {e["args"]["correlation"]: e["args"] for e in raw_x_events(a100_trace)
           if e.get("cat") == "kernel" and e["name"].startswith("ncclKernel")}
    assert len(comm) == len(raw) > 0
    for row in comm.itertuples():
        args = raw[row.correlation]
        assert row.in_nelems == args["In msg nelems"]
        assert row.dtype == args["dtype"]
        size = {"Float": 4, "Long": 8}[args["dtype"]]
        assert row.comm_bytes == max(args["In msg nelems"], args["Out msg nelems"]) * size
        assert row.group_size == args["Group size"] == 2
        assert row.pg_ranks == str(args["Process Group Ranks"])
        assert row.collective == normalize_collective(args["Collective name"])
    assert set(comm["collective"].astype(str)) == {"all_reduce", "broadcast"}
    reduces = comm[comm["collective"] == "all_reduce"]
    assert (reduces["dtype"] == "Float").all()
    assert (reduces["comm_bytes"] == reduces["in_nelems"] * 4).all()


def test_old_nccl_kernels_take_collective_and_bytes_from_their_launching_op(
        world128_rank0_trace):
    events, _ = parse_trace(world128_rank0_trace)
    comm = events[events["kind"] == "comm"]
    assert len(comm) > 0
    assert (comm["lane_kind"] == "gpu").all()
    # the kernels are all ncclKernel_SendRecv_* and carry no args: what they ran and its
    # size come from the nccl:* / record_param_comms op around each kernel's launch
    assert comm["name"].astype(str).str.startswith("ncclKernel_SendRecv").all()
    host = events[(events["lane_kind"] == "cpu")
                  & events["name"].astype(str).str.startswith("nccl:")]
    assert set(comm["collective"].astype(str)) <= set(host["collective"].astype(str))
    assert (comm["comm_bytes"] > 0).all()
    assert set(comm["comm_bytes"]) <= set(host["comm_bytes"])
    # the host-side annotations do carry sizes, from Input Dims / Input type
    ann = events[events["name"] == "nccl:all_reduce"]
    raw = [e for e in raw_x_events(world128_rank0_trace) if e["name"] == "nccl:all_reduce"]
    assert sorted(ann["comm_bytes"]) == sorted(prod(e["args"]["Input Dims"][0]) * 4 for e in raw)


def test_gloo_comm_runs_on_gloo_threads_with_bytes_from_input_dims(gloo_2rank_traces):
    for path in gloo_2rank_traces:
        events, _ = parse_trace(path)
        gloo = events[events["name"].astype(str).str.startswith("gloo:")]
        assert len(gloo) > 0
        assert (gloo["kind"] == "comm").all()
        assert gloo["lane_name"].astype(str).str.contains("pt_gloo_runloop").all()
        assert gloo["lane"].nunique() == 2  # two runloop threads, which can overlap
        raw = {(e["tid"], round(e["ts"], 3)): e for e in raw_x_events(path)
               if e["name"].startswith("gloo:all_reduce")}
        reduces = gloo[gloo["name"] == "gloo:all_reduce"]
        assert len(reduces) == len(raw)
        for row in reduces.itertuples():
            dims = next(e["args"]["Input Dims"] for (tid, _), e in raw.items()
                        if tid == row.lane and e["args"]["External id"] == row.external_id)
            assert row.in_nelems == prod(dims[0])  # prod([]) == 1 for a 0-d tensor
            assert row.comm_bytes == prod(dims[0]) * 4
        # c10d::allreduce_ on the main thread only queues the work: a cpu_op, not comm
        queued = events[events["name"] == "c10d::allreduce_"]
        assert len(queued) > 0 and (queued["kind"] == "cpu_op").all()
        assert (queued["collective"] == "all_reduce").all()
        assert queued["lane"].nunique() == 1 and queued["lane"].iloc[0] not in set(gloo["lane"])


def test_gloo300_comm_bytes(gloo300_trace):
    events, _ = parse_trace(gloo300_trace)
    comm = events[events["kind"] == "comm"]
    raw = [e for e in raw_x_events(gloo300_trace) if e["name"].startswith("gloo:")]
    assert sorted(comm["comm_bytes"]) == sorted(prod(e["args"]["Input Dims"][0]) * 4 for e in raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)",
         "all_reduce"),
        ("ncclDevKernel_ReduceScatter_Sum_f32_RING_LL", "reduce_scatter"),
        ("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t", "send_recv"),
        ("nccl:_all_gather_base", "all_gather"),
        ("c10d::alltoall_base_", "all_to_all"),
        ("gloo:all_reduce", "all_reduce"),
        ("gloo:barrier", "barrier"),
        ("_reduce_scatter_base", "reduce_scatter"),
        ("allreduce_coalesced", "all_reduce"),
        ("aten::mm", ""),
    ],
)
def test_normalize_collective(text, expected):
    assert normalize_collective(text) == expected


def test_input_nelems_reads_tensor_arguments_only():
    assert input_nelems([[2048], [4096], [], []], ["float", "float", "", "Scalar"]) == [2048, 4096]
    assert input_nelems([[[131584], [10]], [], []], ["TensorList", "", "Scalar"]) == [131594]
    assert input_nelems([[]], ["float"]) == [1]
    assert input_nelems([[3, 4]], None) == [12]
    assert input_nelems("junk", ["float"]) == []
    assert input_nelems([[2, "x"]], ["float"]) == []


# --- clocks, syncs, names ----------------------------------------------------------------------

def test_relative_and_absolute_timestamps_map_to_epoch_ns(a100_trace, world128_rank0_trace):
    for path in (a100_trace, world128_rank0_trace):
        doc = raw_doc(path)
        base = doc.get("baseTimeNanoseconds", 0)
        events, _ = parse_trace(path)
        first = min((e for e in doc["traceEvents"] if e.get("ph") == "X"
                     and not isinstance(e.get("pid"), str)), key=lambda e: e["ts"])
        assert events["ts_ns"].min() == base + round(first["ts"] * 1000)
        seconds = events["ts_ns"].to_numpy() / 1e9  # a plausible epoch date: 2020..2035
        assert (seconds > 1.58e9).all() and (seconds < 2.06e9).all()


def test_relative_and_absolute_forms_of_one_trace_agree(write_trace):
    base = 1_700_000_000_000_000_000
    rel_ts = [12.5, 100.0, 250.123]
    events = lambda ts_list: [  # noqa: E731
        {"ph": "X", "cat": "cpu_op", "name": f"op{i}", "pid": 1, "tid": 1, "ts": ts, "dur": 3.25}
        for i, ts in enumerate(ts_list)]
    rel = write_trace({"baseTimeNanoseconds": base, "traceEvents": events(rel_ts),
                       "distributedInfo": {"rank": 0}}, name="rel.json")
    absolute = write_trace({"traceEvents": events([base / 1000 + t for t in [0, 0, 0]]),
                            "distributedInfo": {"rank": 0}}, name="abs.json")
    a, _ = parse_trace(rel)
    assert a["ts_ns"].tolist() == [base + 12_500, base + 100_000, base + 250_123]
    assert a["dur_ns"].tolist() == [3250] * 3
    b, meta = parse_trace(absolute)
    assert not meta.relative_timestamps
    assert b["ts_ns"].tolist() == [base] * 3


def test_stream_wait_event_carries_what_it_waits_on(alexnet_trace):
    events, _ = parse_trace(alexnet_trace)
    raw = [e for e in raw_x_events(alexnet_trace) if e.get("cat") == "cuda_sync"]
    sync = events[events["kind"] == "sync"]
    assert len(sync) == len(raw) > 0
    waits = sync[sync["name"] == "Stream Wait Event"]
    raw_waits = [e for e in raw if e["name"] == "Stream Wait Event"]
    assert len(waits) == len(raw_waits) > 0
    assert sorted(waits["wait_on_stream"]) == sorted(e["args"]["wait_on_stream"] for e in raw_waits)
    assert sorted(waits["wait_on_corr"]) == sorted(
        e["args"]["wait_on_cuda_event_record_corr_id"] for e in raw_waits)
    others = events[events["name"] != "Stream Wait Event"]
    assert (others["wait_on_stream"] == -1).all() and (others["wait_on_corr"] == -1).all()


def test_specific_thread_name_wins_over_the_generic_one(write_trace):
    meta = [
        {"ph": "M", "name": "process_name", "pid": 7, "tid": 0, "args": {"name": "python3"}},
        {"ph": "M", "name": "thread_name", "pid": 7, "tid": 9,
         "args": {"name": "thread 9 (pt_gloo_runloop)"}},
        {"ph": "M", "name": "thread_name", "pid": 7, "tid": 9, "args": {"name": "thread 9 (python3)"}},
        {"ph": "M", "name": "thread_name", "pid": 7, "tid": 7, "args": {"name": "thread 7 (python3)"}},
    ]
    xs = [{"ph": "X", "cat": "cpu_op", "name": "gloo:all_reduce", "pid": 7, "tid": 9,
           "ts": 1.0, "dur": 2.0},
          {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 7, "tid": 7, "ts": 1.0, "dur": 2.0},
          {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 7, "tid": 8, "ts": 1.0, "dur": 2.0}]
    events, _ = parse_trace(write_trace({"traceEvents": meta + xs}, name="rank0.json"))
    names = dict(zip(events["lane"], events["lane_name"].astype(str)))
    assert names == {9: "thread 9 (pt_gloo_runloop)", 7: "thread 7 (python3)", 8: "thread 8"}


def test_new_nccl_generic_kernel_is_comm_by_its_collective_arg(write_trace):
    xs = [{"ph": "X", "cat": "kernel", "name": "ncclDevKernel_Generic", "pid": 0, "tid": 20,
           "ts": 5.0, "dur": 10.0,
           "args": {"stream": 20, "correlation": 9, "Collective name": "reduce_scatter",
                    "In msg nelems": 1024, "Out msg nelems": 512, "dtype": "BFloat16",
                    "Group size": 4, "Process Group Name": "3", "Seq": 17}}]
    events, _ = parse_trace(write_trace({"traceEvents": xs, "distributedInfo": {"rank": 2}}))
    row = events.iloc[0]
    assert row["kind"] == "comm" and row["collective"] == "reduce_scatter"
    assert row["comm_bytes"] == 1024 * 2 and row["group_size"] == 4
    assert row["pg_name"] == "3" and row["seq"] == 17 and row["lane"] == 20


@pytest.mark.parametrize("equal_members", [False, True])
def test_multi_member_gzip_is_read_whole(write_trace, equal_members):
    """gzip files may hold several members; the trailer of the last one then does not
    describe the first (equal sizes are the case a size check alone would get wrong)."""
    evs = [{"ph": "X", "cat": "cpu_op", "name": f"op{i}", "pid": 1, "tid": 1, "ts": float(i),
            "dur": 0.5} for i in range(50)]
    text = json.dumps({"traceEvents": evs}).encode()
    if (len(text) % 2 == 0) != equal_members:
        text += b" "
    half = (len(text) + 1) // 2
    assert (half * 2 == len(text)) == equal_members
    path = write_trace(gzip.compress(text[:half]) + gzip.compress(text[half:]), name="rank0.json.gz")
    events, _ = parse_trace(path)
    assert len(events) == 50


def test_gzip_with_trailing_zero_padding(write_trace):
    evs = [{"ph": "X", "cat": "cpu_op", "name": "op", "pid": 1, "tid": 1, "ts": 1.0, "dur": 1.0}]
    data = gzip.compress(json.dumps({"traceEvents": evs}).encode()) + b"\x00" * 512
    events, _ = parse_trace(write_trace(data, name="rank0.json.gz"))
    assert len(events) == 1


def test_rank_from_filename():
    assert rank_from_filename("runs/x/rank-3.json") == 3
    assert rank_from_filename("worker12.pt.trace.json.gz") == 12
    assert rank_from_filename("host_rank_7.json") == 7
    assert rank_from_filename("trace.json") is None


def test_parse_is_deterministic(a100_trace):
    a, _ = parse_trace(a100_trace)
    b, _ = parse_trace(a100_trace)
    assert a.equals(b)
    assert np.array_equal(a["ts_ns"].to_numpy(), b["ts_ns"].to_numpy())
