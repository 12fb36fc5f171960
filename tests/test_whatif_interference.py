"""The interference models end to end: what-ifs on the recorded CPU runs in tests/data
with ``interference="cores"`` (core sharing, :mod:`replay.interference.cores`) and
``interference="factor"`` (compute slowed beside comm, :mod:`replay.interference.factor`), each
assertion one that a broken model would fail. The hand-built what-if tests
(test_whatif_transforms.py) switch interference off.

Both runs were recorded on a 2-core machine and their manifests (where there is one) do
not record the cores, so the ``recording_machine_cores`` fixture makes the core-sharing
model assume 2 whatever machine runs the tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from replay.interference.factor import fit_interference_graph
from replay.timeline import replay
from replay.whatif import evaluate
from tracekit.core.run import load_run
from tracekit.graph.build import build_graph

DATA = Path(__file__).parent / "data"
#: the recorded DDP run's own plan, as what-ifs: DDP's bucket_cap_mb=0.75 (its README),
#: overlap on, compute unscaled. Each changes nothing.
NO_CHANGE = ["fusion=0.75MB", "overlap=on", "compute-scale=1"]
#: what-ifs that change what overlaps what
OVERLAP_CHANGING = ["overlap=off", "fusion=4MB", "dear"]


def predict(recorded, specs, model: str, *, applied: bool = True):
    """The one call into the what-if API (kept here so that a rename touches one place):
    ``specs`` predicted on ``recorded`` (run, graph, baseline) with interference
    ``model``; ``applied=False`` predicts with no interference model ("none")."""
    run, graph, baseline = recorded
    return evaluate(run, graph, baseline, specs, interference=model if applied else "none")


def load(path: Path):
    run = load_run(path)
    graph = build_graph(run)
    return run, graph, replay(run, graph)


@pytest.fixture(scope="module")
def ddp():
    return load(DATA / "whatif_ddp_2rank")


@pytest.fixture(scope="module")
def ddp_on_a_big_host(tmp_path_factory):
    """The same run, its manifest now saying each rank had 64 cores."""
    folder = tmp_path_factory.mktemp("big_host") / "whatif_ddp_2rank"
    shutil.copytree(DATA / "whatif_ddp_2rank", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for rank in manifest["ranks"]:
        rank["cpu_cores"] = 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return load(folder)


@pytest.mark.parametrize("model", ["cores", "factor"])
def test_a_variant_that_changes_nothing_is_the_baseline(ddp, model, recording_machine_cores):
    """Both models read the slowdown already inside each measured duration from the
    baseline replay, so re-applying them to an unchanged schedule gives back the same
    durations: every step exactly as the baseline replay, not merely close."""
    _, _, base = ddp
    for res in predict(ddp, NO_CHANGE, model):
        assert res.result.step_ms == base.step_ms, res.spec
        assert res.speedup == 1.0


@pytest.mark.parametrize("model", ["cores", "factor"])
def test_interference_changes_predictions_that_change_overlap(ddp, model,
                                                              recording_machine_cores):
    """On a 2-core host with 2 ranks (each a training thread plus gloo threads), overlap
    costs something under either model (the fitted factor is above 1; more busy threads
    than cores), so moving communication relative to compute must change the prediction
    compared with the same what-if without interference."""
    if model == "factor":
        assert fit_interference_graph(ddp[1]).factor > 1.0
    on = predict(ddp, OVERLAP_CHANGING, model)
    off = predict(ddp, OVERLAP_CHANGING, model, applied=False)
    for a, b in zip(on, off):
        assert a.result.median_step_ms != pytest.approx(b.result.median_step_ms, rel=1e-3), \
            a.spec


def test_auto_is_the_core_model_on_a_cpu_run(ddp, recording_machine_cores):
    """The run has no GPU lane: the default model is core sharing (same predictions)."""
    specs = ["overlap=off", "fusion=4MB"]
    auto = predict(ddp, specs, "auto")
    cores = predict(ddp, specs, "cores")
    assert [r.result.step_ms for r in auto] == [r.result.step_ms for r in cores]
    assert any("CPU contention (processor sharing)" in n for n in auto[0].shared_notes)
    assert "2 core(s)" in auto[0].shared_notes[-1]


@pytest.mark.parametrize("run_name", ["whatif_ddp_2rank", "gloo_2rank"])
def test_factor_model_rewards_removing_overlap(run_name, ddp):
    """Factor model, overlap=off: the baseline's compute that ran beside comm was
    measured slowed by the fitted factor (> 1); with every bucket issued after the
    backward, (almost) no compute runs beside comm any more, so the model gives that
    compute back its interference-free duration. Durations only shrink, so the step
    cannot come out longer than the same what-if that keeps the measured (slowed)
    durations (interference not applied, same cost model)."""
    recorded = ddp if run_name == "whatif_ddp_2rank" else load(DATA / run_name)
    assert fit_interference_graph(recorded[1]).factor > 1.0
    (with_factor,) = predict(recorded, ["overlap=off"], "factor")
    (without,) = predict(recorded, ["overlap=off"], "factor", applied=False)
    assert with_factor.result.median_step_ms < without.result.median_step_ms
    assert sum(with_factor.result.step_ms.values()) < sum(without.result.step_ms.values())


def test_core_sharing_with_enough_cores_is_no_interference(ddp_on_a_big_host):
    """Processor sharing slows a thread only while more threads are busy than the host
    has cores. With 64 cores recorded for 2 ranks (a handful of threads), nothing ever
    waits for a core: every prediction of the core model equals the one without
    interference, step for step, for every kind of what-if."""
    specs = ["overlap=off", "fusion=4MB", "dear", "comm-scale=2", "compute-scale=0.5",
             "fusion=0.25MB..2MB"]
    cores = predict(ddp_on_a_big_host, specs, "cores")
    off = predict(ddp_on_a_big_host, specs, "cores", applied=False)
    for a, b in zip(cores, off):
        assert a.result.step_ms == b.result.step_ms, a.spec
    assert "share 64 core(s)" in cores[0].shared_notes[-1]
    assert not any("this machine's" in n for n in cores[0].shared_notes)  # from the manifest


def test_core_sharing_on_two_cores_is_not_no_interference(ddp, recording_machine_cores):
    """The counterpart on the 2 cores the run had: the same what-ifs do differ, so the
    test above compares something that can differ."""
    specs = ["overlap=off", "comm-scale=2"]
    cores = predict(ddp, specs, "cores")
    off = predict(ddp, specs, "cores", applied=False)
    assert all(a.result.step_ms != b.result.step_ms for a, b in zip(cores, off))
