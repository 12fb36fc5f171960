"""The step window (tracekit.core.steps)."""

from __future__ import annotations

from test_views_timeline import events_table

from tracekit.analysis.breakdown import summarize
from tracekit.core.run import load_run
from tracekit.core.steps import WINDOW_COLUMNS, step_number, step_windows


def rows(win):
    return [tuple(r) for r in win[WINDOW_COLUMNS].itertuples(index=False)]


def gpu_rank():
    return events_table([
        {"name": "ProfilerStep#3", "kind": "step", "ts_ns": 100, "dur_ns": 900, "step": 3},
        {"name": "aten::mm", "ts_ns": 150, "dur_ns": 100, "step": 3},
        {"name": "gemm", "kind": "kernel", "lane_kind": "gpu", "lane": 7, "ts_ns": 900,
         "dur_ns": 700, "step": 3},
        {"name": "ProfilerStep#4", "kind": "step", "ts_ns": 1100, "dur_ns": 400, "step": 4},
        {"name": "short", "kind": "kernel", "lane_kind": "gpu", "lane": 7, "ts_ns": 1150,
         "dur_ns": 10, "step": 4},
        {"name": "outside", "ts_ns": 5000, "dur_ns": 5, "step": -1},
    ])


def test_step_number():
    assert step_number("ProfilerStep#12") == 12


def test_host_window_and_device_tail():
    ev = gpu_rank()
    assert rows(step_windows(ev)) == [(0, 3, 100, 1000, True), (0, 4, 1100, 1500, True)]
    assert rows(step_windows(ev, device_tail=True)) == [
        (0, 3, 100, 1600, True), (0, 4, 1100, 1500, True)]


def test_the_earliest_of_a_repeated_step_counts():
    ev = events_table([
        {"name": "ProfilerStep#2", "kind": "step", "ts_ns": 500, "dur_ns": 100, "step": -1},
        {"name": "ProfilerStep#2", "kind": "step", "ts_ns": 0, "dur_ns": 100, "step": 2},
    ])
    assert rows(step_windows(ev)) == [(0, 2, 0, 100, True)]


def test_without_annotations_a_step_spans_its_events_per_rank():
    ev = events_table([
        {"name": "a", "ts_ns": 10, "dur_ns": 5, "step": 0},
        {"name": "k", "kind": "kernel", "lane_kind": "gpu", "lane": 7, "ts_ns": 12,
         "dur_ns": 30, "step": 0},
        {"name": "b", "rank": 1, "ts_ns": 3, "dur_ns": 4, "step": 0},
        {"name": "ProfilerStep#5", "kind": "step", "rank": 2, "ts_ns": 0, "dur_ns": 9,
         "step": 5},
        {"name": "c", "rank": 2, "ts_ns": 1, "dur_ns": 99, "step": 5},
    ])
    assert rows(step_windows(ev, device_tail=True)) == [
        (0, 0, 10, 42, False), (1, 0, 3, 7, False), (2, 5, 0, 9, True)]
    assert step_windows(ev.iloc[:0]).columns.tolist() == WINDOW_COLUMNS


def test_summary_uses_the_device_tail(alexnet_trace, a100_trace):
    for path in (alexnet_trace, a100_trace):
        run = load_run(path)
        steps = summarize(run).steps
        win = step_windows(run.events, device_tail=True)
        assert rows(win) == [(int(r.rank), int(r.step), int(r.start_ns), int(r.end_ns), ann)
                             for r, ann in zip(steps.itertuples(), win["annotated"])]
