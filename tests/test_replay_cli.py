"""``tracekit replay`` and ``tracekit graph`` end to end on a recorded run."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tracekit.cli import main

REPLAY_CLI = importlib.import_module("tracekit.cli.replay")

PROBE = [str(Path(__file__).parent / "data" / "graph" / f"gloo_probe_rank{r}.json.gz")
         for r in (0, 1)]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_json_shape(capsys):
    code, out, _ = run_cli(capsys, "replay", *PROBE, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["world_size"] == 2
    assert [s["step"] for s in doc["steps"]] == [2, 3]
    for s in doc["steps"]:  # the error printed is the error of the numbers printed
        assert s["error_pct"] == pytest.approx(
            (s["predicted_ms"] - s["measured_ms"]) / s["measured_ms"] * 100)
    worst = max((s["error_pct"] for s in doc["steps"]), key=abs)
    assert doc["baseline"]["worst_step_error_pct"] == pytest.approx(worst)
    assert doc["measured_step_ms"] == pytest.approx(
        sorted(s["measured_ms"] for s in doc["steps"])[0] / 2
        + sorted(s["measured_ms"] for s in doc["steps"])[1] / 2)
    # a 2-step run recorded on a busy 2-core machine: typical latencies, stated bound 20%
    assert abs(doc["baseline"]["error_pct"]) < 20
    assert doc["what_ifs"] == []
    cp = doc["critical_path"]
    assert cp["total_ms"] > 0
    assert sum(cp["by_kind_ms"].values()) == pytest.approx(cp["total_ms"])
    assert any("inferred" in n for n in doc["notes"])
    base = doc["baseline"]
    assert abs(base["worst_step_error_pct"]) >= base["median_abs_step_error_pct"] > 0


def test_replay_text_and_one_step(capsys):
    code, out, _ = run_cli(capsys, "replay", *PROBE, "--step", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[2].split() == ["step", "measured", "ms", "predicted", "ms", "error"]
    assert lines[3].split()[0] == "3" and lines[4].split()[0] == "median"
    assert "critical path" in out


def test_replay_unknown_step_is_a_one_line_error(capsys):
    code, out, err = run_cli(capsys, "replay", *PROBE, "--step", "7")
    assert code == 2
    assert err.startswith("error: ") and "step 7 is not in this run" in err
    assert len(err.strip().splitlines()) == 1


def test_replay_evaluates_what_ifs(capsys, recording_machine_cores):
    """A real what-if evaluation through the command. Halving compute on this CPU run
    must make the step faster, but less than twice as fast: communication (40% of the
    baseline's critical path) is not scaled. The speedup printed is the ratio of the step
    times printed, in the JSON and in the text."""
    code, out, _ = run_cli(capsys, "replay", *PROBE, "--json", "--what-if",
                           "compute-scale=0.5", "--what-if", "overlap=off")
    assert code == 0
    doc = json.loads(out)
    half, off = doc["what_ifs"]
    assert [half["spec"], off["spec"]] == ["compute-scale=0.5", "overlap=off"]
    assert 1.0 < half["speedup"] < 2.0
    assert half["step_ms"] < doc["baseline"]["step_ms"]
    for w in doc["what_ifs"]:
        assert w["speedup"] == pytest.approx(doc["baseline"]["step_ms"] / w["step_ms"],
                                             rel=1e-12)
    # the default on a CPU-only run is the core-sharing model, and it says so
    # (said once, for every what-if)
    assert any(n.startswith("CPU contention (processor sharing)") for n in doc["what_if_notes"])
    # compute-scale assumes nothing of its own; it was never checked on measured runs, so
    # its interval is the model's alone, and it says so; overlap=off's carries its
    # family's measured error
    assert half["notes"] == ["interval from the model alone: no prediction of this kind "
                             "has been checked against measured runs"]
    assert any(n.startswith("interval includes the measured error of overlap predictions")
               for n in off["notes"])
    assert half["speedup_lo"] <= half["speedup"] <= half["speedup_hi"]
    code, text, _ = run_cli(capsys, "replay", *PROBE, "--what-if", "compute-scale=0.5")
    assert code == 0 and "per-step error" in text and "every what-if above assumes" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("compute-scale=0.5"))
    assert f"{half['step_ms']:.3f} [" in line and f"{half['speedup']:.3f}x [" in line
    assert text.count("CPU contention (processor sharing)") == 1


def test_replay_interference_option_reaches_the_prediction(capsys, recording_machine_cores):
    """--interference picks the model: 'cores' is what 'auto' means on a CPU-only run
    (same document), 'factor' predicts overlap=off differently and names its factor."""
    docs = {}
    for model in ("auto", "cores", "factor"):
        code, out, _ = run_cli(capsys, "replay", *PROBE, "--json", "--what-if", "overlap=off",
                               "--interference", model)
        assert code == 0
        docs[model] = json.loads(out)
    assert docs["auto"] == docs["cores"]
    cores, factor = docs["cores"]["what_ifs"][0], docs["factor"]["what_ifs"][0]
    assert factor["step_ms"] != pytest.approx(cores["step_ms"], rel=1e-3)
    shared = docs["factor"]["what_if_notes"]
    assert any(n.startswith("interference: compute runs") for n in shared)
    assert not any(n.startswith("CPU contention") for n in shared)
    assert docs["factor"]["baseline"] == docs["cores"]["baseline"]  # what-ifs only


def test_replay_export_trace(capsys, tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(REPLAY_CLI, "write_chrome_trace",
                        lambda timeline, path: written.append((len(timeline), str(path))))
    code, _, _ = run_cli(capsys, "replay", *PROBE, "--export-trace", str(tmp_path / "p.json"))
    assert code == 0
    assert len(written) == 1 and written[0][1] == str(tmp_path / "p.json")
    assert written[0][0] > 400  # every node plus the step rows


def test_graph_command_json_and_export(capsys, tmp_path):
    out_file = tmp_path / "g.graphml"
    code, out, _ = run_cli(capsys, "graph", *PROBE, "--json", "--export", str(out_file))
    assert code == 0
    doc = json.loads(out)
    assert doc["problems"] == []
    assert doc["inferred_edges"] > 0
    assert doc["edges_by_kind"]["ISSUE"] == 16
    assert sum(1 for ln in doc["lanes"] if ln["main"]) == 2
    assert out_file.exists() and doc["exported"] == str(out_file)
    code, out, _ = run_cli(capsys, "graph", *PROBE)
    assert "checks: no cycle" in out and "(main)" in out


def test_sample_run_baseline_within_stated_bound(capsys):
    """The checked-in run (2 ranks, gloo, 5 steps): the baseline replays with typical
    dependency latencies, never the measured gaps, and stays within 5% median (measured
    2.2% median, 3.4% worst step when this test was written)."""
    sample = Path(__file__).resolve().parents[1] / "samples" / "runs" / "mlp_gloo_2rank"
    code, out, _ = run_cli(capsys, "replay", str(sample), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["baseline"]["median_abs_step_error_pct"] < 5.0
    assert abs(doc["baseline"]["worst_step_error_pct"]) < 10.0
    assert any("typical" in n for n in doc["notes"])
