"""Timeline rows, outermost ops and step spans (tracekit.views.lanes)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_views_timeline import drawn_outermost, events_table

from tracekit.errors import TracekitError
from tracekit.views.lanes import bar_mask, lane_rows, row_index, select_window, step_spans


def test_outermost_ops_hide_children_steps_and_annotations():
    ev = events_table([
        {"name": "ProfilerStep#3", "kind": "step", "ts_ns": 0, "dur_ns": 900, "step": 3},
        {"name": "DistributedDataParallel.forward", "kind": "annotation", "ts_ns": 10,
         "dur_ns": 290, "step": 3},
        {"name": "aten::linear", "ts_ns": 12, "dur_ns": 88, "step": 3},
        {"name": "aten::addmm", "ts_ns": 20, "dur_ns": 70, "step": 3},
        {"name": "AddmmBackward0", "ts_ns": 310, "dur_ns": 190, "step": 3},
        # same start as its parent: the longer one is the parent
        {"name": "aten::mm", "ts_ns": 310, "dur_ns": 50, "step": 3},
        {"name": "gloo:all_reduce", "kind": "comm", "lane": 2, "ts_ns": 20, "dur_ns": 400,
         "step": 3},
    ])
    drawn = ev[bar_mask(ev)]["name"].astype(str).tolist()
    assert sorted(drawn) == ["AddmmBackward0", "aten::linear", "gloo:all_reduce"]


@st.composite
def lanes_of_intervals(draw):
    rows = []
    for lane in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(0, 25))):
            ts = draw(st.integers(0, 1000))
            rows.append({"name": "op", "lane": lane, "ts_ns": ts,
                         "dur_ns": draw(st.integers(0, 300)),
                         "kind": draw(st.sampled_from(["cpu_op", "cpu_op", "annotation"]))})
    return rows


@settings(max_examples=60, deadline=None)
@given(lanes_of_intervals())
def test_bar_mask_matches_brute_force_and_bars_never_overlap(rows):
    if not rows:
        return
    ev = events_table(rows)
    mask = bar_mask(ev)
    assert set(ev.index[mask]) == set(drawn_outermost(ev).index)
    drawn = ev[mask]
    for _, lane in drawn.groupby("lane"):
        lane = lane.sort_values("ts_ns")
        # outermost bars of a lane are disjoint in time (touching is fine)
        assert (lane["ts_ns"].to_numpy()[1:] >= lane["end_ns"].to_numpy()[:-1]).all()
    # annotations are never bars
    assert not (ev["kind"][mask] == "annotation").any()


def test_rows_order_main_thread_first_then_gpu_and_disambiguate_names():
    # no step rows: the main thread is the busiest operator thread running no comm
    ev = events_table([
        {"name": "a", "rank": 1, "lane": 50, "lane_name": "thread 50 (pt_gloo_runloop)",
         "kind": "comm", "ts_ns": 0, "dur_ns": 9},
        {"name": "b", "rank": 1, "lane": 51, "lane_name": "thread 51 (pt_gloo_runloop)",
         "kind": "comm", "ts_ns": 0, "dur_ns": 9},
        {"name": "k", "rank": 0, "lane_kind": "gpu", "lane": 7, "ts_ns": 0, "dur_ns": 9},
        {"name": "c", "rank": 0, "lane": 99, "lane_name": "thread 99 (pt_autograd_0)",
         "ts_ns": 0, "dur_ns": 1},
        {"name": "d", "rank": 0, "lane": 200, "lane_name": "thread 200 (pt_main_thread)",
         "ts_ns": 0, "dur_ns": 2},
        {"name": "e", "rank": 1, "lane": 300, "lane_name": "thread 300 (python3)",
         "ts_ns": 0, "dur_ns": 1},
    ])
    rows = lane_rows([ev])
    assert [r.label for r in rows] == [
        "r0 pt_main_thread", "r0 pt_autograd_0", "r0 stream 7",
        "r1 python3", "r1 pt_gloo_runloop 50", "r1 pt_gloo_runloop 51",
    ]
    idx = row_index(ev, rows)
    assert [rows[i].label for i in idx] == [
        "r1 pt_gloo_runloop 50", "r1 pt_gloo_runloop 51", "r0 stream 7",
        "r0 pt_autograd_0", "r0 pt_main_thread", "r1 python3"]
    assert (row_index(ev, rows[:1]) == np.array([-1, -1, -1, -1, 0, -1])).all()


def test_the_main_thread_row_is_the_step_holder_not_a_thread_named_main():
    # three threads named pt_main_thread (as in a real 300-rank gloo trace): the one holding
    # ProfilerStep comes first, even with less operator time; names only label rows
    ev = events_table([
        {"name": "ProfilerStep#1", "kind": "step", "lane": 30, "ts_ns": 0, "dur_ns": 50,
         "step": 1, "lane_name": "thread 30 (pt_main_thread)"},
        {"name": "aten::mm", "lane": 30, "ts_ns": 0, "dur_ns": 5, "step": 1,
         "lane_name": "thread 30 (pt_main_thread)"},
        {"name": "aten::add", "lane": 10, "ts_ns": 0, "dur_ns": 40, "step": 1,
         "lane_name": "thread 10 (pt_main_thread)"},
        {"name": "aten::copy_", "lane": 20, "ts_ns": 0, "dur_ns": 40, "step": 1,
         "lane_name": "thread 20 (python3)"},
    ])
    assert [r.label for r in lane_rows([ev])] == [
        "r0 pt_main_thread 30", "r0 pt_main_thread 10", "r0 python3"]
    # the bars alone (no step row): the busiest operator thread
    assert [r.label for r in lane_rows([ev[bar_mask(ev)]])] == [
        "r0 pt_main_thread 10", "r0 python3", "r0 pt_main_thread 30"]


def test_step_span_starts_at_profiler_step_and_covers_late_gpu_work():
    ev = events_table([
        {"name": "ProfilerStep#4", "kind": "step", "ts_ns": 100, "dur_ns": 1000, "step": 4},
        {"name": "aten::mm", "ts_ns": 150, "dur_ns": 100, "step": 4},
        {"name": "gemm", "lane_kind": "gpu", "lane": 7, "kind": "kernel", "ts_ns": 900,
         "dur_ns": 700, "step": 4},
        {"name": "ProfilerStep#5", "kind": "step", "ts_ns": 1100, "dur_ns": 500, "step": 5},
        {"name": "outside", "ts_ns": 5000, "dur_ns": 5, "step": -1},
    ])
    spans = step_spans(ev)
    assert [(s.step, s.start_ns, s.end_ns) for s in spans] == [(4, 100, 1600), (5, 1100, 1600)]


def test_select_window_filters_and_explains_what_is_missing():
    ev = events_table([
        {"name": "a", "ts_ns": 0, "dur_ns": 1, "step": 2},
        {"name": "b", "rank": 1, "ts_ns": 0, "dur_ns": 1, "step": 3},
        {"name": "c", "ts_ns": 9, "dur_ns": 1, "step": -1},
    ])
    assert select_window(ev, step=None, ranks=None)["name"].astype(str).tolist() == ["a", "b"]
    assert select_window(ev, step=3, ranks=None)["name"].astype(str).tolist() == ["b"]
    assert select_window(ev, step=None, ranks=[0])["name"].astype(str).tolist() == ["a"]
    with pytest.raises(TracekitError, match="steps present: 2, 3; pass --step"):
        select_window(ev, step=7, ranks=None)
    with pytest.raises(TracekitError, match="rank 4 is not in the run; ranks present: 0, 1"):
        select_window(ev, step=None, ranks=[4])
