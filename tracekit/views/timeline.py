"""The measured-vs-predicted timeline: one plotly figure, one panel per timeline.

Panels share the time axis (ms since each panel's first step start), so the predicted run
sits right under the measured one. A row per rank and lane; a bar per op colored by
:class:`~tracekit.views.styling.BarKind`; the critical path outlined in red; step
boundaries as vertical lines; a title that states the predicted step time, the speedup
and the baseline replay's error.

Bars are WebGL line segments (one ``scattergl`` trace per kind and panel, segments
separated by NaN, float32/int16 binary arrays); hover labels come from invisible 1-px
marker traces whose numbers travel as binary ``customdata`` and are formatted in the
browser; ops below about a pixel are aggregated (see :mod:`tracekit.views.bars`), with
the threshold raised until each panel fits a bar budget. A 64-rank, 100k-op step becomes
an ~8 MB file (4.8 MB of it plotly.js); see ``benchmarks/timeline_size.py``.

Typical use::

    tf = timeline_figure(run.events, baseline.timeline, headline=headline_from(...))
    write_timeline_html(tf, "mlp.html")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from replay.result import ReplayResult, WhatIfResult
from tracekit.errors import TracekitError
from tracekit.log import get_logger
from tracekit.views.bars import build_bars, clip_name, fmt_duration_ns, idle_bars
from tracekit.views.classify import CODE, KIND_LIST, classify, classify_like
from tracekit.views.html import Section, render_page, write_page
from tracekit.views.lanes import (
    Row,
    StepSpan,
    bar_mask,
    lane_rows,
    row_index,
    select_window,
    step_spans,
)
from tracekit.views.styling import (
    AGGREGATE_FRACTION,
    BAR_COLORS,
    BAR_FRACTION,
    BAR_KIND_ORDER,
    CRITICAL_COLOR,
    FONT_FAMILY,
    IDLE_FRACTION,
    PLOT_WIDTH_PX,
    STEP_LINE_COLOR,
    BarKind,
    row_px,
)

log = get_logger(__name__)

TIMELINE_DIV_ID = "tracekit-timeline"
#: default bar budget per panel: ~75k WebGL line vertices, light even in software WebGL
MAX_BARS_PER_PANEL = 25_000
_TOP_PX, _BOTTOM_PX, _GAP_PX = 120, 60, 70


def run_name(run) -> str:
    """A short name for a run: its folder's name (the parent folder for a file list)."""
    path = Path(run.path)
    return (path.name if path.is_dir() else path.parent.name or path.name) or str(run.path)


@dataclass(frozen=True, kw_only=True)
class Headline:
    """The numbers a timeline's title states."""

    run_name: str = ""
    #: what the lower panel shows: 'baseline replay' or the what-if spec
    predicted_label: str = "baseline replay"
    measured_step_ms: float = float("nan")
    predicted_step_ms: float = float("nan")
    #: baseline step / what-if step (> 1 is faster); None for the baseline itself
    speedup: float | None = None
    #: signed error of the baseline replay vs the measured step, %
    baseline_error_pct: float | None = None


def headline_from(run_name: str, baseline: ReplayResult | None,
                  whatif: WhatIfResult | None = None, *, step: int | None = None) -> Headline:
    """The title numbers for a baseline replay, optionally with one what-if on top.

    With ``step`` the step times of that step are used (when the results have it),
    otherwise the medians over steps.
    """
    def pick(per_step: dict[int, float], median: float) -> float:
        return float(per_step[step]) if step is not None and step in per_step else median

    if baseline is None:
        return Headline(run_name=run_name, predicted_label="")
    chosen = whatif.result if whatif is not None else baseline
    return Headline(
        run_name=run_name,
        predicted_label=whatif.spec if whatif is not None else "baseline replay",
        measured_step_ms=pick(baseline.measured_step_ms, baseline.median_measured_ms),
        predicted_step_ms=pick(chosen.step_ms, chosen.median_step_ms),
        speedup=whatif.speedup if whatif is not None else None,
        baseline_error_pct=baseline.error_pct,
    )


