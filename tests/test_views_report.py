"""The one-page report (tracekit.views.report)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from test_views_timeline import fake_prediction

from replay.result import ReplayResult, WhatIfResult
from tracekit.core.run import load_run
from tracekit.errors import TracekitError
from tracekit.views.html import PROBE_ID, html_table
from tracekit.views.report import (
    BREAKDOWN_DIV_ID,
    breakdown_figure,
    build_report,
    summary_frame,
    sweep_axis,
    sweep_figure,
    whatif_rows,
)
from tracekit.views.timeline import TIMELINE_DIV_ID


@pytest.fixture(scope="module")
def run(request):
    from pathlib import Path

    return load_run(Path(__file__).parent / "data" / "gloo_2rank")


def _results(run):
    tl = fake_prediction(run.events)
    meas = {2: 25.0, 3: 24.0, 4: 26.0}
    base = ReplayResult(timeline=tl, step_ms={2: 26.0, 3: 25.0, 4: 27.0}, measured_step_ms=meas,
                        notes=["inferred 4 host waits"])

    def variant(ms, scale):
        return ReplayResult(timeline=fake_prediction(run.events, scale=scale),
                            step_ms={2: ms, 3: ms, 4: ms}, measured_step_ms=meas)

    sweep = [("fusion=1MB", 30.0), ("fusion=2MB", 24.0), ("fusion=4MB", 22.0),
             ("fusion=8MB", 23.0)]
    whatifs = [
        WhatIfResult(spec="overlap=off", result=variant(31.0, 1.1), speedup=26.0 / 31.0,
                     notes=["collective costs: fitted"]),
        WhatIfResult(spec="fusion=1MB..8MB", result=variant(22.0, 0.8), speedup=26.0 / 22.0,
                     sweep=sweep, best_spec="fusion=4MB", notes=["collective costs: fitted"]),
    ]
    return base, whatifs


def test_report_has_every_section_and_the_best_timeline(run):
    from tracekit.analysis.breakdown import summarize

    base, whatifs = _results(run)
    rep = build_report(run, baseline=base, whatifs=whatifs, summary=summarize(run))
    html = rep.html
    for heading in ("Per-rank summary", "Where the time goes", "What-ifs",
                    "Sweep: fusion=1MB..8MB", "Timeline: measured vs predicted", "Notes"):
        assert f"<h2>{heading}" in html, heading
    assert rep.has_summary and rep.n_sweeps == 1
    assert rep.timeline_spec == "fusion=1MB..8MB"  # the fastest prediction is drawn
    assert "predicted (fusion=1MB..8MB) 22.00 ms/step" in rep.timeline.title
    # plotly.js once, three figures, the render probe
    assert html.count("Plotly v") <= 2 and html.count('class="plotly-graph-div"') == 3
    for div in (BREAKDOWN_DIV_ID, TIMELINE_DIV_ID, "tracekit-sweep-0"):
        assert f'id="{div}"' in html
    assert f'id="{PROBE_ID}"' in html
    # one summary row per rank
    table = html.split("Per-rank summary")[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + len(run.ranks)
    # the note shared by both what-ifs appears once, naming both
    assert html.count("collective costs: fitted") == 1
    assert "(overlap=off, fusion=1MB..8MB)" in html


def test_whatif_table_marks_the_best_and_repeats_the_baseline_error(run):
    base, whatifs = _results(run)
    cols, rows, best = whatif_rows(base, whatifs)
    assert cols[:3] == ["what-if", "predicted step (ms)", "speedup"]
    assert [r[0] for r in rows] == ["baseline replay (measured 25.00 ms)", "overlap=off",
                                    "fusion=1MB..8MB (best: fusion=4MB)"]
    assert best == [False, False, True]
    assert rows[2][1] == 22.0 and rows[2][2] == pytest.approx(26 / 22)
    assert cols[3] == "speedup, 95% interval" and rows[0][3] == ""
    assert rows[2][4] == pytest.approx(22.0 - 26.0)
    assert [r[5] for r in rows] == pytest.approx([(26.0 - 25.0) / 25.0 * 100] * 3)
    html = html_table(cols, rows, highlight=best)
    assert html.count('class="best"') == 1


def test_sweep_chart_marks_the_best_point_on_a_size_axis(run):
    _, whatifs = _results(run)
    fig = sweep_figure(whatifs[1], baseline=None)
    line = [t for t in fig.data if t.meta["role"] == "sweep"][0]
    star = [t for t in fig.data if t.meta["role"] == "best"][0]
    assert list(line.x) == [1.0, 2.0, 4.0, 8.0] and list(line.y) == [30.0, 24.0, 22.0, 23.0]
    assert (star.x[0], star.y[0]) == (4.0, 22.0)
    assert "best: fusion=4MB" in star.text[0]
    assert list(fig.layout.xaxis.ticktext) == ["1MB", "2MB", "4MB", "8MB"]
    assert fig.layout.xaxis.type == "log"


def test_sweep_axis_reads_sizes_numbers_and_gives_up_on_words():
    assert sweep_axis(["fusion=512KB+dear", "fusion=1MB+dear"]) == (
        "fusion (DDP bucket size)", [0.5, 1.0], ["512KB", "1MB"])
    assert sweep_axis(["workers=2", "workers=4"]) == ("workers", [2.0, 4.0], ["2", "4"])
    title, values, written = sweep_axis(["overlap=on", "overlap=off"])
    assert (title, values, written) == ("overlap", None, ["on", "off"])


def test_summary_frame_finds_the_per_step_table_under_its_names():
    df = pd.DataFrame({"rank": [0, 0, 1], "step": [1, 2, 1], "ms": [10.0, 12.0, 11.0],
                       "compute_ms": [5.0, 6.0, 4.0], "exposed_comm_ms": [3.0, 4.0, 5.0],
                       "idle_ms": [2.0, 2.0, 2.0]})

    class Holder:
        steps = df
        notes: list = []

    got = summary_frame(Holder())
    assert list(got.columns) == ["rank", "step", "step_ms", "compute_ms", "exposed_comm_ms",
                                 "idle_ms"]
    assert summary_frame(None) is None
    assert summary_frame(pd.DataFrame({"x": [1]})) is None
    fig = breakdown_figure(got)
    stacked = {t.name: list(t.y) for t in fig.data if t.type == "bar"}
    assert stacked == {"compute": [5.5, 4.0], "exposed communication": [3.5, 5.0],
                       "idle": [2.0, 2.0]}
    assert fig.layout.barmode == "stack"


def test_report_without_replay_or_summary_still_draws_the_measured_run(run):
    rep = build_report(run, baseline=None, whatifs=[], summary=None)
    assert "No summary" in rep.html and rep.timeline is not None
    assert [p.name for p in rep.timeline.panels] == ["measured"]
    assert not re.search(r"<h2>What-ifs", rep.html)


def test_unknown_timeline_spec_is_a_clear_error(run):
    base, whatifs = _results(run)
    with pytest.raises(TracekitError, match="is not one of the what-ifs given"):
        build_report(run, baseline=base, whatifs=whatifs, timeline_spec="dear")


def test_headline_says_when_no_what_if_beats_the_baseline(run):
    base, whatifs = _results(run)
    slower = build_report(run, baseline=base, whatifs=whatifs[:1])
    assert "No what-if beats the baseline; closest: <b>overlap=off</b>" in slower.html
    faster = build_report(run, baseline=base, whatifs=whatifs)
    assert "Best what-if: <b>fusion=4MB</b>" in faster.html
    assert "(error <b>+4.0%</b>)" in faster.html


def test_report_lists_the_runs_warnings(run):
    import copy

    damaged = copy.copy(run)
    damaged.warnings = ["rank1.json: 3 events dropped (negative dur)"]
    page = build_report(damaged, baseline=None, whatifs=[], summary=None).html
    assert "<h2>Warnings" in page and "3 events dropped (negative dur)" in page
    assert "<h2>Warnings" not in build_report(run, baseline=None, whatifs=[], summary=None).html
