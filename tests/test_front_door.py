"""The front door (tracekit.api): typed options checked up front, one Session per run,
and the same numbers from every command that replays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracekit.api import PredictionOptions, Session
from tracekit.cli import cli
from tracekit.errors import TracekitError

RUN = Path(__file__).parent / "data" / "whatif_ddp_2rank"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"interference": "magic"}, "interference must be one of auto, factor, cores, none"),
    ({"steps": (-1,)}, "step numbers >= 0"),
    ({"steps": ("3",)}, "step numbers >= 0"),
    ({"comm_model": "/no/such/comm.json"}, "no such file; write one with 'tracekit calibrate"),
])
def test_options_are_checked_when_made(kwargs, message):
    with pytest.raises(TracekitError, match=message):
        PredictionOptions(**kwargs)


def test_a_session_builds_each_stage_once_and_honours_steps():
    s = Session(RUN, PredictionOptions(steps=(3, 4)))
    assert s.graph is s.graph and s.baseline is s.baseline
    assert sorted(s.baseline.step_ms) == [3, 4]
    assert sorted(Session(RUN).baseline.step_ms) == [2, 3, 4, 5]


def test_a_bad_spec_fails_before_anything_is_fitted():
    s = Session(RUN)
    with pytest.raises(TracekitError, match="unknown what-if 'turbo'"):
        s.what_ifs(["fusion=4MB", "turbo=2"])
    assert "context" not in vars(s)  # the cached context was never built


def _json(args):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


@pytest.mark.parametrize("interference", ["factor", "cores"])
def test_replay_timeline_and_report_agree(tmp_path, interference):
    opts = ["--interference", interference, "--step", "3", "--step", "4"]
    rep = _json(["replay", str(RUN), "--json", "--what-if", "overlap=off", *opts])
    tl = _json(["timeline", str(RUN), "--json", "--what-if", "overlap=off", *opts,
                "-o", str(tmp_path / "t.html")])
    rp = _json(["report", str(RUN), "--json", "--what-if", "overlap=off", *opts,
                "-o", str(tmp_path / "r.html")])
    (w,) = rep["what_ifs"]
    assert tl["predicted_step_ms"] == pytest.approx(w["step_ms"], rel=1e-12)
    assert tl["speedup"] == pytest.approx(w["speedup"], rel=1e-12)
    assert tl["baseline_error_pct"] == pytest.approx(rep["baseline"]["error_pct"], rel=1e-12)
    assert rp["what_ifs"][0]["speedup"] == pytest.approx(w["speedup"], rel=1e-12)


def test_the_interference_option_changes_the_report():
    """report used to drop --interference; the two models give different fusion=4MB
    predictions on this CPU run (0.68x with the factor, 1.32x with core sharing)."""
    args = ["report", str(RUN), "--json", "--what-if", "fusion=4MB", "-o", "/dev/null"]
    factor = _json([*args, "--interference", "factor"])["what_ifs"][0]["speedup"]
    cores = _json([*args, "--interference", "cores"])["what_ifs"][0]["speedup"]
    assert abs(factor - cores) > 0.01
