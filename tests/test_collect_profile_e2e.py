"""End to end: ``tracekit profile`` records real 2-rank gloo runs of samples/train_ddp.py,
and the run folder is complete, loads with tracekit, and its model metadata matches what
DDP itself did (buckets recorded independently by a DDP comm hook inside the job)."""

from __future__ import annotations

import gzip
import json
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

import tracekit  # noqa: E402
from tracekit.cli import main  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
WAIT, WARMUP, ACTIVE = 2, 1, 3


def _profile(tmp: Path, *train_args: str) -> tuple[Path, dict, dict]:
    out = tmp / "run"
    buckets_file = tmp / "ddp_buckets.json"
    code = main(["profile", "--out", str(out), "--wait", str(WAIT), "--warmup", str(WARMUP),
                 "--steps", str(ACTIVE), "--", *TORCHRUN, str(REPO / "samples/train_ddp.py"),
                 "--record-buckets", str(buckets_file), *train_args])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    return out, manifest, json.loads(buckets_file.read_text())


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    # 6 layers of Linear(128, 128): 64.5 KB per layer, 0.1 MB buckets -> several buckets
    tmp = tmp_path_factory.mktemp("mlp")
    return _profile(tmp, "--model", "mlp", "--hidden", "128", "--layers", "6",
                    "--bucket-mb", "0.1", "--steps", "9")


def test_run_folder_has_every_rank_and_step(mlp_run):
    out, m, _ = mlp_run
    assert m["schema_version"] == 1 and m["world_size"] == 2 and m["backend"] == "gloo"
    assert m["exit_code"] == 0 and m["errors"] == []
    assert m["profiler"] == {"wait": WAIT, "warmup": WARMUP, "active": ACTIVE,
                             "record_shapes": True, "annotate_modules": True}
    import torch

    assert m["versions"]["torch"] == torch.__version__
    assert [r["rank"] for r in m["ranks"]] == [0, 1]
    for r in m["ranks"]:
        assert r["trace"] == f"rank{r['rank']}.trace.json.gz"
        with gzip.open(out / r["trace"]) as fh:  # complete gzip, complete JSON
            assert "traceEvents" in json.load(fh)
        assert r["steps"] == list(range(WAIT + WARMUP, WAIT + WARMUP + ACTIVE))
        assert len(r["step_times_ms"]) == ACTIVE and min(r["step_times_ms"]) > 0
        assert r["unprofiled_step_ms"] > 0 and len(r["unprofiled_step_times_ms"]) >= WAIT - 1
    ov = m["overhead"]
    assert ov["ratio"] == pytest.approx(ov["profiled_step_ms"] / ov["unprofiled_step_ms"],
                                        rel=1e-3)
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "rank0.trace.json.gz", "rank1.trace.json.gz"]


def test_parameter_table_and_forward_order(mlp_run):
    _, m, _ = mlp_run
    params = m["model"]["parameters"]
    assert [p["name"] for p in params] == [f"{2 * i}.{k}" for i in range(6)
                                           for k in ("weight", "bias")]
    assert [p["index"] for p in params] == list(range(12))
    w, b = params[0], params[1]
    assert w["shape"] == [128, 128] and w["bytes"] == 128 * 128 * 4 and w["dtype"] == "float32"
    assert b["shape"] == [128] and b["bytes"] == 512 and b["module"] == "0"
    assert all(p["requires_grad"] for p in params)
    assert m["model"]["forward_order"] == [
        {"module": str(2 * i), "params": [2 * i, 2 * i + 1]} for i in range(6)]


def test_buckets_are_ddps_own(mlp_run):
    _, m, seen = mlp_run
    ddp = m["model"]["ddp"]
    assert ddp["buckets_source"] == "rebuilt"
    assert ddp["bucket_cap_mb"] == pytest.approx(0.1)
    assert ddp["bucket_cap_bytes"] == ddp["first_bucket_bytes"] == int(0.1 * 2**20)  # no 1 MB first
    recorded = [b["params"] for b in ddp["buckets"]]
    from_hook = [b["params"] for b in seen["buckets"]]
    assert len(recorded) > 2
    assert recorded == from_hook
    assert recorded == seen["ddp_style"]  # the samples' bucketing equals DDP's for the MLP
    sizes = {p["index"]: p["bytes"] for p in m["model"]["parameters"]}
    assert [b["bytes"] for b in ddp["buckets"]] == [sum(sizes[i] for i in b) for b in recorded]


