"""``tracekit report``: one self-contained HTML page to send to a colleague.

Sections: the headline (measured step, baseline replay and its error, the best what-if),
the per-rank summary table, the time breakdown as a stacked bar chart (compute / exposed
communication / idle per rank), the what-if table, a line chart per sweep (predicted step
time against the swept setting, best point marked), the measured-vs-predicted timeline,
and every note the analysis made. plotly.js is embedded once.
"""

from __future__ import annotations

import datetime as _dt
import html as _html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from replay.result import ReplayResult, WhatIfResult
from tracekit.core.run import Run
from tracekit.core.units import MIB, SIZE_UNITS
from tracekit.log import get_logger
from tracekit.views.html import Section, html_table, render_page, write_page
from tracekit.views.styling import BAR_COLORS, CRITICAL_COLOR, FONT_FAMILY, BarKind
from tracekit.views.timeline import (
    TIMELINE_DIV_ID,
    TimelineFigure,
    headline_from,
    run_name,
    timeline_figure,
)

log = get_logger(__name__)

BREAKDOWN_DIV_ID = "tracekit-breakdown"
SWEEP_DIV_PREFIX = "tracekit-sweep-"

#: normalized summary column -> names the summary may use for it
_SUMMARY_ALIASES = {
    "rank": ("rank",),
    "step": ("step",),
    "step_ms": ("step_ms", "ms", "time_ms"),
    "compute_ms": ("compute_ms", "compute"),
    "comm_ms": ("comm_ms", "communication_ms"),
    "exposed_comm_ms": ("exposed_comm_ms", "exposed_ms", "exposed"),
    "overlap_ms": ("overlap_ms", "overlapped_comm_ms"),
    "idle_ms": ("idle_ms", "idle"),
}
_COLUMN_TITLES = {"rank": "rank", "step_ms": "step", "compute_ms": "compute",
                  "comm_ms": "communication", "exposed_comm_ms": "exposed comm",
                  "overlap_ms": "overlapped comm", "idle_ms": "idle"}


def summary_frame(summary: Any) -> pd.DataFrame | None:
    """The summary's per-rank, per-step table with normalized column names.

    Accepts a DataFrame or an object holding one (``Summary.per_step`` or any DataFrame
    attribute with rank and step columns). Returns None when no such table is found.
    """
    if summary is None:
        return None
    frame = summary if isinstance(summary, pd.DataFrame) else None
    if frame is None:
        candidates = [getattr(summary, a) for a in dir(summary)
                      if not a.startswith("_") and isinstance(getattr(summary, a, None),
                                                             pd.DataFrame)]
        frame = next((c for c in candidates if {"rank", "step"} <= set(c.columns)), None)
    if frame is None:
        return None
    out = pd.DataFrame(index=frame.index)
    for col, names in _SUMMARY_ALIASES.items():
        got = next((n for n in names if n in frame.columns), None)
        if got is not None:
            out[col] = frame[got].to_numpy()
    if not {"rank", "step"} <= set(out.columns):
        return None
    return out.reset_index(drop=True)


