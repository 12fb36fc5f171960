"""``tracekit timeline`` and ``tracekit report`` from the command line, on a real run."""

from __future__ import annotations

import json
import re

import pytest

from tracekit.cli import main
from tracekit.cli.options import parse_ranks
from tracekit.core.kineto import parse_trace
from tracekit.views.html import PROBE_ID


def _run(capsys, *argv):
    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_timeline_writes_an_offline_page_and_reports_its_size(capsys, tmp_path, gloo_2rank_dir):
    out = tmp_path / "t.html"
    trace = tmp_path / "pred.json"
    code, text, err = _run(capsys, "timeline", gloo_2rank_dir, "-o", out,
                           "--export-trace", trace)
    assert code == 0, err
    size_mb = float(re.search(r"\(([\d.]+) MB, opens offline\)", text).group(1))
    assert size_mb == pytest.approx(out.stat().st_size / 1e6, abs=0.06)
    assert "measured, predicted: baseline replay; 6 lanes of 2 ranks" in text
    assert "baseline replay error" in text
    page = out.read_text()
    assert "<script src=" not in page  # nothing fetched from the network
    assert f'id="{PROBE_ID}"' in page and "tracekit-timeline" in page
    events, _ = parse_trace(trace)
    assert len(events) > 100


def test_timeline_json_with_a_what_if_step_and_ranks(capsys, tmp_path, gloo_2rank_dir):
    out = tmp_path / "w.html"
    code, text, err = _run(capsys, "timeline", gloo_2rank_dir, "--what-if", "comm-scale=0.5",
                           "--step", 3, "--ranks", "1", "-o", out, "--json")
    assert code == 0, err
    doc = json.loads(text)
    assert doc["bytes"] == out.stat().st_size
    assert doc["rows"] == 3  # rank 1: main thread and two gloo threads
    assert [p["name"] for p in doc["panels"]] == ["measured", "predicted: comm-scale=0.5"]
    assert all(p["steps"] == [3] for p in doc["panels"])
    assert doc["speedup"] > 1.0  # halving communication time cannot slow the step


def test_timeline_errors_are_one_line(capsys, tmp_path, gloo_2rank_dir):
    code, _, err = _run(capsys, "timeline", gloo_2rank_dir, "--measured-only", "--step", 9,
                        "-o", tmp_path / "x.html")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "step 9 is not in the measured run; steps present: 2, 3, 4" in err
    code, _, err = _run(capsys, "timeline", gloo_2rank_dir, "--ranks", "zero",
                        "--measured-only", "-o", tmp_path / "x.html")
    assert code == 2 and "--ranks 'zero' is not a list of ranks" in err


def test_report_writes_one_page_with_every_what_if(capsys, tmp_path, gloo_2rank_dir):
    out = tmp_path / "r.html"
    code, text, err = _run(capsys, "report", gloo_2rank_dir, "--what-if", "overlap=off",
                           "--what-if", "fusion=64KB..256KB", "-o", out, "--json")
    assert code == 0, err
    doc = json.loads(text)
    assert doc["summary"] is True and doc["bytes"] == out.stat().st_size
    specs = [w["spec"] for w in doc["what_ifs"]]
    assert specs == ["overlap=off", "fusion=64KB..256KB"]
    assert doc["what_ifs"][1]["best"] in ("fusion=64KB", "fusion=128KB", "fusion=256KB")
    html = out.read_text()
    assert html.count('class="plotly-graph-div"') == 3  # breakdown, sweep, timeline
    assert "<h2>Sweep: fusion=64KB..256KB</h2>" in html


def test_rank_lists():
    assert parse_ranks("0-3,8, 2") == [0, 1, 2, 3, 8]
    assert parse_ranks(None) is None and parse_ranks(" ") is None