@dataclass(frozen=True, kw_only=True)
class PanelStats:
    """What one panel drew."""

    name: str
    #: ops drawn as bars (outermost ops of each lane in the window)
    n_ops: int
    #: bars drawn for those ops (single ops + aggregated bars)
    n_bars: int
    n_aggregated_ops: int
    n_aggregated_bars: int
    n_idle: int
    n_critical: int
    window_ms: float
    steps: list[int] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class TimelineFigure:
    """A built timeline: the figure plus what it shows (for the CLI line and for tests)."""

    figure: go.Figure
    rows: list[Row]
    panels: list[PanelStats]
    #: ops shorter than this were eligible for aggregation, ms
    threshold_ms: float
    title: str


@dataclass(frozen=True, kw_only=True)
class _Panel:
    name: str
    bars: pd.DataFrame
    idle: pd.DataFrame
    spans: list[StepSpan]
    origin_ns: int
    n_ops: int
    n_merged: int
    window_ms: float


def _prepare(events: pd.DataFrame, *, step, ranks, what, reference=None):
    win = select_window(events, step=step, ranks=ranks, what=what)
    if not len(win):
        raise TracekitError(f"the {what} has no events in the selected steps and ranks; "
                            "choose others with --step / --ranks")
    codes = classify_like(win, reference) if reference is not None else classify(win)
    mask = bar_mask(win)
    spans = step_spans(win)
    origin = spans[0].start_ns if spans else int(win["ts_ns"].min())
    stop = max([sp.end_ns for sp in spans] + [int(win["end_ns"].max())])
    return win, win[mask], codes[mask], spans, origin, stop


def timeline_figure(
    measured: pd.DataFrame | None,
    predicted: pd.DataFrame | None = None,
    *,
    headline: Headline | None = None,
    step: int | None = None,
    ranks: Sequence[int] | None = None,
    max_bars_per_panel: int = MAX_BARS_PER_PANEL,
) -> TimelineFigure:
    """Build the timeline figure of a measured and/or a predicted event table.

    Args:
        measured: the measured event table (``Run.events``), or None.
        predicted: a replayed timeline (``ReplayResult.timeline``: event columns plus
            ``node``, ``critical``, ``measured_ts_ns``), or None.
        headline: the numbers for the title (see :func:`headline_from`).
        step: draw only this step (time zero = its start); all steps when None.
        ranks: draw only these ranks; all when None.
        max_bars_per_panel: ops shorter than about one pixel (at ~1000 px for the window)
            are aggregated; while a panel still has more bars than this, the threshold
            doubles (up to 2% of the window), so big runs stay light in a browser.
    """
    if measured is None and predicted is None:
        raise TracekitError("nothing to draw: pass a measured run or a replayed timeline")
    headline = headline or Headline()
    prepared = []
    ref_window = None
    if measured is not None:
        m = _prepare(measured, step=step, ranks=ranks, what="measured run")
        ref_window = m[0]
        prepared.append(("measured", m))
    if predicted is not None:
        label = headline.predicted_label or "replay"
        p = _prepare(predicted, step=step, ranks=ranks, what="predicted timeline",
                     reference=ref_window)
        prepared.append((f"predicted: {label}", p))

    longest = max(stop - origin for _, (_, _, _, _, origin, stop) in prepared)
    threshold_ns = max(1, int(longest / PLOT_WIDTH_PX))
    rows = lane_rows([bars_ev for _, (_, bars_ev, _, _, _, _) in prepared])
    row_of = [row_index(bars_ev, rows) for _, (_, bars_ev, _, _, _, _) in prepared]

    while True:
        built = [build_bars(bars_ev, row=ri, codes=codes, origin_ns=origin,
                            threshold_ns=threshold_ns)
                 for ri, (_, (_, bars_ev, codes, _, origin, _)) in zip(row_of, prepared)]
        if max(len(b) for b, _ in built) <= max_bars_per_panel or \
                threshold_ns * 2 > longest * 0.02:
            break
        threshold_ns *= 2
    if threshold_ns > longest / PLOT_WIDTH_PX * 1.5:
        log.info("timeline: aggregated ops under %s to keep <= %d bars per panel",
                 fmt_duration_ns(threshold_ns), max_bars_per_panel)

    panels = []
    for (name, (_, bars_ev, _, spans, origin, stop)), (bars, merged) in zip(prepared, built):
        window = (0.0, (stop - origin) / 1e6)
        idle = idle_bars(bars, window_ms=window, min_gap_ms=3 * threshold_ns / 1e6)
        panels.append(_Panel(name=name, bars=bars, idle=idle, spans=spans, origin_ns=origin,
                             n_ops=len(bars_ev), n_merged=merged, window_ms=window[1]))

    fig, title = _figure(panels, rows, headline, threshold_ns, step)
    stats = [
        PanelStats(
            name=p.name, n_ops=p.n_ops, n_bars=len(p.bars), n_aggregated_ops=p.n_merged,
            n_aggregated_bars=int((p.bars["n_ops"] > 1).sum()), n_idle=len(p.idle),
            n_critical=int(p.bars["critical"].sum()), window_ms=p.window_ms,
            steps=[sp.step for sp in p.spans],
        )
        for p in panels
    ]
    return TimelineFigure(figure=fig, rows=rows, panels=stats,
                          threshold_ms=threshold_ns / 1e6, title=title)


