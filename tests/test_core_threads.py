"""Thread names and the main training thread (tracekit.core.threads)."""

from __future__ import annotations

import numpy as np
from test_views_timeline import events_table

from tracekit.core.run import load_run
from tracekit.core.threads import THREAD_NAME, main_lanes, main_threads, split_thread_name
from tracekit.graph.build import build_graph


def test_split_thread_name():
    assert split_thread_name("thread 2394 (python3)") == (2394, "python3")
    assert split_thread_name("thread 7") == (7, None)
    assert split_thread_name("thread -549452224") == (-549452224, None)
    assert split_thread_name("thread 9 (pt_gloo_runloop (x))") == (9, "pt_gloo_runloop (x)")
    assert split_thread_name("pt_gloo_runloop") is None
    assert split_thread_name("stream 7") is None
    assert THREAD_NAME.match("thread 12 ()").group(2) == ""


def test_the_step_holder_is_main_whatever_the_names_and_op_times():
    ev = events_table([
        {"name": "ProfilerStep#1", "kind": "step", "lane": 30, "ts_ns": 0, "dur_ns": 50,
         "step": 1, "lane_name": "thread 30 (worker)"},
        {"name": "aten::mm", "lane": 30, "ts_ns": 1, "dur_ns": 5, "step": 1},
        {"name": "aten::add", "lane": 10, "ts_ns": 0, "dur_ns": 40, "step": 1,
         "lane_name": "thread 10 (pt_main_thread)"},
        # rank 1 repeats its step on two threads: the earliest annotation decides
        {"name": "ProfilerStep#1", "kind": "step", "rank": 1, "lane": 8, "ts_ns": 20,
         "dur_ns": 10, "step": 1},
        {"name": "ProfilerStep#2", "kind": "step", "rank": 1, "lane": 9, "ts_ns": 5,
         "dur_ns": 10, "step": 2},
    ])
    assert main_threads(ev) == {0: 30, 1: 9}


def test_without_steps_the_busiest_operator_thread_that_runs_no_comm():
    ev = events_table([
        {"name": "aten::mm", "lane": 1, "ts_ns": 0, "dur_ns": 100},
        {"name": "aten::mm", "lane": 3, "ts_ns": 200, "dur_ns": 300},
        {"name": "gloo:all_reduce", "kind": "comm", "lane": 2, "ts_ns": 100, "dur_ns": 600},
        {"name": "aten::copy_", "lane": 2, "ts_ns": 650, "dur_ns": 900},  # a gloo thread
        {"name": "DDP.forward", "kind": "annotation", "lane": 1, "ts_ns": 0, "dur_ns": 999},
        {"name": "gemm", "kind": "kernel", "lane_kind": "gpu", "lane": 3, "ts_ns": 0,
         "dur_ns": 5000},
    ])
    assert main_threads(ev) == {0: 3}
    # ties go to the lowest thread id
    tie = events_table([{"name": "a", "lane": 5, "ts_ns": 0, "dur_ns": 7},
                        {"name": "b", "lane": 4, "ts_ns": 0, "dur_ns": 7}])
    assert main_threads(tie) == {0: 4}


def test_without_operators_the_busiest_host_thread_and_none_without_host():
    ev = events_table([
        {"name": "gloo:all_reduce", "kind": "comm", "lane": 2, "ts_ns": 0, "dur_ns": 10},
        {"name": "x", "kind": "annotation", "lane": 1, "ts_ns": 0, "dur_ns": 30},
        {"name": "gemm", "kind": "kernel", "lane_kind": "gpu", "rank": 1, "lane": 7,
         "ts_ns": 0, "dur_ns": 9},
    ])
    assert main_threads(ev) == {0: 1}
    assert main_threads(ev.iloc[:0]) == {}


def test_array_form_is_the_same_rule():
    got = main_lanes(rank=np.array([0, 0, 0, 1]), lane=np.array([1, 2, 2, 4]),
                     is_host=np.array([True, True, True, True]),
                     is_step=np.array([False, True, False, False]),
                     is_op=np.array([True, False, True, True]),
                     is_comm=np.array([False, False, False, False]),
                     ts=np.array([0, 0, 0, 0]), end=np.array([90, 10, 5, 1]))
    assert got == {0: 2, 1: 4}


def test_graph_and_events_agree_on_real_traces(gloo_2rank_traces, alexnet_trace, gloo300_trace):
    for paths in (gloo_2rank_traces, [alexnet_trace], [gloo300_trace]):
        run = load_run(paths if len(paths) > 1 else paths[0])
        graph = build_graph(run)
        expected = main_threads(run.events)
        marked = {ln.rank: ln.local_id for ln in graph.lanes if ln.is_main}
        # the main thread is marked when it holds a node of the graph
        holds = {(ln.rank, ln.local_id) for ln in graph.lanes if ln.kind != "gpu"}
        assert marked == {r: t for r, t in expected.items() if (r, t) in holds}
    # rank 34 of the 300-rank trace: its step holder has no node in the step, and its
    # two gloo worker threads (also named pt_main_thread) are not main
    assert expected == {34: 1074} and marked == {}