def _per_rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Median over steps of every numeric column, per rank."""
    cols = [c for c in frame.columns if c not in ("rank", "step")]
    return frame.groupby("rank")[cols].median().reset_index()


def breakdown_figure(frame: pd.DataFrame) -> go.Figure:
    """Stacked bars per rank: compute, exposed communication, idle (ms per step, median
    over steps), with the step time marked."""
    per = _per_rank(frame)
    x = [f"rank {r}" for r in per["rank"]]
    fig = go.Figure()
    parts = [("compute_ms", "compute", BAR_COLORS[BarKind.FORWARD]),
             ("exposed_comm_ms", "exposed communication", BAR_COLORS[BarKind.COMM]),
             ("idle_ms", "idle", "#BDBDBD")]
    for col, name, color in parts:
        if col in per.columns:
            fig.add_trace(go.Bar(x=x, y=per[col], name=name, marker_color=color,
                                 hovertemplate=f"%{{x}}<br>{name}: %{{y:.2f}} ms<extra></extra>",
                                 meta={"role": "breakdown"}))
    if "step_ms" in per.columns:
        fig.add_trace(go.Scatter(x=x, y=per["step_ms"], mode="markers", name="step time",
                                 marker={"symbol": "line-ew-open", "size": 28,
                                         "color": "#222", "line": {"width": 2}},
                                 hovertemplate="%{x}<br>step: %{y:.2f} ms<extra></extra>"))
    fig.update_layout(
        barmode="stack", height=360, margin={"l": 60, "r": 20, "t": 30, "b": 40},
        yaxis_title="ms per step (median over steps)", font={"family": FONT_FAMILY, "size": 12},
        plot_bgcolor="white",
        legend={"orientation": "h", "y": 1.08, "x": 0, "traceorder": "normal"},
        bargap=0.35 if len(x) < 16 else 0.1,
    )
    fig.update_yaxes(gridcolor="#EEEEEE")
    return fig


def sweep_axis(specs: Sequence[str]) -> tuple[str, list[float] | None, list[str]]:
    """The swept setting of a sweep's point specs: (axis title, numeric values or None
    when they are not numbers, the values as written).

    ``['fusion=1MB', 'fusion=4MB']`` -> ``('fusion (DDP bucket size)', [1.0, 4.0],
    ['1MB', '4MB'])``.
    """
    tokens = [dict(t.split("=", 1) for t in s.split("+") if "=" in t) for s in specs]
    keys = [k for k in (tokens[0] if tokens else {}) if len({t.get(k) for t in tokens}) > 1]
    if not keys:
        return "setting", None, list(specs)
    key = keys[0]
    written = [t.get(key, "") for t in tokens]
    values = []
    for text in written:
        m = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z/]*)\s*$", text)
        if not m:
            return key, None, written
        num, unit = float(m.group(1)), m.group(2).lower()
        if key == "fusion":
            if unit not in SIZE_UNITS:
                return key, None, written
            num = num * SIZE_UNITS[unit] / MIB
        values.append(num)
    title = "fusion (DDP bucket size)" if key == "fusion" else key
    return title, values, written


def sweep_figure(w: WhatIfResult, *, baseline: ReplayResult | None) -> go.Figure:
    """Predicted step time against the swept setting, the best point marked."""
    specs = [s for s, _ in w.sweep]
    ys = [ms for _, ms in w.sweep]
    title, xs, written = sweep_axis(specs)
    x = xs if xs is not None else written
    fig = go.Figure(go.Scatter(x=x, y=ys, mode="lines+markers", name="predicted step",
                               text=specs, line={"color": BAR_COLORS[BarKind.FORWARD]},
                               hovertemplate="%{text}: %{y:.2f} ms<extra></extra>",
                               meta={"role": "sweep"}))
    if w.best_spec in specs:
        i = specs.index(w.best_spec)
        where = "top right" if i == 0 else "top left" if i == len(specs) - 1 else "top center"
        fig.add_trace(go.Scatter(x=[x[i]], y=[ys[i]], mode="markers+text", name="best",
                                 text=[f"best: {w.best_spec} ({ys[i]:.2f} ms)"],
                                 textposition=where,
                                 marker={"symbol": "star", "size": 18, "color": CRITICAL_COLOR},
                                 hoverinfo="skip", meta={"role": "best"}))
    if baseline is not None:
        base, meas = baseline.median_step_ms, baseline.median_measured_ms
        lines = [(base, f"baseline replay {base:.2f} ms", "dash"),
                 (meas, f"measured {meas:.2f} ms", "dot")]
        if abs(base - meas) <= 0.01 * max(abs(meas), 1e-9):
            lines = [(base, f"baseline replay {base:.2f} ms = measured {meas:.2f} ms", "dash")]
        for value, label, dash in lines:
            if not math.isnan(value):
                fig.add_hline(y=value, line={"color": "#666", "dash": dash, "width": 1},
                              annotation_text=label, annotation_position="top right")
    log2 = xs is not None and all(v > 0 for v in xs) and max(xs) / min(xs) >= 8
    fig.update_layout(
        height=340, margin={"l": 60, "r": 20, "t": 30, "b": 50}, showlegend=False,
        xaxis_title=title, yaxis_title="predicted step (ms)", plot_bgcolor="white",
        font={"family": FONT_FAMILY, "size": 12},
    )
    if xs is not None:
        fig.update_xaxes(tickvals=xs, ticktext=written, type="log" if log2 else "linear")
    fig.update_xaxes(gridcolor="#EEEEEE")
    fig.update_yaxes(gridcolor="#EEEEEE")
    return fig


def whatif_rows(baseline: ReplayResult | None,
                whatifs: Sequence[WhatIfResult]) -> tuple[list[str], list[list], list[bool]]:
    """The what-if table: columns, rows, and which row is the best prediction."""
    cols = ["what-if", "predicted step (ms)", "speedup", "speedup, 95% interval", "change (ms)",
            "baseline error (%)"]
    err = baseline.error_pct if baseline is not None else float("nan")
    base_ms = baseline.median_step_ms if baseline is not None else float("nan")
    rows: list[list] = []
    if baseline is not None:
        rows.append(["baseline replay (measured "
                     f"{baseline.median_measured_ms:.2f} ms)", base_ms, 1.0, "", 0.0, err])
    for w in whatifs:
        label = w.spec + (f" (best: {w.best_spec})" if w.best_spec else "")
        ms = w.result.median_step_ms
        band = f"{w.speedup_lo:.3f}-{w.speedup_hi:.3f}"
        rows.append([label, ms, w.speedup, band, ms - base_ms, err])
    best = [False] * len(rows)
    if whatifs:
        i = max(range(len(whatifs)), key=lambda j: whatifs[j].speedup)
        best[i + (1 if baseline is not None else 0)] = True
    return cols, rows, best


@dataclass(frozen=True, kw_only=True)
class Report:
    """A built report page and what it holds."""

    html: str
    timeline: TimelineFigure | None
    #: the what-if whose prediction the timeline draws ('' for the baseline replay)
    timeline_spec: str
    n_sweeps: int
    has_summary: bool


def build_report(
    run: Run,
    *,
    baseline: ReplayResult | None,
    whatifs: Sequence[WhatIfResult] = (),
    summary: Any = None,
    step: int | None = None,
    ranks: Sequence[int] | None = None,
    timeline_spec: str | None = None,
) -> Report:
    """The report page of ``run``.

    Args:
        baseline: the baseline replay (None: measured only).
        whatifs: predictions to tabulate (sweeps also get a chart).
        summary: ``tracekit.analysis.breakdown.summarize(run)`` or its per-step DataFrame.
        step / ranks: what the timeline shows (all steps / ranks by default).
        timeline_spec: which what-if the timeline draws; default: the best one, or the
            baseline replay when there are none.
    """
    name = run_name(run)
    sections: list[Section] = [Section(html=_headline_html(run, baseline, whatifs))]

    frame = summary_frame(summary)
    if frame is not None and len(frame):
        per = _per_rank(frame)
        cols = ["rank"] + [c for c in per.columns if c != "rank"]
        rows = [[f"rank {int(r['rank'])}"] + [float(r[c]) for c in cols[1:]]
                for _, r in per.iterrows()]
        heads = [_COLUMN_TITLES.get(c, c) for c in cols]
        sections.append(Section(
            heading="Per-rank summary (median over steps, ms)",
            html=html_table(heads, rows)))
        sections.append(Section(heading="Where the time goes",
                                figure=breakdown_figure(frame), div_id=BREAKDOWN_DIV_ID))
    else:
        sections.append(Section(heading="Per-rank summary", html=(
            '<p class="note">No summary was given for this report.</p>')))

    if whatifs or baseline is not None:
        cols, rows, best = whatif_rows(baseline, whatifs)
        sections.append(Section(heading="What-ifs", html=html_table(cols, rows, highlight=best)
                                + '<p class="note">speedup = baseline replay / variant '
                                  "(&gt; 1 is faster), with its 95% prediction interval "
                                  "(step-to-step spread and cost-model residuals); baseline "
                                  "error = baseline replay vs measured step, the accuracy "
                                  "to expect.</p>"))
    sweeps = [w for w in whatifs if w.sweep]
    for i, w in enumerate(sweeps):
        sections.append(Section(heading=f"Sweep: {w.spec}",
                                figure=sweep_figure(w, baseline=baseline),
                                div_id=f"{SWEEP_DIV_PREFIX}{i}"))

    chosen = _pick(whatifs, timeline_spec)
    predicted = chosen.result if chosen is not None else baseline
    tf = timeline_figure(run.events, predicted.timeline if predicted is not None else None,
                         headline=headline_from(name, baseline, chosen, step=step),
                         step=step, ranks=ranks)
    sections.append(Section(heading="Timeline: measured vs predicted" if predicted is not None
                            else "Timeline (measured)", figure=tf.figure,
                            div_id=TIMELINE_DIV_ID))

    if run.warnings:
        items = "".join(f"<li>{_html.escape(w)}</li>" for w in run.warnings)
        sections.append(Section(heading="Warnings: what was left out or doubted",
                                html=f"<ul>{items}</ul>"))
    notes = _notes_html(run, baseline, whatifs)
    if notes:
        sections.append(Section(heading="Notes", html=notes))

    subtitle = _html.escape(
        f"{run.path} · world size {run.world_size} (ranks present: {len(run.ranks)}) · "
        f"{run.backend or 'backend unknown'} · {'GPU' if run.has_gpu else 'CPU'} trace · "
        f"steps {', '.join(map(str, run.steps())) or 'none'} · "
        f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    page = render_page(title=f"tracekit report: {name}", subtitle=subtitle, sections=sections)
    return Report(html=page, timeline=tf, timeline_spec=chosen.spec if chosen else "",
                  n_sweeps=len(sweeps), has_summary=frame is not None)


def _notes_html(run: Run, baseline: ReplayResult | None,
                whatifs: Sequence[WhatIfResult]) -> str:
    """Every note once, followed by what it applies to ('run', 'baseline replay', specs)."""
    where: dict[str, list[str]] = {}
    sources = [("run", run.notes)]
    if baseline is not None:
        sources.append(("baseline replay", baseline.notes))
    if whatifs:
        sources.append(("every what-if", whatifs[0].shared_notes))
    sources += [(w.spec, [*w.notes, *w.result.notes]) for w in whatifs]
    for label, notes in sources:
        for n in notes:
            if label not in where.setdefault(n, []):
                where[n].append(label)
    items = [f"<li>{_html.escape(n)} <span class='note'>({_html.escape(', '.join(labels))})"
             "</span></li>" for n, labels in where.items()]
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _pick(whatifs: Sequence[WhatIfResult], spec: str | None) -> WhatIfResult | None:
    if not whatifs:
        return None
    if spec:
        for w in whatifs:
            if w.spec == spec:
                return w
        from tracekit.errors import TracekitError

        raise TracekitError(f"--timeline {spec!r} is not one of the what-ifs given "
                            f"({', '.join(w.spec for w in whatifs)}); pass one of those")
    return max(whatifs, key=lambda w: w.speedup)


def _headline_html(run: Run, baseline: ReplayResult | None,
                   whatifs: Sequence[WhatIfResult]) -> str:
    if baseline is None:
        return '<p class="note">Measured run only (no replay).</p>'
    parts = [f"Measured <b>{baseline.median_measured_ms:.2f} ms</b> per step (median of "
             f"{len(baseline.measured_step_ms)} steps, slowest rank). The baseline replay "
             f"predicts <b>{baseline.median_step_ms:.2f} ms</b> "
             f"(error <b>{baseline.error_pct:+.1f}%</b>)."]
    if whatifs:
        best = max(whatifs, key=lambda w: w.speedup)
        label = best.best_spec or best.spec
        lead = "Best what-if" if best.speedup > 1 else "No what-if beats the baseline; closest"
        parts.append(f"{lead}: <b>{_html.escape(label)}</b>, predicted "
                     f"<b>{best.result.median_step_ms:.2f} ms</b> per step "
                     f"(speedup <b>{best.speedup:.2f}×</b>).")
    return f"<p>{' '.join(parts)}</p>"


def write_report(report: Report, path: str | Path) -> int:
    """Write the report page; return its size in bytes."""
    return write_page(path, report.html)
