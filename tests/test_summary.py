"""``tracekit summary``: interval arithmetic, hand-built traces with known answers, and
every real trace against an independent recomputation (tests/breakdown_check.py)."""

from __future__ import annotations

import json
import statistics

import breakdown_check as bc
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings

from tracekit.analysis.breakdown import breakdown, summarize
from tracekit.cli import cli, main
from tracekit.core.intervals import difference, union, union_length
from tracekit.core.run import load_run
from tracekit.core.waits import waits_for_comm

# --- interval arithmetic against a brute-force grid ----------------------------------------

intervals, grid, arrays = bc.interval_lists, bc.grid, bc.as_arrays


@settings(max_examples=200, deadline=None)
@given(intervals)
def test_union_matches_brute_force(pairs):
    s, e = union(*arrays(pairs))
    assert (np.diff(s) > 0).all() and (e > s).all()
    assert (s[1:] > e[:-1]).all()  # disjoint and not touching
    assert np.array_equal(grid(zip(s, e)), grid(pairs))
    assert union_length(*arrays(pairs)) == grid(pairs).sum()


@settings(max_examples=200, deadline=None)
@given(intervals, intervals)
def test_difference_and_breakdown_match_brute_force(a, b):
    ua, ub = union(*arrays(a)), union(*arrays(b))
    d = difference(ua, ub)
    assert np.array_equal(grid(zip(*d)), grid(a) & ~grid(b))
    b_ = breakdown((0, 64), ua, ub)
    ga, gb = grid(a), grid(b)
    assert b_.compute_ns == ga.sum() and b_.comm_ns == gb.sum()
    assert b_.exposed_comm_ns == (gb & ~ga).sum()
    assert b_.overlap_ns == (ga & gb).sum()
    assert b_.idle_ns == 64 - (ga | gb).sum()


@settings(max_examples=100, deadline=None)
@given(intervals, intervals)
def test_the_independent_checker_matches_brute_force(a, b):
    """tests/breakdown_check.py, which the real-trace tests compare summarize with, is
    itself right (against the same grid)."""
    ma, mb = bc.merge(a), bc.merge(b)
    assert np.array_equal(grid(ma), grid(a)) and bc.length(ma) == grid(a).sum()
    assert all(e1 < s2 for (_, e1), (s2, _) in zip(ma, ma[1:]))
    assert np.array_equal(grid(bc.subtract(ma, mb)), grid(a) & ~grid(b))
    assert np.array_equal(grid(bc.intersect(ma, mb)), grid(a) & grid(b))
    assert np.array_equal(grid(bc.clip(a, 10, 40)), grid(a) & (np.arange(64) >= 10)
                          & (np.arange(64) < 40))


def test_breakdown_clips_to_the_window():
    b = breakdown((10, 20), (np.array([0]), np.array([15])), (np.array([18]), np.array([40])))
    assert (b.window_ns, b.compute_ns, b.comm_ns, b.exposed_comm_ns, b.idle_ns) == (10, 5, 2, 2, 3)


# --- hand-built traces with exact answers -------------------------------------------------

def x(name, ts, dur, tid=1, cat="cpu_op", **args):
    ev = {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur}
    if args:
        ev["args"] = {k.replace("_", " ") if k == "External_id" else k: v for k, v in args.items()}
    return ev


def trace(events, rank=0, world=1):
    return {"distributedInfo": {"rank": rank, "world_size": world, "backend": "gloo"},
            "baseTimeNanoseconds": 1_700_000_000_000_000_000, "traceEvents": events}


def only_step(run):
    steps = summarize(run).steps
    assert len(steps) == 1
    return steps.iloc[0]


def test_three_event_cpu_trace(write_trace):
    """step [0, 1000) µs; main thread op [100, 500); gloo all-reduce [300, 800).
    compute 400, comm 500, overlap 200, exposed 300, idle 1000 - 700 = 300."""
    doc = trace([
        x("ProfilerStep#1", 0, 1000, cat="user_annotation"),
        x("aten::mm", 100, 400),
        x("gloo:all_reduce", 300, 500, tid=2, **{"Input Dims": [[256]], "Input type": ["float"]}),
    ])
    row = only_step(load_run(write_trace(doc)))
    assert row["basis"] == "cpu" and row["step"] == 1
    assert row["step_ns"] == 1_000_000
    assert row["compute_ns"] == 400_000
    assert row["comm_ns"] == 500_000
    assert row["overlap_ns"] == 200_000
    assert row["exposed_comm_ns"] == 300_000
    assert row["idle_ns"] == 300_000
    assert row["ms"] == 1.0 and row["exposed_comm_ms"] == 0.3


