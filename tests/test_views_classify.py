"""Bar colors: forward / backward / optimizer / comm / launch from names, phases and
launches (tracekit.views.classify), on a hand-made trace parsed like any Kineto file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_views_timeline import events_table

from tracekit.core.kineto import parse_trace
from tracekit.core.run import load_run
from tracekit.views.classify import KIND_LIST, classify, classify_like
from tracekit.views.styling import BarKind


def _ev(name, cat, ts, dur, tid=1, pid=100, **args):
    return {"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": ts, "dur": dur,
            "args": args}


DOC = {
    "distributedInfo": {"rank": 0, "world_size": 1, "backend": "gloo"},
    "traceEvents": [
        _ev("ProfilerStep#1", "user_annotation", 0, 1000),
        _ev("DistributedDataParallel.forward", "user_annotation", 10, 290),
        _ev("aten::linear", "cpu_op", 12, 88),
        _ev("aten::addmm", "cpu_op", 20, 70),
        _ev("autograd::engine::evaluate_function: AddmmBackward0", "cpu_op", 310, 190),
        _ev("aten::mm", "cpu_op", 320, 80),
        _ev("cudaLaunchKernel", "cuda_runtime", 330, 5, correlation=7),
        _ev("Optimizer.step#SGD.step", "user_annotation", 600, 100),
        _ev("aten::add_", "cpu_op", 610, 40),
        _ev("aten::randn", "cpu_op", 800, 10),
        _ev("tracekit.fwd:block1", "user_annotation", 850, 100),
        _ev("aten::relu", "cpu_op", 860, 20),
        _ev("gemm_kernel", "kernel", 400, 50, tid=7, pid=0, stream=7, correlation=7),
        _ev("gloo:all_reduce", "cpu_op", 350, 250, tid=2),
        _ev("c10d::allreduce_", "cpu_op", 900, 5),
    ],
}

EXPECTED = {
    "aten::linear": BarKind.FORWARD,
    "aten::addmm": BarKind.FORWARD,
    "autograd::engine::evaluate_function: AddmmBackward0": BarKind.BACKWARD,
    "aten::mm": BarKind.BACKWARD,  # inside the backward op on its lane
    "cudaLaunchKernel": BarKind.LAUNCH,
    "gemm_kernel": BarKind.BACKWARD,  # launched from backward
    "aten::add_": BarKind.OPTIMIZER,  # inside Optimizer.step
    "aten::randn": BarKind.OTHER,  # outside every phase
    "aten::relu": BarKind.FORWARD,  # inside a tracekit.fwd: annotation
    "gloo:all_reduce": BarKind.COMM,
    "c10d::allreduce_": BarKind.COMM,
}


@pytest.fixture
def events(write_trace):
    ev, _ = parse_trace(write_trace(DOC))
    return ev


def _kinds(events: pd.DataFrame, codes: np.ndarray) -> dict[str, BarKind]:
    return {str(n): KIND_LIST[c] for n, c in zip(events["name"], codes)}


def test_every_rule_gives_the_expected_kind(events):
    got = _kinds(events, classify(events))
    for name, kind in EXPECTED.items():
        assert got[name] is kind, name


def test_predicted_rows_keep_the_phase_of_their_measured_event(events):
    # a replay drops annotations: alone, aten::linear would lose its forward phase
    pred = events[events["kind"] != "annotation"].copy().reset_index(drop=True)
    pred["measured_ts_ns"] = pred["ts_ns"]
    pred["ts_ns"] = pred["ts_ns"] + 123_000
    pred["end_ns"] = pred["end_ns"] + 123_000
    alone = _kinds(pred, classify(pred))
    assert alone["aten::linear"] is BarKind.OTHER
    like = _kinds(pred, classify_like(pred, events))
    for name, kind in EXPECTED.items():
        assert like[name] is kind, name


def test_what_if_rows_without_a_measured_match_are_classified_by_name(events):
    extra = events_table([{"name": "AddmmBackward0 (what-if)", "ts_ns": 5, "dur_ns": 5}])
    extra["measured_ts_ns"] = -1
    assert KIND_LIST[classify_like(extra, events)[0]] is BarKind.BACKWARD


def test_real_gloo_run_has_all_three_phases(gloo_2rank_dir):
    run = load_run(gloo_2rank_dir)
    codes = classify(run.events)
    kinds = {KIND_LIST[c] for c in codes[run.events["kind"].isin(["cpu_op", "comm"]).to_numpy()]}
    assert {BarKind.FORWARD, BarKind.BACKWARD, BarKind.OPTIMIZER, BarKind.COMM} <= kinds
    # every gloo transfer is communication
    gloo = run.events["name"].astype(str).str.startswith("gloo:").to_numpy()
    assert gloo.any() and all(KIND_LIST[c] is BarKind.COMM for c in codes[gloo])


def test_gpu_kernels_follow_their_launch(a100_trace):
    ev, _ = parse_trace(a100_trace)
    codes = classify(ev)
    kinds = dict(zip(ev["correlation"][ev["kind"] == "kernel"],
                     codes[(ev["kind"] == "kernel").to_numpy()]))
    # independently: launches issued inside a backward op on the host
    bwd = ev[ev["name"].astype(str).str.startswith("autograd::engine::evaluate_function")]
    launches = ev[(ev["kind"] == "launch")]
    inside = np.zeros(len(launches), dtype=bool)
    for lane, ts, end in zip(bwd["lane"], bwd["ts_ns"], bwd["end_ns"]):
        inside |= ((launches["lane"] == lane) & (launches["ts_ns"] >= ts)
                   & (launches["ts_ns"] < end)).to_numpy()
    corr = [c for c in launches["correlation"][inside] if c in kinds]
    assert len(corr) > 100
    assert all(KIND_LIST[kinds[c]] is BarKind.BACKWARD for c in corr)
    # and launches inside Optimizer.step windows give optimizer kernels
    opt = ev[ev["name"].astype(str).str.startswith("Optimizer.step")
             & (ev["lane_kind"] == "cpu")]
    in_opt = np.zeros(len(launches), dtype=bool)
    for ts, end in zip(opt["ts_ns"], opt["end_ns"]):
        in_opt |= ((launches["ts_ns"] >= ts) & (launches["ts_ns"] < end)).to_numpy()
    corr = [c for c in launches["correlation"][in_opt] if c in kinds]
    assert corr and all(KIND_LIST[kinds[c]] is BarKind.OPTIMIZER for c in corr)
