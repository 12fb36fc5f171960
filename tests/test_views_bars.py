"""Aggregation of small ops and idle gaps (tracekit.views.bars)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_views_timeline import events_table

from tracekit.views.bars import build_bars, fmt_duration_ns, idle_bars
from tracekit.views.classify import CODE, classify
from tracekit.views.styling import BarKind

US = 1000


def _bars(ev, threshold_ns, rows=None):
    row = np.zeros(len(ev), dtype=np.int64) if rows is None else np.asarray(rows)
    return build_bars(ev, row=row, codes=classify(ev), origin_ns=0, threshold_ns=threshold_ns)


def test_consecutive_small_ops_become_one_bar_of_their_dominant_kind():
    ev = events_table([
        {"name": "k1", "ts_ns": 0, "dur_ns": 3 * US, "kind": "kernel", "lane_kind": "gpu",
         "cat": "kernel"},
        {"name": "AddmmBackward0", "ts_ns": 3500, "dur_ns": 2 * US},
        {"name": "MulBackward0", "ts_ns": 6000, "dur_ns": 4 * US},
        {"name": "big", "ts_ns": 20 * US, "dur_ns": 90 * US},
    ])
    bars, merged = _bars(ev, threshold_ns=10 * US)
    assert merged == 3 and len(bars) == 2
    agg = bars[bars["n_ops"] > 1].iloc[0]
    assert (agg["n_ops"], agg["start_ms"], agg["end_ms"]) == (3, 0.0, 0.01)
    assert agg["kind"] == CODE[BarKind.BACKWARD]  # 6 us of backward beat 3 us of other
    assert agg["busy_ms"] == 0.009 and agg["name"] == "k1"
    big = bars[bars["n_ops"] == 1].iloc[0]
    assert (big["name"], big["start_ms"], big["end_ms"]) == ("big", 0.02, 0.11)


def test_a_gap_a_big_op_or_a_critical_op_breaks_a_run():
    ev = events_table([
        {"name": "a", "ts_ns": 0, "dur_ns": 2 * US},
        {"name": "b", "ts_ns": 3 * US, "dur_ns": 2 * US},
        {"name": "c", "ts_ns": 30 * US, "dur_ns": 2 * US},  # 25 us gap: new run
        {"name": "d", "ts_ns": 33 * US, "dur_ns": 2 * US},
        {"name": "e", "ts_ns": 36 * US, "dur_ns": 2 * US},
    ])
    bars, merged = _bars(ev, threshold_ns=10 * US)
    assert sorted(bars["n_ops"].tolist()) == [2, 3] and merged == 5
    ev["critical"] = [False, False, False, True, False]
    bars, merged = _bars(ev, threshold_ns=10 * US)
    # d is critical: drawn alone, and it splits c | d | e
    assert sorted(bars["n_ops"].tolist()) == [1, 1, 1, 2] and merged == 2
    assert bars[bars["critical"]]["name"].tolist() == ["d"]
    # ops on different rows never merge
    bars, _ = _bars(ev.assign(critical=False), threshold_ns=10 * US, rows=[0, 1, 0, 1, 0])
    # row 0: a | c+e (4 us apart); row 1: b | d (28 us apart)
    assert sorted(zip(bars["row"], bars["n_ops"])) == [(0, 1), (0, 2), (1, 1), (1, 1)]


@st.composite
def lane_ops(draw):
    rows, t = [], 0
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.integers(0, 30 * US))
        dur = draw(st.integers(0, 40 * US))
        rows.append({"name": f"op{len(rows)}", "ts_ns": t, "dur_ns": dur,
                     "lane": draw(st.integers(0, 2))})
        t += dur
    return rows


@settings(max_examples=60, deadline=None)
@given(lane_ops(), st.integers(1, 50 * US))
def test_aggregation_keeps_every_op_and_covers_it(rows, threshold):
    ev = events_table(rows)
    lanes = ev["lane"].to_numpy()
    bars, merged = _bars(ev, threshold_ns=threshold, rows=lanes)
    assert bars["n_ops"].sum() == len(ev)
    assert merged == bars.loc[bars["n_ops"] > 1, "n_ops"].sum()
    # every op lies inside a bar of its own row
    for lane, ts, end in zip(lanes, ev["ts_ns"] / 1e6, ev["end_ns"] / 1e6):
        own = bars[bars["row"] == lane]
        assert ((own["start_ms"] <= ts + 1e-12) & (own["end_ms"] >= end - 1e-12)).any()
    # aggregated bars only hold ops shorter than the threshold
    short = (ev["dur_ns"] < threshold).sum()
    assert merged <= short


def test_idle_gaps_on_compute_rows_only():
    ev = events_table([
        {"name": "aten::mm", "ts_ns": 0, "dur_ns": 100 * US},
        {"name": "aten::mm", "ts_ns": 400 * US, "dur_ns": 100 * US},
        {"name": "gloo:all_reduce", "kind": "comm", "lane": 2, "ts_ns": 0,
         "dur_ns": 100 * US},
    ])
    rows = np.where(ev["lane"].to_numpy() == 2, 1, 0)
    bars, _ = _bars(ev, threshold_ns=1 * US, rows=rows)
    idle = idle_bars(bars, window_ms=(0.0, 0.6), min_gap_ms=0.05)
    assert idle["row"].tolist() == [0, 0]  # nothing on the comm row
    assert np.allclose(idle[["start_ms", "end_ms"]].to_numpy(), [[0.1, 0.4], [0.5, 0.6]])
    assert (idle["kind"] == CODE[BarKind.IDLE]).all()
    assert len(idle_bars(bars, window_ms=(0.0, 0.6), min_gap_ms=0.35)) == 0


def test_durations_read_naturally():
    assert [fmt_duration_ns(x) for x in (800, 4500, 1_234_567, 2.5e9)] == [
        "800 ns", "4.5 us", "1.23 ms", "2.5 s"]