def _title(headline: Headline, step: int | None, rows: list[Row]) -> str:
    ranks = sorted({r.rank for r in rows})
    where = f"step {step}" if step is not None else "all steps"
    rank_txt = (f"ranks {ranks[0]}-{ranks[-1]}" if len(ranks) > 1 else f"rank {ranks[0]}"
                ) if ranks else ""
    first = " · ".join(x for x in [f"<b>{headline.run_name}</b>" if headline.run_name else
                                   "<b>tracekit timeline</b>", where, rank_txt] if x)
    parts = []
    if not math.isnan(headline.measured_step_ms):
        parts.append(f"measured {headline.measured_step_ms:.2f} ms/step")
    if not math.isnan(headline.predicted_step_ms):
        parts.append(f"predicted ({headline.predicted_label}) "
                     f"{headline.predicted_step_ms:.2f} ms/step")
    if headline.speedup is not None:
        parts.append(f"speedup {headline.speedup:.2f}×")
    if headline.baseline_error_pct is not None and not math.isnan(headline.baseline_error_pct):
        parts.append(f"baseline replay error {headline.baseline_error_pct:+.1f}%")
    return first + ("<br><span style='font-size:14px'>" + " · ".join(parts) + "</span>"
                    if parts else "")


def _x_dtype(window_ms: float) -> type:
    """float32 halves the file and resolves ~10 ns in a 100 ms window, ~0.1 us in a 2 s
    one; longer windows use float64."""
    return np.float32 if window_ms < 2_000 else np.float64


def _y_dtype(n_rows: int) -> type:
    return np.int16 if n_rows < 32_000 else np.int32


