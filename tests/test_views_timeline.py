"""The measured-vs-predicted timeline figure (tracekit.views.timeline).

Also holds the small builders other view tests import: ``events_table`` (an event table
from a few dicts) and ``fake_prediction`` (a predicted timeline made from a measured one:
the same ops, shifted and scaled, as a replay would return them).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from replay.result import ReplayResult, WhatIfResult
from tracekit.core.run import load_run
from tracekit.core.schema import EVENT_COLUMNS, check_schema
from tracekit.errors import TracekitError
from tracekit.views.timeline import Headline, headline_from, timeline_figure

NOT_BARS = ("step", "annotation")


def events_table(rows: list[dict]) -> pd.DataFrame:
    """An event table (exact schema) from dicts with at least name, ts_ns, dur_ns.

    Defaults: rank 0, cpu lane 1 'thread 1 (python3)', kind cpu_op, step 0.
    """
    base = {"rank": 0, "lane_kind": "cpu", "lane": 1, "pid": 0, "cat": "cpu_op",
            "kind": "cpu_op", "step": 0, "correlation": -1, "external_id": -1,
            "collective": "", "comm_bytes": -1, "in_nelems": -1, "out_nelems": -1,
            "dtype": "", "group_size": -1, "pg_name": "", "pg_ranks": "", "seq": -1,
            "wait_on_stream": -1, "wait_on_corr": -1, "nccl_algo": "", "nccl_proto": "",
            "nccl_channels": -1, "nccl_comm": "", "nested_events": 0}
    recs = []
    for r in rows:
        rec = {**base, **r}
        rec.setdefault("lane_name", f"thread {rec['lane']} (python3)" if rec["lane_kind"] == "cpu"
                       else f"stream {rec['lane']}")
        rec["end_ns"] = rec["ts_ns"] + rec["dur_ns"]
        recs.append(rec)
    df = pd.DataFrame(recs)
    out = {}
    for col, (dt, _) in EVENT_COLUMNS.items():
        out[col] = df[col].astype(dt)
    table = pd.DataFrame(out)
    check_schema(table)
    return table


def fake_prediction(measured: pd.DataFrame, *, scale: float = 0.8, shift_ns: int = 5_000,
                    critical_every: int = 0) -> pd.DataFrame:
    """A replay-shaped timeline: the measured rows (steps kept, annotations dropped), start
    times scaled about the first start and shifted, durations scaled, plus node /
    critical / measured_ts_ns."""
    tl = measured[measured["kind"] != "annotation"].copy().reset_index(drop=True)
    t0 = int(tl["ts_ns"].min())
    tl["node"] = np.arange(len(tl), dtype=np.int64)
    tl["measured_ts_ns"] = tl["ts_ns"].astype(np.int64)
    tl["ts_ns"] = (t0 + shift_ns + ((tl["ts_ns"] - t0) * scale)).astype(np.int64)
    tl["dur_ns"] = (tl["dur_ns"] * scale).astype(np.int64)
    tl["end_ns"] = tl["ts_ns"] + tl["dur_ns"]
    crit = np.zeros(len(tl), dtype=bool)
    if critical_every:
        crit[::critical_every] = True
    tl["critical"] = crit & ~tl["kind"].isin(list(NOT_BARS)).to_numpy()
    return tl


def drawn_outermost(events: pd.DataFrame) -> pd.DataFrame:
    """Brute force: the non-step, non-annotation rows not started inside an earlier (or
    longer, same-start) row of the same lane. Independent of tracekit.views.lanes."""
    ev = events[~events["kind"].isin(list(NOT_BARS))]
    keep = []
    for _, lane in ev.groupby(["rank", "lane_kind", "lane"], observed=True):
        lane = lane.assign(neg=-(lane["end_ns"] - lane["ts_ns"])).sort_values(["ts_ns", "neg"])
        reach = None
        for idx, ts, end in zip(lane.index, lane["ts_ns"], lane["end_ns"]):
            if reach is None or ts >= reach:
                keep.append(idx)
            reach = end if reach is None else max(reach, end)
    return events.loc[sorted(keep)]


def traces_by_role(fig, role: str, panel: int | None = None) -> list:
    return [t for t in fig.data if (t.meta or {}).get("role") == role
            and (panel is None or t.meta.get("panel") == panel)]


def segments(trace) -> int:
    """Number of bars (NaN-separated segments) in a bar trace."""
    x = np.asarray(trace.x, dtype=float)
    ok = ~np.isnan(x)
    return int((ok & ~np.concatenate([[False], ok[:-1]])).sum())


# --------------------------------------------------------------------------- tests


GLOO_2RANK = Path(__file__).parent / "data" / "gloo_2rank"


@pytest.fixture(scope="module")
def run():
    return load_run(GLOO_2RANK)


def test_measured_and_predicted_panels_share_rows_and_count_every_op(run):
    pred = fake_prediction(run.events, critical_every=7)
    base = ReplayResult(timeline=pred, step_ms={2: 20.0, 3: 21.0, 4: 19.0},
                        measured_step_ms={2: 25.0, 3: 24.0, 4: 26.0})
    tf = timeline_figure(run.events, pred, headline=headline_from("gloo", base))
    assert [p.name for p in tf.panels] == ["measured", "predicted: baseline replay"]

    # rows: one per (rank, lane) holding ops, main thread first within each rank
    drawn = drawn_outermost(run.events[run.events["step"] >= 0])
    lanes = drawn.groupby(["rank", "lane"]).size()
    assert len(tf.rows) == len(lanes) == 6
    assert [r.rank for r in tf.rows] == sorted(r.rank for r in tf.rows)
    assert tf.rows[0].label == "r0 python3" and tf.rows[3].label.startswith("r1 python3")

    # every outermost op is either its own bar or inside an aggregated one
    measured = tf.panels[0]
    assert measured.n_ops == len(drawn)
    bars = sum(segments(t) for t in traces_by_role(tf.figure, "bars", 0))
    agg = sum(segments(t) for t in traces_by_role(tf.figure, "aggregated", 0))
    assert bars + agg == measured.n_bars
    assert agg == measured.n_aggregated_bars
    assert bars == measured.n_ops - measured.n_aggregated_ops
    # y axes of both panels list the same rows
    assert list(tf.figure.layout.yaxis.ticktext) == list(tf.figure.layout.yaxis2.ticktext)
    assert list(tf.figure.layout.yaxis.ticktext) == [r.label for r in tf.rows]


def test_critical_ops_are_outlined_and_never_aggregated(run):
    pred = fake_prediction(run.events, critical_every=3)
    tf = timeline_figure(run.events, pred)
    crit_drawn = drawn_outermost(pred[pred["step"] >= 0])["critical"].sum()
    outline = traces_by_role(tf.figure, "critical", 1)
    assert len(outline) == 1
    assert segments(outline[0]) == crit_drawn == tf.panels[1].n_critical > 0
    assert not traces_by_role(tf.figure, "critical", 0)  # the measured panel has none


def test_title_states_prediction_speedup_and_baseline_error(run):
    pred = fake_prediction(run.events)
    base = ReplayResult(timeline=pred, step_ms={2: 20.0, 3: 22.0, 4: 30.0},
                        measured_step_ms={2: 25.0, 3: 24.0, 4: 26.0})
    fast = ReplayResult(timeline=pred, step_ms={2: 10.0, 3: 11.0, 4: 12.0},
                        measured_step_ms=base.measured_step_ms)
    wi = WhatIfResult(spec="fusion=4MB", result=fast, speedup=2.0)
    h = headline_from("gloo", base, wi)
    assert h.measured_step_ms == 25.0 and h.predicted_step_ms == 11.0
    assert h.baseline_error_pct == pytest.approx((22.0 - 25.0) / 25.0 * 100)
    tf = timeline_figure(run.events, pred, headline=h)
    assert "predicted (fusion=4MB) 11.00 ms/step" in tf.title
    assert "speedup 2.00×" in tf.title
    assert "baseline replay error -12.0%" in tf.title
    assert tf.figure.layout.title.text == tf.title
    # a step picks that step's numbers
    h3 = headline_from("gloo", base, wi, step=4)
    assert (h3.measured_step_ms, h3.predicted_step_ms) == (26.0, 12.0)


def test_step_selection_starts_time_at_that_step(run):
    tf = timeline_figure(run.events, None, step=3)
    assert tf.panels[0].steps == [3]
    xs = np.concatenate([np.asarray(t.x, float) for t in traces_by_role(tf.figure, "bars")])
    xs = xs[~np.isnan(xs)]
    assert xs.min() >= -1e-6  # nothing before the step's start
    step3 = run.events[(run.events["step"] == 3)]
    assert tf.panels[0].n_ops == len(drawn_outermost(step3))
    # one dashed boundary per step shown, plus the dotted end line
    dashed = [s for s in tf.figure.layout.shapes if s.line.dash == "dash"]
    assert len(dashed) == 1 and dashed[0].x0 == 0.0


def test_missing_step_or_rank_is_a_clear_error(run):
    with pytest.raises(TracekitError, match=r"step 9 is not in the measured run; steps present: 2, 3, 4"):
        timeline_figure(run.events, None, step=9)
    with pytest.raises(TracekitError, match=r"rank 5 is not in the measured run"):
        timeline_figure(run.events, None, ranks=[5])
    with pytest.raises(TracekitError, match="nothing to draw"):
        timeline_figure(None, None)


def test_rank_filter_keeps_only_those_rows(run):
    tf = timeline_figure(run.events, fake_prediction(run.events), ranks=[1])
    assert {r.rank for r in tf.rows} == {1}
    assert all(lbl.startswith("r1 ") for lbl in tf.figure.layout.yaxis.ticktext)


def test_bar_budget_raises_the_aggregation_threshold():
    # 4 lanes x 800 kernels of 10 us with 2 us gaps: a 9.6 ms window, so each kernel is
    # just over the ~1 px threshold (9.6 us) and nothing is aggregated without a budget
    rows = []
    for lane in range(4):
        for i in range(800):
            rows.append({"lane_kind": "gpu", "lane": lane, "kind": "kernel", "cat": "kernel",
                         "name": f"k{i % 5}", "ts_ns": i * 12_000, "dur_ns": 10_000})
    ev = events_table(rows)
    free = timeline_figure(ev, None, max_bars_per_panel=10**9)
    tight = timeline_figure(ev, None, max_bars_per_panel=100)
    assert tight.panels[0].n_bars <= 100 < free.panels[0].n_bars
    assert tight.threshold_ms > free.threshold_ms
    assert free.panels[0].n_bars == free.panels[0].n_ops == 4 * 800
    assert tight.panels[0].n_ops == 4 * 800
    note = [t.name for t in tight.figure.data if (t.meta or {}).get("role") == "legend-note"]
    assert len(note) == 1 and "aggregated into" in note[0]
    assert f"{tight.panels[0].n_aggregated_ops:,} ops" in note[0]


def test_hover_traces_carry_one_label_per_bar(run):
    pred = fake_prediction(run.events, critical_every=5)
    tf = timeline_figure(run.events, pred)
    for i, panel in enumerate(tf.panels):
        hovers = traces_by_role(tf.figure, "hover", i)
        # every bar and idle gap has at least one hover anchor; long ones have a few
        anchors = sum(len(t.x) for t in hovers)
        assert anchors >= panel.n_bars + panel.n_idle
        for t in hovers:
            assert len(t.customdata) == len(t.x)
            assert t.hovertemplate.endswith("<extra></extra>")
        comm = [t for t in hovers if t.name == "communication" and t.meta["of"] == "bars"]
        if comm:
            assert "MiB" in comm[0].hovertemplate


def test_measured_only_figure_has_one_panel(run):
    tf = timeline_figure(run.events, None, headline=Headline(run_name="x"))
    assert len(tf.panels) == 1
    assert "yaxis2" not in tf.figure.layout.to_plotly_json()
    assert math.isclose(tf.panels[0].window_ms,
                        (run.events[run.events["step"] >= 0]["end_ns"].max()
                         - run.events[(run.events["kind"] == "step")]["ts_ns"].min()) / 1e6)


def test_real_replay_draws_below_the_measured_run(run):
    from tracekit.api import Session

    replayed = Session(run)
    tf = timeline_figure(run.events, replayed.baseline.timeline,
                         headline=headline_from("gloo", replayed.baseline))
    assert len(tf.panels) == 2 and tf.panels[1].n_ops > 0
    assert "baseline replay error" in tf.title
    pred_rows = {(r, lane) for r, lane in zip(replayed.baseline.timeline["rank"],
                                              replayed.baseline.timeline["lane"])}
    assert {(r.rank, r.lane) for r in tf.rows} <= pred_rows | {
        (r, lane) for r, lane in zip(run.events["rank"], run.events["lane"])}