def test_two_ops_a_gap_and_an_overlapping_collective(write_trace):
    """A 10 ms step: ops of 3 ms [0, 3) and 2 ms [4, 6) with a 1 ms gap, and a 4 ms
    collective [5, 9) that overlaps the second op for 1 ms. compute 5, comm 4, overlap 1,
    exposed 3, idle 10 - (5 + 3) = 2 (the gap [3, 4) and [9, 10))."""
    ms = 1000  # µs
    doc = trace([
        x("ProfilerStep#5", 0, 10 * ms, cat="user_annotation"),
        x("aten::mm", 0, 3 * ms),
        x("aten::add", 4 * ms, 2 * ms),
        x("gloo:all_reduce", 5 * ms, 4 * ms, tid=2,
          **{"Input Dims": [[1024]], "Input type": ["float"]}),
    ])
    row = only_step(load_run(write_trace(doc)))
    assert row["step"] == 5
    assert [row[k] for k in ("ms", "compute_ms", "comm_ms", "overlap_ms", "exposed_comm_ms",
                             "idle_ms")] == [10.0, 5.0, 4.0, 1.0, 3.0, 2.0]


def test_three_event_gpu_trace_window_extends_to_the_last_kernel(write_trace):
    """step host window [0, 1000); a kernel [200, 600) and an NCCL kernel [500, 1200), both
    launched in the step: the window is [0, 1200). compute 400, comm 700, overlap 100,
    exposed 600, idle 1200 - 1000 = 200."""
    doc = trace([
        x("ProfilerStep#7", 0, 1000, cat="user_annotation"),
        x("cudaLaunchKernel", 10, 5, cat="cuda_runtime", correlation=1),
        x("cudaLaunchKernel", 20, 5, cat="cuda_runtime", correlation=2),
        x("gemm", 200, 400, tid=7, cat="kernel", stream=7, correlation=1),
        x("ncclKernel_AllReduce_RING_LL_Sum_float", 500, 700, tid=20, cat="kernel",
          stream=20, correlation=2),
    ])
    row = only_step(load_run(write_trace(doc)))
    assert row["basis"] == "gpu" and row["step"] == 7
    assert row["step_ns"] == 1_200_000
    assert (row["compute_ns"], row["comm_ns"]) == (400_000, 700_000)
    assert (row["overlap_ns"], row["exposed_comm_ns"], row["idle_ns"]) == (100_000, 600_000, 200_000)


def test_wait_only_ops_are_not_compute(write_trace):
    """main thread: aten::mm [100, 500) and c10d::barrier [600, 900) (waits); gloo:barrier
    [650, 880). compute 400 (the barrier op is excluded), comm 230, all exposed."""
    assert waits_for_comm(["c10d::barrier"]).all()
    doc = trace([
        x("ProfilerStep#1", 0, 1000, cat="user_annotation"),
        x("aten::mm", 100, 400),
        x("c10d::barrier", 600, 300),
        x("aten::empty", 610, 10),  # inside the barrier op: still waiting time
        x("gloo:barrier", 650, 230, tid=2),
    ])
    row = only_step(load_run(write_trace(doc)))
    assert row["compute_ns"] == 400_000
    assert row["comm_ns"] == row["exposed_comm_ns"] == 230_000
    assert row["overlap_ns"] == 0
    assert row["idle_ns"] == 1_000_000 - 400_000 - 230_000


def test_every_wait_op_on_the_main_thread_is_not_compute(write_trace):
    """The same wait ops as the graph's SYNC nodes (tracekit.core.waits): aten::wait and
    the functional collectives' wait_tensor, not just c10d::wait."""
    doc = trace([
        x("ProfilerStep#1", 0, 1000, cat="user_annotation"),
        x("aten::mm", 0, 100),
        x("aten::wait", 100, 200),
        x("_c10d_functional::wait_tensor", 300, 100),
        x("aten::add", 400, 100),
    ])
    row = only_step(load_run(write_trace(doc)))
    assert row["compute_ns"] == 200_000


def test_nested_ops_and_annotations_count_once(write_trace):
    doc = trace([
        x("ProfilerStep#1", 0, 100, cat="user_annotation"),
        x("DistributedDataParallel.forward", 0, 90, cat="user_annotation"),  # not an op
        x("aten::linear", 10, 40),
        x("aten::addmm", 15, 30),  # inside linear
        x("aten::relu", 60, 10),
    ])
    row = only_step(load_run(write_trace(doc)))
    assert row["compute_ns"] == 50_000
    assert row["idle_ns"] == 50_000 and row["comm_ns"] == 0


