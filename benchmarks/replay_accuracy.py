"""Baseline replay accuracy: profile fresh 2-rank gloo runs, replay them, print the error.

    .venv/bin/python benchmarks/replay_accuracy.py                       # profile + replay
    .venv/bin/python benchmarks/replay_accuracy.py --buckets 1,25 --no-overlap-too
    .venv/bin/python benchmarks/replay_accuracy.py --runs runs/a runs/b  # replay only
    .venv/bin/python benchmarks/replay_accuracy.py --skip-profile --gpu ../shared/traces/gpu/*.gz

For each configuration (DDP bucket size, and DDP with --no-overlap) it records a run with
``tracekit profile -- torchrun --nproc_per_node 2 samples/train_ddp.py --bucket-mb X``
(falling back to a plain torch.profiler script when ``samples/train_ddp.py`` is absent),
builds the graph, replays it and prints, per step, the measured and predicted step time
and the error, for two replays:

- ``baseline``: the graph as built by default (what ``tracekit replay`` prints and what-ifs
  start from): measured op durations, every dependency latency set to its typical value
  (median over steps at its position, :func:`tracekit.graph.edit.typical_delays`), so
  waiting is recreated from arrivals and nothing is copied. This is the accuracy figure.
- ``exact``: ``build_graph(run, delays="measured")``, each edge carrying its own measured
  gap. It reproduces the run by construction (0%): a consistency check of the graph only.

The GPU traces (``--gpu``; the shared ones by default) are replayed one rank at a time
with their collectives timed as measured. Targets: median |error| <= 3% per
configuration, every step <= 5%; GPU traces <= 3%.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.timeline import replay  # noqa: E402
from tracekit.core.run import load_run  # noqa: E402
from tracekit.graph.build import build_graph  # noqa: E402

FALLBACK = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    bucket, overlap = float(sys.argv[1]), sys.argv[2] == "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    r = dist.get_rank()
    m = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(16)])
    ddp = DDP(m, bucket_cap_mb=bucket)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    x = torch.randn(32, 512)
    sched = torch.profiler.schedule(wait=2, warmup=2, active=5)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
            schedule=sched, record_shapes=True,
            on_trace_ready=lambda p: p.export_chrome_trace(f"rank{r}.json")) as prof:
        for i in range(10):
            if overlap:
                ddp(x).sum().backward()
            else:
                with ddp.no_sync():
                    ddp(x).sum().backward()
                for p in m.parameters():
                    dist.all_reduce(p.grad)
            opt.step(); opt.zero_grad(); prof.step()
    dist.destroy_process_group()
""")


def profile(out: Path, bucket_mb: float, overlap: bool, model: str, steps: int) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tracekit = Path(sys.executable).with_name("tracekit")
    torchrun = Path(sys.executable).with_name("torchrun")
    trainer = ROOT / "samples" / "train_ddp.py"
    if trainer.exists() and tracekit.exists():
        cmd = [str(tracekit), "profile", "--overwrite", "--out", str(out), "--wait", "2",
               "--warmup", "2", "--steps", str(steps), "--", str(torchrun), "--standalone",
               "--nproc_per_node", "2", str(trainer), "--model", model,
               "--steps", str(steps + 6), "--bucket-mb", str(bucket_mb)]
        if not overlap:
            cmd.append("--no-overlap")
        subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=ROOT)
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.py").write_text(FALLBACK)
    subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "train.py",
                    str(bucket_mb), "1" if overlap else "0"], check=True, env=env, cwd=out,
                   capture_output=True)
    (out / "train.py").unlink()
    return out


def errors(res) -> dict[int, float]:
    return {s: (res.step_ms[s] - res.measured_step_ms[s]) / res.measured_step_ms[s] * 100
            for s in sorted(res.step_ms)}


def report(label: str, source) -> tuple[list[float], list[float]]:
    run = load_run(source)
    graph = build_graph(run)
    base = replay(run, graph)
    typ = replay(run, build_graph(run, delays="measured"))
    eb, et = errors(base), errors(typ)
    print(f"\n{label}: {len(run.ranks)} of {run.world_size} rank(s), {graph.n_nodes} nodes, "
          f"{int(graph.inferred.sum())} inferred edges")
    print(f"  {'step':>6} {'measured ms':>12} {'baseline ms':>12} {'err %':>7} "
          f"{'exact ms':>11} {'err %':>7}")
    for s in sorted(eb):
        print(f"  {s:>6} {base.measured_step_ms[s]:>12.3f} {base.step_ms[s]:>12.3f} "
              f"{eb[s]:>+7.2f} {typ.step_ms[s]:>11.3f} {et[s]:>+7.2f}")
    ab, at = [abs(v) for v in eb.values()], [abs(v) for v in et.values()]
    print(f"  median |err|: baseline {statistics.median(ab):.2f}%, exact "
          f"{statistics.median(at):.2f}%; worst step: baseline {max(ab):.2f}%, exact "
          f"{max(at):.2f}%")
    return ab, at


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--buckets", default="0.25,1,4,25,100", help="DDP bucket sizes, MB")
    p.add_argument("--no-overlap-too", action="store_true", default=True,
                   help="also profile --no-overlap at 25 MB (default on)")
    p.add_argument("--model", default="mlp", help="samples/train_ddp.py --model")
    p.add_argument("--steps", type=int, default=5, help="recorded steps per run")
    p.add_argument("--runs", nargs="*", default=[], help="replay these runs, do not profile")
    p.add_argument("--skip-profile", action="store_true", help="no fresh runs")
    p.add_argument("--keep", default="", help="keep the recorded runs in this folder")
    p.add_argument("--gpu", nargs="*", default=None,
                   help="GPU traces to replay (default: ../shared/traces/gpu/*.gz)")
    a = p.parse_args()
    table = []
    for r in a.runs:
        table.append((r, *report(r, r)))
    if not a.runs and not a.skip_profile:
        work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="tk-accuracy-"))
        configs = [(float(b), True) for b in a.buckets.split(",")]
        if a.no_overlap_too:
            configs.append((25.0, False))
        try:
            for bucket, overlap in configs:
                label = f"{a.model} bucket {bucket:g} MB" + ("" if overlap else " no-overlap")
                out = work / label.replace(" ", "_")
                print(f"profiling {label} ...", flush=True)
                profile(out, bucket, overlap, a.model, a.steps)
                table.append((label, *report(label, out)))
        finally:
            if not a.keep:
                shutil.rmtree(work, ignore_errors=True)
    gpu = a.gpu if a.gpu is not None else sorted(
        glob.glob(str(ROOT.parent / "shared" / "traces" / "gpu" / "*.gz")))
    groups: dict[str, list[str]] = {}
    for f in gpu:
        key = Path(f).name.split("_rank")[0] if "world128" in f else f
        groups.setdefault(key, []).append(f)
    for key, files in groups.items():
        label = Path(key).name
        table.append((label, *report(label, files if len(files) > 1 else files[0])))
    print("\nsummary: median |step error| and worst step, %")
    print(f"  {'run':<44} {'baseline':>9} {'worst':>7} {'exact':>9} {'worst':>7}")
    for label, ab, at in table:
        print(f"  {label[:44]:<44} {statistics.median(ab):>9.2f} {max(ab):>7.2f} "
              f"{statistics.median(at):>9.2f} {max(at):>7.2f}")


if __name__ == "__main__":
    main()
