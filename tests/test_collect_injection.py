"""How the collector gets into a job: which processes arm it, the environment the
command gets, the injected sitecustomize (chaining to an existing one) and the post-import
hook. No torch needed: these run before (or without) torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from collectors.activation import decide, is_launcher, rank_from_env
from collectors.bootstrap import call_after_import
from collectors.config import (
    ENV_OWNER_PID,
    ENV_RUN_DIR,
    ENV_SITE_DIR,
    CollectorConfig,
)
from collectors.launch import child_env, exit_code_of, site_dir

PY = "/venv/bin/python3"


@pytest.mark.parametrize(("argv", "launcher"), [
    ([PY, "/venv/bin/torchrun", "--nproc_per_node", "2", "train.py"], True),
    ([PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py"], True),
    ([PY, "-mtorch.distributed.launch", "train.py"], True),
    ([PY, "-u", "/site/torch/distributed/run.py", "train.py"], True),
    ([PY, "train.py", "--launcher", "torchrun"], False),
    ([PY, "-u", "samples/train_ddp.py"], False),
    ([PY, "-m", "mypkg.train"], False),
    ([PY, "-c", "import torch"], False),
])
def test_launcher_detection(argv, launcher):
    assert is_launcher(argv) is launcher


def test_activation_rules():
    on = {ENV_RUN_DIR: "/runs/x"}
    rank_proc = [PY, "train.py"]
    assert not decide({}, rank_proc, 10).active
    a = decide({**on, "RANK": "3"}, rank_proc, 10)
    assert a.active and a.rank == 3
    single = decide(on, rank_proc, 10)
    assert single.active and single.rank == 0
    launcher = decide(on, [PY, "/venv/bin/torchrun", "train.py"], 10)
    assert not launcher.active and "launcher" in launcher.reason
    # a data-loader worker of rank 1 (same rank, another pid) stays off
    child = decide({**on, "RANK": "1", ENV_OWNER_PID: "9:1"}, rank_proc, 10)
    assert not child.active and "child" in child.reason
    assert not decide({**on, ENV_OWNER_PID: "9:"}, rank_proc, 10).active
    assert decide({**on, "RANK": "1", ENV_OWNER_PID: "10:1"}, rank_proc, 10).active
    # ranks started by a Python launcher that armed itself (accelerate, deepspeed) are on
    assert decide({**on, "RANK": "1", ENV_OWNER_PID: "9:"}, rank_proc, 10).active
    mp = decide({**on, "RANK": "1"}, [PY, "-c", "from multiprocessing.spawn import "
                                       "spawn_main; spawn_main()", "--multiprocessing-fork"], 10)
    assert not mp.active


def test_rank_variables_of_other_launchers():
    assert rank_from_env({"OMPI_COMM_WORLD_RANK": "5"}) == 5
    assert rank_from_env({"SLURM_PROCID": "7", "RANK": "2"}) == 2
    assert rank_from_env({"RANK": "not-a-number"}) is None


def test_config_round_trips_through_the_environment():
    cfg = CollectorConfig(run_dir="/abs/run", wait=1, warmup=0, active=4, record_shapes=False,
                          annotate=False)
    back = CollectorConfig.from_env(cfg.to_env())
    assert back == cfg
    assert CollectorConfig.from_env({}) is None
    with pytest.raises(ValueError):
        CollectorConfig(run_dir="/x", active=0)


def test_child_env_puts_the_site_dir_first_and_keeps_the_rest():
    cfg = CollectorConfig(run_dir="/abs/run")
    env = child_env(cfg, {"PYTHONPATH": "/mine:/other", "HOME": "/root", ENV_OWNER_PID: "5"})
    parts = env["PYTHONPATH"].split(os.pathsep)
    assert parts == [str(site_dir()), "/mine", "/other"]
    assert (site_dir() / "sitecustomize.py").is_file()
    assert env[ENV_RUN_DIR] == "/abs/run" and env[ENV_SITE_DIR] == str(site_dir())
    assert env["HOME"] == "/root" and ENV_OWNER_PID not in env
    # applying twice does not stack the site dir
    again = child_env(cfg, env)["PYTHONPATH"].split(os.pathsep)
    assert again.count(str(site_dir())) == 1


def test_exit_codes_follow_the_shell_convention():
    assert exit_code_of(0) == 0
    assert exit_code_of(3) == 3
    assert exit_code_of(-2) == 130  # killed by SIGINT
    assert exit_code_of(-9) == 137


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)


def test_injected_sitecustomize_chains_and_stays_passive_without_torch(tmp_path):
    """A site's own sitecustomize still runs; a process that never imports torch is not
    slowed down by torch and leaves nothing in the run folder."""
    site_own = tmp_path / "own_site"
    site_own.mkdir()
    marker = tmp_path / "own_sitecustomize_ran"
    (site_own / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('yes')\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRACEKIT_")}
    base["PYTHONPATH"] = str(site_own)
    env = child_env(CollectorConfig(run_dir=str(run_dir)), base)
    code = textwrap.dedent("""
        import json, os, sys, sitecustomize
        print(json.dumps({"file": sitecustomize.__file__,
                          "torch": "torch" in sys.modules,
                          "owner": os.environ.get("TRACEKIT_OWNER_PID"),
                          "pid": os.getpid()}))
    """)
    proc = _run_python(code, env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["file"] == str(site_dir() / "sitecustomize.py")
    assert marker.read_text() == "yes"
    assert info["torch"] is False
    assert info["owner"] == f"{info['pid']}:"  # armed (a rank-like process) ...
    assert list(run_dir.iterdir()) == []  # ... but it never stepped: nothing written


def test_injected_sitecustomize_survives_a_broken_site_customization(tmp_path):
    site_own = tmp_path / "own_site"
    site_own.mkdir()
    (site_own / "sitecustomize.py").write_text("raise RuntimeError('broken site')\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRACEKIT_")}
    base["PYTHONPATH"] = str(site_own)
    env = child_env(CollectorConfig(run_dir=str(tmp_path / "run")), base)
    proc = _run_python("print('job ran')", env)
    assert proc.returncode == 0
    assert proc.stdout.strip() == "job ran"
    assert "broken site" in proc.stderr


def test_post_import_hook_runs_after_the_module_and_removes_itself(tmp_path, monkeypatch):
    pkg = tmp_path / "tk_fake_heavy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("READY = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    def callback(module):
        seen.append(getattr(module, "READY", False))

    before = list(sys.meta_path)
    call_after_import("tk_fake_heavy", callback)
    assert len(sys.meta_path) == len(before) + 1
    try:
        import tk_fake_heavy  # noqa: F401

        assert seen == [True]  # called once, after the module body ran
        assert sys.meta_path == before
        call_after_import("tk_fake_heavy", callback)  # already imported: called at once
        assert seen == [True, True]
    finally:
        sys.modules.pop("tk_fake_heavy", None)
        sys.meta_path[:] = before