def test_without_steps_the_busiest_thread_is_main_and_the_trace_is_one_window(write_trace):
    doc = trace([
        x("aten::mm", 0, 100, tid=1),
        x("aten::mm", 200, 300, tid=3),  # the busiest thread that runs no collective
        x("gloo:all_reduce", 100, 600, tid=2),
        x("aten::copy_", 650, 10, tid=2),
    ])
    run = load_run(write_trace(doc))
    summary = summarize(run)
    row = summary.steps.iloc[0]
    assert row["step"] == 0
    assert row["step_ns"] == 700_000  # first event start to last event end
    assert row["compute_ns"] == 300_000  # thread 3 only
    assert row["comm_ns"] == 600_000 and row["overlap_ns"] == 300_000
    assert any("no ProfilerStep" in n for n in summary.notes)


def test_step_ms_is_the_median_of_the_slowest_rank(write_trace):
    def two_steps(rank, lengths):
        evs, t = [], 0
        for i, length in enumerate(lengths):
            evs.append(x(f"ProfilerStep#{i + 1}", t, length, cat="user_annotation"))
            evs.append(x("aten::mm", t + 1, length / 2))
            t += length + 10
        return trace(evs, rank=rank, world=2)

    a = write_trace(two_steps(0, [100, 300, 200]), name="rank0.json")
    b = write_trace(two_steps(1, [150, 250, 500]), name="rank1.json")
    summary = summarize(load_run([a, b]))
    # per step, slowest rank: 150, 300, 500 µs -> median 300 µs
    assert summary.step_ms == pytest.approx(0.3)
    doc = summary.to_json()
    assert doc["ranks_present"] == [0, 1] and doc["world_size"] == 2
    assert [s["ms"] for s in doc["ranks"][1]["steps"]] == [0.15, 0.25, 0.5]


# --- real traces ------------------------------------------------------------------------------

REAL = ["a100", "alexnet", "gloo300", "world128", "gloo_2rank"]


@pytest.mark.parametrize("name", REAL)
def test_real_traces_match_an_independent_recomputation(trace_named, name):
    """Every (rank, step) row of every real trace: window, compute, comm, exposed,
    overlap and idle equal those a plain-Python sort-and-merge over the event table
    gives (tests/breakdown_check.py), to the nanosecond."""
    run = load_run(trace_named(name))
    got = bc.summarized_rows(summarize(run).steps)
    want = bc.expected_rows(run)
    assert len(got) > 0 and sorted(got) == sorted(want)
    diff = [f"rank {k[0]} step {k[1]} {f}: expected {want[k][f]}, summarize {got[k][f]}"
            for k in want for f in bc.FIELDS if got[k][f] != want[k][f]]
    assert not diff, "\n".join(diff)


def test_independent_recomputation_of_one_gloo_step_by_hand(gloo_2rank_dir):
    """Rank 0, step 3 of the real gloo run, recomputed here from the raw event rows with
    the definitions spelled out (main thread = the ProfilerStep's thread)."""
    run = load_run(gloo_2rank_dir)
    ev = run.rank_events(0)
    win = ev[(ev["kind"] == "step") & (ev["name"] == "ProfilerStep#3")].iloc[0]
    lo, hi = int(win["ts_ns"]), int(win["end_ns"])
    ops = ev[(ev["lane"] == win["lane"]) & (ev["kind"] == "cpu_op")]
    waits = ops[waits_for_comm(ops["name"].to_numpy())]
    comm = ev[ev["kind"] == "comm"]

    def spans(df):
        return bc.merge(bc.clip(zip(df["ts_ns"].tolist(), df["end_ns"].tolist()), lo, hi))

    compute = bc.subtract(spans(ops), spans(waits))
    busy_comm = spans(comm)
    row = summarize(run).steps.query("rank == 0 and step == 3").iloc[0]
    assert row["step_ns"] == hi - lo
    assert row["compute_ns"] == bc.length(compute)
    assert row["comm_ns"] == bc.length(busy_comm)
    assert row["overlap_ns"] == bc.length(bc.intersect(compute, busy_comm))
    assert row["idle_ns"] == hi - lo - bc.length(bc.merge(compute + busy_comm))
    # and the run really mixes the parts: all of them are substantial in this step
    assert min(row["compute_ns"], row["exposed_comm_ns"], row["overlap_ns"],
               row["idle_ns"]) > 100_000


def test_a100_has_comm_in_every_step(a100_trace):
    s = summarize(load_run(a100_trace)).steps
    assert s["step"].tolist() == [4, 5, 6]
    assert (s["comm_ns"] > 0).all() and (s["compute_ns"] > 0).all()
    assert (s["basis"] == "gpu").all()