def _segments(bars: pd.DataFrame, min_len_ms: float, n_rows: int,
              window_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """x, y arrays of line segments, one per bar: ``x = [s0, e0, NaN, s1, e1, NaN ...]``,
    ``y = [row0, row0, row0, row1, ...]`` (a NaN x alone breaks the line, so y can stay a
    small integer type)."""
    n = len(bars)
    x = np.full(3 * n, np.nan, dtype=_x_dtype(window_ms))
    s = bars["start_ms"].to_numpy()
    x[0::3] = s
    x[1::3] = np.maximum(bars["end_ms"].to_numpy(), s + min_len_ms)
    y = np.repeat(bars["row"].to_numpy(), 3).astype(_y_dtype(n_rows))
    return x, y


def _hover_points(bars: pd.DataFrame, window_ms: float,
                  n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hover anchors: each bar's middle, plus one every 3% of the window on long bars.
    Returns x, y and the index of the bar of every anchor."""
    s = bars["start_ms"].to_numpy()
    e = bars["end_ms"].to_numpy()
    step = max(window_ms * 0.03, 1e-9)
    n = np.clip(np.floor((e - s) / step).astype(np.int64) + 1, 1, 40)
    idx = np.repeat(np.arange(len(bars)), n)
    offs = np.arange(len(idx)) - np.repeat(np.cumsum(n) - n, n)
    x = s[idx] + (offs + 0.5) * (e - s)[idx] / n[idx]
    return (x.astype(_x_dtype(window_ms)), bars["row"].to_numpy()[idx].astype(_y_dtype(n_rows)),
            idx)


def _figure(panels: list[_Panel], rows: list[Row], headline: Headline, threshold_ns: int,
            step: int | None) -> tuple[go.Figure, str]:
    n_rows = max(1, len(rows))
    rpx = row_px(n_rows)
    panel_px = n_rows * rpx + 20
    height = _TOP_PX + _BOTTOM_PX + len(panels) * panel_px + (len(panels) - 1) * _GAP_PX
    fig = make_subplots(
        rows=len(panels), cols=1, shared_xaxes=True,
        vertical_spacing=_GAP_PX / max(1, height - _TOP_PX - _BOTTOM_PX),
        subplot_titles=[p.name for p in panels],
    )
    bar_w = max(2.0, rpx * BAR_FRACTION)
    min_len_ms = threshold_ns / 1e6
    shown: set[str] = set()
    layout_shapes: list[dict] = []
    layout_notes: list[dict] = []

    def legend_once(key: str) -> bool:
        first = key not in shown
        shown.add(key)
        return first

    for pi, panel in enumerate(panels):
        sub = pi + 1
        b = panel.bars
        crit = b[b["critical"]]
        if len(crit):
            x, y = _segments(crit, min_len_ms, n_rows, panel.window_ms)
            fig.add_trace(go.Scattergl(
                x=x, y=y, mode="lines", name="critical path (red outline)",
                line={"color": CRITICAL_COLOR, "width": bar_w + 5}, hoverinfo="skip",
                legendgroup="critical", showlegend=legend_once("critical"),
                legendrank=900,
                meta={"role": "critical", "panel": pi},
            ), row=sub, col=1)
        for kind in BAR_KIND_ORDER:
            code = CODE[kind]
            parts = [(b[(b["kind"] == code) & (b["n_ops"] == 1)], bar_w, "bars"),
                     (b[(b["kind"] == code) & (b["n_ops"] > 1)],
                      max(1.5, rpx * AGGREGATE_FRACTION), "aggregated")]
            if kind is BarKind.IDLE:
                parts = [(panel.idle, max(1.0, rpx * IDLE_FRACTION), "idle")]
            for sel, width, role in parts:
                if not len(sel):
                    continue
                x, y = _segments(sel, min_len_ms, n_rows, panel.window_ms)
                fig.add_trace(go.Scattergl(
                    x=x, y=y, mode="lines", name=kind.value,
                    line={"color": BAR_COLORS[kind], "width": width}, hoverinfo="skip",
                    legendgroup=kind.value, showlegend=legend_once(kind.value),
                    legendrank=100 + BAR_KIND_ORDER.index(kind),
                    meta={"role": role, "panel": pi, "kind": kind.value},
                ), row=sub, col=1)
        for trace in _hover_traces(panel, pi, threshold_ns, n_rows=n_rows):
            fig.add_trace(trace, row=sub, col=1)
        shapes, notes = _panel_marks(sub, panel, rows)
        layout_shapes.extend(shapes)
        layout_notes.extend(notes)

    merged = sum(p.n_merged for p in panels)
    if merged:
        n_bars = sum(int((p.bars["n_ops"] > 1).sum()) for p in panels)
        fig.add_trace(go.Scattergl(
            x=[None], y=[None], mode="lines", line={"color": "#777777", "width": 3},
            legendrank=1000,
            name=f"thin bars: {merged:,} ops under {fmt_duration_ns(threshold_ns)} "
                 f"aggregated into {n_bars:,}",
            meta={"role": "legend-note"},
        ), row=1, col=1)

    title = _title(headline, step, rows)
    for sub in range(1, len(panels) + 1):
        _style_axes(fig, sub, rows, rpx)
    fig.update_layout(
        shapes=layout_shapes,
        annotations=list(fig.layout.annotations) + layout_notes,
        title={"text": title, "x": 0.01, "xanchor": "left", "y": 1 - 18 / height,
               "yanchor": "top", "font": {"size": 18}},
        height=height,
        margin={"l": 10, "r": 10, "t": _TOP_PX, "b": _BOTTOM_PX},
        font={"family": FONT_FAMILY, "size": 12},
        plot_bgcolor="white",
        paper_bgcolor="white",
        hovermode="closest",
        hoverdistance=30,
        dragmode="zoom",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1 + 46 / max(1, height),
                "xanchor": "right", "x": 1, "font": {"size": 12},
                "itemsizing": "constant"},
    )
    for ann in fig.layout.annotations[: len(panels)]:  # subplot titles: left-aligned
        ann.update(x=0, xanchor="left", yshift=16, font={"size": 14})
    fig.update_xaxes(showgrid=True, gridcolor="#EFEFEF", zeroline=False, showticklabels=True,
                     ticksuffix=" ms", showline=True, linecolor="#999")
    origin_txt = f"time since step {step} start" if step is not None else \
        "time since the first step's start"
    fig.update_xaxes(title_text=origin_txt + " (ms)", row=len(panels), col=1)
    return fig, title


def _style_axes(fig: go.Figure, sub: int, rows: list[Row], rpx: int) -> None:
    n = len(rows)
    fig.update_yaxes(
        tickvals=list(range(n)), ticktext=[r.label for r in rows],
        range=[n - 0.5, -0.5], fixedrange=True, showgrid=False, zeroline=False,
        tickfont={"size": max(7, min(12, rpx - 2))}, automargin=True,
        row=sub, col=1,
    )


def _panel_marks(sub: int, panel: _Panel, rows: list[Row]) -> tuple[list[dict], list[dict]]:
    """Shapes (rank separators, step boundaries) and annotations (step labels) of a panel.

    Returned as plain dicts to be set in one layout update: ``add_shape`` one by one
    re-validates every shape each time (quadratic; seconds for a 64-rank figure).
    """
    axis = "" if sub == 1 else str(sub)
    shapes, notes = [], []
    for i in range(1, len(rows)):  # thin separators between ranks
        if rows[i].rank != rows[i - 1].rank:
            shapes.append({"type": "line", "xref": f"x{axis} domain", "yref": f"y{axis}",
                           "x0": 0, "x1": 1, "y0": i - 0.5, "y1": i - 0.5,
                           "line": {"color": "#CCCCCC", "width": 1}, "layer": "below"})
    for sp in panel.spans:
        x = (sp.start_ns - panel.origin_ns) / 1e6
        shapes.append({"type": "line", "xref": f"x{axis}", "yref": f"y{axis} domain",
                       "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": STEP_LINE_COLOR, "width": 1.5, "dash": "dash"}})
        notes.append({"x": x, "y": 1, "xref": f"x{axis}", "yref": f"y{axis} domain",
                      "text": f"step {sp.step}", "showarrow": False, "xanchor": "left",
                      "yanchor": "bottom", "font": {"size": 11, "color": STEP_LINE_COLOR}})
    if panel.spans:
        x = (max(sp.end_ns for sp in panel.spans) - panel.origin_ns) / 1e6
        shapes.append({"type": "line", "xref": f"x{axis}", "yref": f"y{axis} domain",
                       "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": STEP_LINE_COLOR, "width": 1, "dash": "dot"}})
    return shapes, notes


def _hover_traces(panel: _Panel, panel_index: int, threshold_ns: int, *,
                  n_rows: int) -> list[go.Scattergl]:
    """Invisible marker traces that carry the hover labels of a panel's bars.

    One trace per (kind, role) so the label takes the kind's color; the numbers travel as
    binary ``customdata`` and are formatted by ``hovertemplate`` in the browser. Markers
    are 1 px and transparent (hover picks the nearest point within ``hoverdistance``
    pixels, whatever the marker size), so they cost nothing to draw.
    customdata columns: start ms, duration (or span) ms, rank, step, MiB, ops, busy ms.
    """
    b = panel.bars
    small = fmt_duration_ns(threshold_ns)
    single_cols = ["start_ms", "dur_ms", "rank", "step"]
    groups = [
        ("critical", b[b["critical"]], CRITICAL_COLOR, single_cols + ["mib"],
         "<b>%{text}</b><br>critical path · {kind}<br>" + _WHEN + "<br>rank %{customdata[2]}"
         " · step %{customdata[3]}"),
    ]
    for kind in BAR_KIND_ORDER:
        if kind is BarKind.IDLE:
            continue
        sel = b[(b["kind"] == CODE[kind]) & ~b["critical"]]
        is_comm = kind is BarKind.COMM
        groups.append(("bars", sel[sel["n_ops"] == 1], BAR_COLORS[kind],
                       single_cols + (["mib"] if is_comm else []),
                       "<b>%{text}</b><br>{kind}<br>" + _WHEN
                       + ("<br>%{customdata[4]:.4~f} MiB" if is_comm else "")
                       + "<br>rank %{customdata[2]} · step %{customdata[3]}"))
        groups.append(("aggregated", sel[sel["n_ops"] > 1], BAR_COLORS[kind],
                       single_cols + ["n_ops", "busy_ms"],
                       "<b>%{customdata[4]} small ops</b> (aggregated, each &lt; " + small +
                       ")<br>mostly {kind}<br>span %{customdata[1]:.4~g} ms from "
                       "%{customdata[0]:.3f} ms, busy %{customdata[5]:.4~g} ms"
                       "<br>rank %{customdata[2]} · step %{customdata[3]}"))
    groups.append(("idle", panel.idle, BAR_COLORS[BarKind.IDLE], ["start_ms", "dur_ms", "rank"],
                   "<b>idle</b> %{customdata[1]:.4~g} ms<br>from %{customdata[0]:.3f} ms"
                   "<br>rank %{customdata[2]}"))
    traces = []
    for role, sel, color, cols, template in groups:
        if not len(sel):
            continue
        kind_name = KIND_LIST[int(sel["kind"].iloc[0])].value
        hx, hy, idx = _hover_points(sel, panel.window_ms, n_rows)
        s = sel.iloc[idx]
        fields = {
            "start_ms": s["start_ms"], "dur_ms": s["end_ms"] - s["start_ms"],
            "rank": s["rank"], "step": s["step"], "n_ops": s["n_ops"], "busy_ms": s["busy_ms"],
            "mib": np.where(s["bytes"] > 0, s["bytes"] / 2**20, 0.0),
        }
        data = np.column_stack([np.asarray(fields[c], dtype=np.float64) for c in cols])
        text = None
        if "%{text}" in template:
            names = s["name"].astype("category")
            text = names.cat.rename_categories(
                [clip_name(str(c)) for c in names.cat.categories]).to_numpy(dtype=object)
        traces.append(go.Scattergl(
            x=hx, y=hy, mode="markers", showlegend=False, name=kind_name,
            marker={"size": 1, "color": "rgba(0,0,0,0)"},
            text=text, customdata=data.astype(np.float32),
            hovertemplate=template.replace("{kind}", kind_name) + "<extra></extra>",
            hoverlabel={"bgcolor": color, "font": {"color": _label_ink(color)}},
            meta={"role": "hover", "panel": panel_index, "of": role},
        ))
    return traces


_WHEN = "%{customdata[1]:.4~g} ms from %{customdata[0]:.3f} ms"


def _label_ink(hex_color: str) -> str:
    """Black or white text, whichever reads better on ``hex_color``."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#FFFFFF"


def write_timeline_html(tf: TimelineFigure, path: str | Path, *, page_title: str = "") -> int:
    """Write the timeline as one self-contained HTML page; return its size in bytes."""
    plain = tf.title.split("<br>")[0].replace("<b>", "").replace("</b>", "")
    page = render_page(title=page_title or f"tracekit timeline: {plain}",
                       sections=[Section(figure=tf.figure, div_id=TIMELINE_DIV_ID)],
                       show_title=False)
    size = write_page(path, page)
    log.info("wrote %s (%.1f MB)", path, size / 1e6)
    return size