def test_the_run_loads_and_has_one_all_reduce_per_bucket(mlp_run):
    out, m, _ = mlp_run
    run = tracekit.load_run(out)
    assert run.ranks == [0, 1] and run.world_size == 2 and run.complete
    # the cores each rank could run on, for the core-sharing model
    assert all(r["cpu_cores"] >= 1 for r in m["ranks"])
    assert run.steps() == list(range(WAIT + WARMUP, WAIT + WARMUP + ACTIVE))
    ev = run.events
    comm = ev[(ev["kind"] == "comm") & (ev["collective"] == "all_reduce")]
    per_step = comm.groupby(["rank", "step"]).size()
    assert set(per_step) == {len(m["model"]["ddp"]["buckets"])}


def test_module_annotations_wrap_forward_and_backward(mlp_run):
    out, m, _ = mlp_run
    ev = tracekit.load_run(out).events
    units = [u["module"] for u in m["model"]["forward_order"]]
    for rank in (0, 1):
        step = ev[(ev["rank"] == rank) & (ev["step"] == WAIT + WARMUP + 1)]
        names = step["name"].astype(str)
        fwd = step[names.str.startswith("tracekit.fwd:")].sort_values("ts_ns")
        bwd = step[names.str.startswith("tracekit.bwd:")].sort_values("ts_ns")
        assert [n.split(":", 1)[1] for n in fwd["name"].astype(str)] == units
        assert [n.split(":", 1)[1] for n in bwd["name"].astype(str)] == units[::-1]
        # each forward unit holds its addmm; each backward range holds one AddmmBackward0,
        # on the thread where backward runs
        addmm = step[names == "aten::addmm"]
        grads = step[names == "AddmmBackward0"]
        for ranges, ops in ((fwd, addmm), (bwd, grads)):
            assert len(ops) == len(units)
            for (_, r), (_, op) in zip(ranges.iterrows(), ops.sort_values("ts_ns").iterrows()):
                assert r["lane"] == op["lane"]
                assert r["ts_ns"] <= op["ts_ns"] and op["end_ns"] <= r["end_ns"]


def test_transformer_metadata_attributes_unrun_modules(tmp_path):
    out, m, seen = _profile(tmp_path, "--model", "transformer", "--hidden", "32",
                            "--layers", "2", "--bucket-mb", "0.05", "--steps", "8")
    model = m["model"]
    names = [p["name"] for p in model["parameters"]]
    units = {u["module"]: u["params"] for u in model["forward_order"]}
    attn = "encoder.layers.0.self_attn"
    # MultiheadAttention uses out_proj's weights without calling out_proj.forward
    assert "encoder.layers.0.self_attn.out_proj" not in units
    assert {names[i] for i in units[attn]} == {f"{attn}.{n}" for n in (
        "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")}
    order = [u["module"] for u in model["forward_order"]]
    assert order[0] == "embed" and order[-1] == "head"
    used = sorted(i for u in model["forward_order"] for i in u["params"])
    assert used == list(range(len(names)))  # every parameter has exactly one first user
    recorded = [b["params"] for b in model["ddp"]["buckets"]]
    assert recorded == [b["params"] for b in seen["buckets"]]
    assert sorted(i for b in recorded for i in b) == list(range(len(names)))
    assert tracekit.load_run(out).ranks == [0, 1]


def test_nccl_runs_get_nccl_logging_in_their_own_environment(tmp_path):
    """The collector turns NCCL's log on from inside init_process_group, before NCCL can
    start. There is no NCCL on this machine, so the job writes the log NCCL would write."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import os, torch, torch.distributed as dist
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
        try:
            dist.init_process_group("nccl", rank=0, world_size=1)
        except Exception as exc:  # a CPU-only torch has no NCCL
            print("no nccl:", type(exc).__name__)
        path = os.environ["NCCL_DEBUG_FILE"]
        print("NCCL_DEBUG", os.environ["NCCL_DEBUG"], "SUBSYS", os.environ["NCCL_DEBUG_SUBSYS"])
        with open(path, "w") as fh:  # stand in for NCCL
            fh.write("h:1:1 [0] NCCL INFO AllReduce: opCount 0 sendbuff 0x1 recvbuff 0x1 "
                     "count 4 datatype 7 op 0 root 0 comm 0x2 [nranks=1] stream 0x3\\n")
        model = torch.nn.Linear(4, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(8):
            model(torch.randn(2, 4)).sum().backward(); opt.step(); opt.zero_grad()
    """))
    out = tmp_path / "run"
    code = main(["profile", "--out", str(out), "--wait", "1", "--warmup", "1", "--steps", "2",
                 "--", sys.executable, str(script)])
    assert code == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["ranks"][0]["nccl_log"] == "nccl/rank0.log"
    from collectors.nccl_log import read_nccl_logs

    log = read_nccl_logs(out)
    assert list(log["collective"]) == ["all_reduce"] and list(log["rank"]) == [0]