def test_gloo_2rank_breakdown_is_plausible(gloo_2rank_dir):
    run = load_run(gloo_2rank_dir)
    s = summarize(run).steps
    assert sorted(set(s["rank"])) == [0, 1] and (s["basis"] == "cpu").all()
    assert s.groupby("rank")["step"].apply(list).tolist() == [[2, 3, 4], [2, 3, 4]]
    assert (s["comm_ns"] > 0).all() and (s["compute_ns"] > 0).all()
    # the main thread holds the ProfilerStep annotations; gloo work is on other threads
    for rank in (0, 1):
        ev = run.rank_events(rank)
        main_lane = ev.loc[ev["kind"] == "step", "lane"].iloc[0]
        assert not ((ev["kind"] == "comm") & (ev["lane"] == main_lane)).any()
    # the step window is exactly the ProfilerStep annotation on a CPU rank
    steps = run.events[run.events["kind"] == "step"]
    assert sorted(steps["dur_ns"]) == sorted(s["step_ns"])


def test_alexnet_is_one_window(alexnet_trace):
    s = summarize(load_run(alexnet_trace)).steps
    assert s["step"].tolist() == [0]
    assert s["comm_ns"].tolist() == [0]


# --- the command -------------------------------------------------------------------------------

def test_json_output_shape(gloo_2rank_dir):
    result = CliRunner().invoke(cli, ["summary", str(gloo_2rank_dir), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) == {"world_size", "ranks_present", "step_ms", "ranks", "stragglers", "notes",
                        "warnings"}
    assert doc["warnings"] == []
    assert doc["world_size"] == 2 and doc["ranks_present"] == [0, 1]
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    keys = {"step", "ms", "compute_ms", "comm_ms", "exposed_comm_ms", "idle_ms", "overlap_ms"}
    for r in doc["ranks"]:
        for s in r["steps"]:
            assert set(s) == keys
            assert isinstance(s["step"], int) and all(isinstance(s[k], float) for k in keys - {"step"})
    # the figures are the independently recomputed ones, in ms
    want = bc.expected_rows(load_run(gloo_2rank_dir))
    for r in doc["ranks"]:
        for s in r["steps"]:
            ns = want[(r["rank"], s["step"])]
            assert [s["ms"], s["compute_ms"], s["comm_ms"], s["exposed_comm_ms"],
                    s["overlap_ms"], s["idle_ms"]] == pytest.approx(
                [ns[f] / 1e6 for f in ("step_ns", "compute_ns", "comm_ns",
                                       "exposed_comm_ns", "overlap_ns", "idle_ns")],
                abs=1e-6)
    slowest = [max(r["steps"][i]["ms"] for r in doc["ranks"]) for i in range(3)]
    assert doc["step_ms"] == pytest.approx(statistics.median(slowest), abs=1e-6)


def test_text_output_has_the_table_and_the_notes(a100_trace, alexnet_trace, capsys):
    assert main(["summary", str(a100_trace)]) == 0
    out = capsys.readouterr().out
    assert "compute" in out and "exposed" in out and "idle" in out
    assert "note: incomplete world: traces for 1 of 2 ranks" in out
    assert len([ln for ln in out.splitlines() if ln.split()[:2] in (["0", "4"], ["0", "5"],
                                                                     ["0", "6"])]) == 3
    assert main(["summary", str(alexnet_trace)]) == 0
    assert "note: no ProfilerStep" in capsys.readouterr().out


def test_help_states_the_definitions_and_an_example():
    result = CliRunner().invoke(cli, ["summary", "--help"])
    assert result.exit_code == 0
    for words in ("Examples:", "tracekit summary runs/mlp", "exposed", "overlap", "idle",
                  "ProfilerStep", "main training thread", "step_ms"):
        assert words in result.output


def test_several_files_on_the_command_line(world128_traces, capsys):
    assert main(["summary", *map(str, world128_traces), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ranks_present"] == [0, 1] and doc["world_size"] == 128
    assert any("incomplete world" in n for n in doc["notes"])


@pytest.mark.torch
@pytest.mark.slow
def test_a_fresh_real_gloo_recording(gloo_2rank_dir, tmp_path):
    """Record the checked-in gloo run again with the installed torch and read it back."""
    pytest.importorskip("torch")
    import os
    import shutil
    import subprocess
    import sys

    shutil.copy(gloo_2rank_dir / "record.py", tmp_path / "record.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "record.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = load_run(tmp_path)
    assert run.ranks == [0, 1] and run.backend == "gloo" and run.steps() == [2, 3, 4]
    comm = run.events[run.events["kind"] == "comm"]
    assert comm["lane_name"].astype(str).str.contains("pt_gloo_runloop").all()
    assert (comm.loc[comm["name"] == "gloo:all_reduce", "comm_bytes"] > 0).all()
    s = summarize(run).steps
    assert len(s) == 6
    assert bc.summarized_rows(s) == bc.expected_rows(run)
    assert (s["comm_ns"] > 0).all() and (s["compute_ns"] > 0).all()
