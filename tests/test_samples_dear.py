"""The sample trainers really train, and the DeAR-style trainer (reduce-scatter in
backward, all-gather + update before first use in the next forward) ends with the same
parameters as DDP + SGD, as does the no-overlap mode. Real 2-rank gloo runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import tracekit  # noqa: E402
from tracekit.cli import main  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _train(script: str, out: Path, *args: str) -> dict:
    proc = subprocess.run([*TORCHRUN, str(SAMPLES / script), "--save-params", str(out), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step_ms median=" in proc.stdout
    return torch.load(out)


def _initial(model: str, *args: str) -> dict:
    sys.path.insert(0, str(SAMPLES))
    try:
        from workloads import build_workload
    finally:
        sys.path.remove(str(SAMPLES))
    kw = dict(zip(("hidden", "layers"), (int(a) for a in args)))
    return {n: p.detach().clone() for n, p in build_workload(model, **kw).model.named_parameters()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


# 0.02 MB buckets over Linear(64, 64) layers: 5 buckets; momentum exercises the state
MLP_ARGS = ["--model", "mlp", "--hidden", "64", "--layers", "5", "--bucket-mb", "0.02",
            "--steps", "6", "--momentum", "0.9", "--lr", "0.05"]


@pytest.fixture(scope="module")
def ddp_mlp(tmp_path_factory) -> dict:
    return _train("train_ddp.py", tmp_path_factory.mktemp("ddp") / "ddp.pt", *MLP_ARGS)


def test_ddp_sample_trains(ddp_mlp):
    start = _initial("mlp", "64", "5")
    moved = [float((ddp_mlp[n] - start[n]).abs().max()) for n in start]
    assert min(moved) > 1e-5  # every parameter moved, by far more than the tolerance below


@pytest.mark.parametrize("rs", [[], ["--rs-via-alltoall"]], ids=["native_rs", "alltoall_rs"])
def test_dear_trains_exactly_like_ddp_mlp(ddp_mlp, tmp_path, rs):
    _assert_same(ddp_mlp, _train("train_dear.py", tmp_path / "dear.pt", *MLP_ARGS, *rs))


def test_no_overlap_trains_exactly_like_ddp_mlp(ddp_mlp, tmp_path):
    _assert_same(ddp_mlp, _train("train_ddp.py", tmp_path / "no.pt", *MLP_ARGS, "--no-overlap"))


def test_dear_trains_exactly_like_ddp_transformer(tmp_path):
    args = ["--model", "transformer", "--hidden", "32", "--layers", "2", "--bucket-mb",
            "0.05", "--steps", "4"]
    _assert_same(_train("train_ddp.py", tmp_path / "ddp.pt", *args),
                 _train("train_dear.py", tmp_path / "dear.pt", *args))


def test_profiled_dear_run_has_reduce_scatters_and_all_gathers(tmp_path):
    """collectors.step() marks the steps of a loop without an optimizer; each bucket's
    reduce-scatter runs in the backward, its all-gather in the next forward."""
    out = tmp_path / "run"
    code = main(["profile", "--out", str(out), "--wait", "1", "--warmup", "1", "--steps", "2",
                 "--", *TORCHRUN, str(SAMPLES / "train_dear.py"), "--hidden", "64",
                 "--layers", "4", "--bucket-mb", "0.02", "--steps", "7"])
    assert code == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["errors"] == [] and m["model"] is None  # no DDP: no model metadata
    assert [r["steps"] for r in m["ranks"]] == [[2, 3], [2, 3]]
    run = tracekit.load_run(out)
    ev = run.events
    # Linear(64, 64) is 16.6 KB; a DDP bucket closes once it reaches 0.02 MB: 2 layers each
    n_buckets = 2
    for rank in run.ranks:
        step = ev[(ev["rank"] == rank) & (ev["step"] == 3)]
        names = step["name"].astype(str)
        rs = step[names == "c10d::_reduce_scatter_base_"]
        ag = step[names == "c10d::_allgather_base_"]
        assert len(rs) == len(ag) == n_buckets
        assert set(rs["comm_bytes"]) == set(ag["comm_bytes"]) == {2 * 16640}
        # the all-gathers (of the previous step's buckets) run in the forward, before this
        # step's backward launches its reduce-scatters
        assert ag["ts_ns"].max() < rs["ts_ns"].min()
        # gloo performs each reduce-scatter as an all-reduce (see train_dear.py). A transfer
        # runs on a gloo thread and may start after its step's window: on a loaded machine
        # every all-reduce of step 3 did. Step 2's are waited for in step 3's forward, so
        # the trace as a whole always has both kinds.
        mine = ev[(ev["rank"] == rank) & (ev["kind"] == "comm")]
        assert set(mine["collective"].astype(str)) == {"all_gather", "all_reduce"}
