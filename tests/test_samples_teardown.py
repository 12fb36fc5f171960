"""The sample trainers' shared teardown (samples/workloads.finish_distributed): after it,
gloo's worker threads are idle, so none is still dropping a collective launched in
backward (which needs the GIL) when the interpreter shuts down; that race aborted a
trainer with ``terminate called without an active exception`` about once in 20 runs
on a loaded machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

@pytest.mark.torch
def test_idle_wait_without_gloo_returns_at_once():
    """In a fresh process (this one may hold process groups of other tests)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import workloads\n"
            "assert workloads._gloo_worker_states() == []\n"
            "assert workloads.wait_for_idle_gloo_workers(timeout_s=5.0) is True\n")
    proc = subprocess.run([sys.executable, "-c", code, str(SAMPLES)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


_JOB = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {samples!r})
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    import workloads
    rank, world, device = workloads.init_distributed("gloo")
    work = workloads.build_workload("mlp", hidden=64, layers=5)
    ddp = DDP(work.model, bucket_cap_mb=0.02)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    for step in range(4):  # every bucket's all-reduce is launched inside backward
        x, y = work.batch_for(step, rank, 0, device)
        opt.zero_grad()
        work.loss(ddp(x), y).backward()
        opt.step()
    workloads.finish_distributed()
    with open(os.path.join({out!r}, f"rank{{rank}}.json"), "w") as fh:
        json.dump(workloads._gloo_worker_states(), fh)
""")


@pytest.mark.torch
@pytest.mark.slow
def test_finish_distributed_leaves_the_gloo_workers_idle(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(_JOB.format(samples=str(SAMPLES), out=str(tmp_path)))
    proc = subprocess.run([*TORCHRUN, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        states = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert states and all(s == "S" for s in states), states  # blocked waiting for work
