"""The generated pages in a real browser: headless Chromium (Debian's ``chromium``).

Each page carries a render probe (tracekit.views.html): once plotly has drawn, it writes a
JSON summary of what was rendered (traces, bars per panel read back from the rendered
data, y-axis rows, WebGL, recorded JavaScript errors) into a hidden element, which
``--dump-dom`` returns. Skipped when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import pytest
from test_views_timeline import events_table, fake_prediction

from replay.result import ReplayResult, WhatIfResult
from tracekit.core.run import load_run
from tracekit.views.html import PROBE_ID
from tracekit.views.report import build_report, write_report
from tracekit.views.timeline import headline_from, timeline_figure, write_timeline_html

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--no-first-run", "--disable-component-update",
         "--disable-sync", "--disable-quic", "--hide-scrollbars", "--window-size=1600,1000"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]


def _chromium(page: Path, profile: Path, *extra: str) -> str:
    profile.mkdir(parents=True, exist_ok=False)  # a new, empty profile every time
    done = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
         *extra, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _pre(dom: str, element_id: str) -> dict:
    m = re.search(rf'<pre id="{element_id}"[^>]*>(.*?)</pre>', dom, re.S)
    assert m, f"no #{element_id} in the page"
    text = html.unescape(m.group(1))
    assert text != "pending", "the page never finished rendering"
    return json.loads(text)


def probe(page: Path, profile: Path) -> dict:
    return _pre(_chromium(page, profile, "--dump-dom"), PROBE_ID)


def _synthetic():
    """2 ranks x (main thread, stream 7) x 5 ops of 2 ms, 1 ms apart: nothing aggregated."""
    rows = [{"name": "ProfilerStep#1", "kind": "step", "rank": r, "ts_ns": 0,
             "dur_ns": 16_000_000, "step": 1} for r in (0, 1)]
    for r in (0, 1):
        for i in range(5):
            t = 1_000_000 + i * 3_000_000
            rows.append({"name": f"AddmmBackward0 #{i}", "rank": r, "ts_ns": t,
                         "dur_ns": 2_000_000, "step": 1})
            rows.append({"name": f"gemm #{i}", "rank": r, "lane_kind": "gpu", "lane": 7,
                         "kind": "kernel", "cat": "kernel", "ts_ns": t + 500_000,
                         "dur_ns": 2_000_000, "step": 1})
    return events_table(rows)


def test_timeline_renders_every_row_and_bar_without_errors(tmp_path):
    measured = _synthetic()
    pred = fake_prediction(measured, scale=0.7, critical_every=4)
    base = ReplayResult(timeline=pred, step_ms={1: 11.0}, measured_step_ms={1: 16.0})
    tf = timeline_figure(measured, pred, headline=headline_from("synthetic", base))
    page = tmp_path / "t.html"
    write_timeline_html(tf, page)

    got = probe(page, tmp_path / "p1")
    assert got["errors"] == []
    (fig,) = got["figures"]
    assert fig["id"] == "tracekit-timeline" and fig["webgl"] is True
    assert fig["traces"] == len(tf.figure.data)
    labels = ["r0 python3", "r0 stream 7", "r1 python3", "r1 stream 7"]
    assert fig["rows"] == {"yaxis": labels, "yaxis2": labels}
    # 20 ops per panel, each its own bar; the critical ones are outlined
    assert fig["bars"]["bars:0"] == 20 and fig["bars"]["bars:1"] == 20
    assert "aggregated:0" not in fig["bars"]
    assert fig["bars"]["critical:1"] == tf.panels[1].n_critical > 0
    assert "speedup" not in fig["title"] and "baseline replay error -31.2%" in fig["title"]


_HOVER = """<pre id="hover-check">pending</pre><script>
setTimeout(function () {
  var gd = document.getElementById('tracekit-timeline'), out = {};
  gd.on('plotly_hover', function (d) { out.text = d.points[0].text; });
  var xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  var drag = gd.querySelector('.nsewdrag'), bb = gd.getBoundingClientRect();
  drag.dispatchEvent(new MouseEvent('mousemove', {bubbles: true,
    clientX: bb.left + xa._offset + xa.l2p(XMS), clientY: bb.top + ya._offset + ya.l2p(ROW)}));
  setTimeout(function () {
    var label = document.querySelector('.hoverlayer .hovertext');
    out.label = label ? label.textContent : null;
    document.getElementById('hover-check').textContent = JSON.stringify(out);
  }, 300);
}, 1500);
</script>"""


def test_hovering_a_bar_shows_its_name_duration_and_step(tmp_path):
    measured = _synthetic()
    tf = timeline_figure(measured, None)
    page = tmp_path / "h.html"
    write_timeline_html(tf, page)
    # the middle of 'gemm #2' (rank 0, stream 7: row 1): starts at 7.5 ms, lasts 2 ms
    hover = _HOVER.replace("XMS", "8.5").replace("ROW", "1")
    page.write_text(page.read_text().replace("</body>", hover + "</body>"))
    got = _pre(_chromium(page, tmp_path / "p2", "--dump-dom"), "hover-check")
    assert got["text"] == "gemm #2"
    assert "gemm #2" in got["label"] and "2 ms from 7.500 ms" in got["label"]
    assert "rank 0 · step 1" in got["label"]


def test_real_replay_page_matches_what_python_drew_and_screenshots(tmp_path, gloo_2rank_dir):
    from tracekit.api import Session

    run = load_run(gloo_2rank_dir)
    replayed = Session(run)
    (wi,) = replayed.what_ifs(["overlap=off"])
    tf = timeline_figure(run.events, wi.result.timeline, step=3,
                         headline=headline_from("gloo_2rank", replayed.baseline, wi, step=3))
    page = tmp_path / "real.html"
    write_timeline_html(tf, page)
    got = probe(page, tmp_path / "p3")
    assert got["errors"] == []
    (fig,) = got["figures"]
    assert fig["rows"]["yaxis"] == [r.label for r in tf.rows]
    assert len(fig["rows"]["yaxis"]) == 6  # 2 ranks x (main thread + 2 gloo threads)
    for i, panel in enumerate(tf.panels):
        drawn = fig["bars"].get(f"bars:{i}", 0) + fig["bars"].get(f"aggregated:{i}", 0)
        assert drawn == panel.n_bars > 0
        assert fig["bars"].get(f"idle:{i}", 0) == panel.n_idle
    assert "predicted (overlap=off)" in fig["title"] and "speedup" in fig["title"]

    shot = tmp_path / "timeline.png"
    _chromium(page, tmp_path / "p4", f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000  # a drawn timeline, not a blank page


def test_report_page_renders_its_three_figures(tmp_path, gloo_2rank_dir):
    from tracekit.analysis.breakdown import summarize

    run = load_run(gloo_2rank_dir)
    pred = fake_prediction(run.events)
    meas = {2: 25.0, 3: 24.0, 4: 26.0}
    base = ReplayResult(timeline=pred, step_ms=dict(meas), measured_step_ms=meas)
    sweep = WhatIfResult(spec="fusion=1MB..4MB", result=base, speedup=1.1,
                         sweep=[("fusion=1MB", 24.0), ("fusion=2MB", 22.0), ("fusion=4MB", 23.0)],
                         best_spec="fusion=2MB")
    rep = build_report(run, baseline=base, whatifs=[sweep], summary=summarize(run))
    page = tmp_path / "report.html"
    write_report(rep, page)
    got = probe(page, tmp_path / "p5")
    assert got["errors"] == []
    ids = [f["id"] for f in got["figures"]]
    assert ids == ["tracekit-breakdown", "tracekit-sweep-0", "tracekit-timeline"]
    breakdown, sweep_fig, timeline = got["figures"]
    assert breakdown["bars"] == {"breakdown": 3}  # compute, exposed comm, idle
    assert sweep_fig["bars"] == {"sweep": 1, "best": 1}
    assert timeline["webgl"] is True
