"""The user's job is never harmed: a failing collector leaves training running and the
exit code untouched; a crash keeps what was recorded; Ctrl-C stops everything cleanly.
Also the ``collectors.profile`` API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

import tracekit  # noqa: E402
from tracekit.cli import main  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]

TRAIN_LOOP = """
import sys, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
def train(steps, on_step=None):
    for i in range(steps):
        loss = model(torch.randn(8, 32)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        if on_step: on_step(i)
"""


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.py"
    path.write_text(TRAIN_LOOP + textwrap.dedent(body))
    return path


def _profile(tmp_path: Path, script: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "run"
    code = main(["profile", "--out", str(out), "--wait", "1", "--warmup", "1", "--steps", "2",
                 *extra, "--", sys.executable, str(script)])
    return code, json.loads((out / "manifest.json").read_text())


def test_a_trace_that_cannot_be_written_does_not_stop_training(tmp_path, capfd):
    script = _script(tmp_path, """
        train(12)
        print("TRAINING FINISHED")
    """)
    (tmp_path / "run" / "rank0.trace.json.gz").mkdir(parents=True)  # the rename will fail
    code, m = _profile(tmp_path, script)
    assert code == 0
    captured = capfd.readouterr()
    assert "TRAINING FINISHED" in captured.out
    assert "rank 0: could not write the trace" in captured.err
    assert any("could not write the trace" in e for e in m["errors"])
    rank = m["ranks"][0]
    assert rank["trace"] == "" and len(rank["step_times_ms"]) == 2  # the rest is kept
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_a_job_that_profiles_itself_keeps_its_profiler(tmp_path, capfd):
    script = _script(tmp_path, """
        with torch.profiler.profile() as own:
            train(8)
        own.export_chrome_trace(sys.argv[0] + ".own.json")
        print("OWN PROFILE DONE")
    """)
    code, m = _profile(tmp_path, script)
    assert code == 0
    assert "OWN PROFILE DONE" in capfd.readouterr().out
    assert Path(str(script) + ".own.json").stat().st_size > 0
    assert any("another torch.profiler is already running" in e for e in m["errors"])
    assert m["ranks"][0]["trace"] == ""


def test_a_crashing_job_keeps_its_exit_code_and_what_was_recorded(tmp_path):
    script = _script(tmp_path, """
        def crash(i):
            if i == 9:
                raise RuntimeError("loss is nan")
        train(100, crash)
    """)
    code, m = _profile(tmp_path, script)
    assert code == 1 and m["exit_code"] == 1
    rank = m["ranks"][0]
    assert rank["trace"] == "rank0.trace.json.gz" and rank["steps"] == [2, 3]
    run = tracekit.load_run(tmp_path / "run")
    assert run.steps() == [2, 3] and run.world_size == 1


def test_a_job_that_ends_mid_window_records_the_incomplete_step(tmp_path):
    """The step the job raised in is written as ``incomplete_steps`` and left out, with a
    warning, when the run is read."""
    script = _script(tmp_path, """
        def crash(i):
            if i == 3:
                raise RuntimeError("loss is nan")
        train(100, crash)
    """)
    code, m = _profile(tmp_path, script, "--steps", "4")
    assert code == 1
    rank = m["ranks"][0]
    assert len(rank["incomplete_steps"]) == 1, rank
    cut = rank["incomplete_steps"][0]
    assert cut not in rank["steps"] and rank["steps"], rank
    run = tracekit.load_run(tmp_path / "run")
    assert cut not in run.steps() and run.steps() == rank["steps"]
    assert any("left out: the manifest records it as incomplete" in w for w in run.warnings)


def test_data_loader_workers_stay_passive(tmp_path):
    """Spawned workers import torch too (through the injected sitecustomize): they must
    not start collectors of their own."""
    script = _script(tmp_path, """
        import json, os, sys
        from torch.utils.data import DataLoader, TensorDataset

        def report(_worker_id):
            agent = sys.modules.get("collectors.agent")
            with open(f"{sys.argv[0]}.worker{os.getpid()}", "w") as fh:
                json.dump({"session": bool(agent and agent.current()),
                           "injected": "collectors.bootstrap" in sys.modules,
                           "owner": os.environ.get("TRACEKIT_OWNER_PID", "")}, fh)

        if __name__ == "__main__":
            data = DataLoader(TensorDataset(torch.randn(64, 32)), batch_size=8,
                              num_workers=2, multiprocessing_context="spawn",
                              worker_init_fn=report)
            for (x,) in data:
                loss = model(x).pow(2).mean()
                opt.zero_grad(); loss.backward(); opt.step()
            print("EPOCH DONE")
    """)
    code, m = _profile(tmp_path, script)
    assert code == 0 and m["errors"] == []
    assert [r["rank"] for r in m["ranks"]] == [0] and m["ranks"][0]["steps"] == [2, 3]
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("job.py.worker*")]
    assert len(reports) == 2 and not any(r["session"] for r in reports)
    # the workers did run the injected sitecustomize, and saw their rank's owner tag
    assert all(r["injected"] for r in reports)
    assert {r["owner"] for r in reports} == {f"{m['ranks'][0]['pid']}:"}


def test_module_annotations_can_be_turned_off(tmp_path):
    script = _script(tmp_path, """
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0,
                                world_size=1)
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        for _ in range(8):
            ddp(torch.randn(8, 32)).sum().backward(); opt.step(); opt.zero_grad()
    """)
    code, m = _profile(tmp_path, script, "--no-annotate")
    assert code == 0 and m["errors"] == []
    assert m["profiler"]["annotate_modules"] is False
    assert len(m["model"]["forward_order"]) == 2  # metadata is still recorded
    names = tracekit.load_run(tmp_path / "run").events["name"].astype(str)
    assert not names.str.startswith("tracekit.").any()
    assert (names == "AddmmBackward0").any()


def test_a_job_too_short_for_the_window_says_so(tmp_path):
    script = _script(tmp_path, "train(3)\n")
    code, m = _profile(tmp_path, script)
    assert code == 0
    assert any("before any profiled step completed" in e for e in m["errors"])
    assert m["ranks"][0]["trace"] == "" and m["ranks"][0]["steps"] == []


def test_ctrl_c_stops_every_rank_and_still_writes_the_manifest(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tracekit", "profile", "--out", str(out), "--wait", "1",
           "--warmup", "1", "--steps", "2", "--", sys.executable, "-m",
           "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "samples/train_ddp.py"), "--hidden", "64", "--layers", "2",
           "--steps", "1000000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        parts = [out / ".parts" / "rank0.json", out / ".parts" / "rank1.json"]
        while time.monotonic() < deadline and not all(p.exists() for p in parts):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.5)
        assert all(p.exists() for p in parts), "ranks never finished their profiled window"
        pids = [json.loads(p.read_text())["pid"] for p in parts]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["exit_code"] == proc.returncode
    assert any(e.startswith("interrupted") for e in m["errors"])
    assert [r["trace"] for r in m["ranks"]] == ["rank0.trace.json.gz", "rank1.trace.json.gz"]
    time.sleep(0.5)
    for pid in pids:  # every rank is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert tracekit.load_run(out).ranks == [0, 1]


def test_profile_api_in_code(tmp_path):
    script = _script(tmp_path, f"""
        from collectors import profile
        with profile({str(tmp_path / "api_run")!r}, wait=1, warmup=1, active=2,
                     model=model) as p:
            for i in range(6):
                loss = model(torch.randn(8, 32)).pow(2).mean()
                opt.zero_grad(); loss.backward(); opt.step()
                p.step()
        print("API DONE")
    """)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items()
                                            if not k.startswith("TRACEKIT_")})
    assert proc.returncode == 0, proc.stderr
    assert "API DONE" in proc.stdout
    m = json.loads((tmp_path / "api_run" / "manifest.json").read_text())
    assert m["errors"] == [] and m["world_size"] == 1
    assert m["ranks"][0]["steps"] == [2, 3]
    assert m["model"]["ddp"] is None
    assert [u["module"] for u in m["model"]["forward_order"]] == ["0", "2"]
    run = tracekit.load_run(tmp_path / "api_run")
    names = run.events["name"].astype(str)
    assert run.steps() == [2, 3]
    assert (names == "tracekit.bwd:2").sum() == 2  # one per recorded step
