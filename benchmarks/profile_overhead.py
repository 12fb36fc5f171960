"""Profiler overhead of ``tracekit profile``: step time with vs. without the profiler.

Three measurements:

1. interleaved A/B runs (A B A B ...) of ``samples/train_ddp.py`` on 2 gloo ranks:
   A plain, B under ``tracekit profile`` with (nearly) every step profiled; each run
   prints its median step time, and the figure is the median of the B/A ratios of
   neighbouring pairs (absolute times drift on a shared machine, ratios much less);
2. what ``tracekit profile`` records in every manifest (``overhead.ratio``): median of
   the profiled steps vs. median of the unprofiled steps before and after the window,
   within one run, with the default schedule (wait 3, warmup 2, active 5);
3. ``--in-process``: one process, no communication, the 16 x Linear(512, 512) MLP; blocks
   of K unprofiled steps alternate with blocks of K steps under ``torch.profiler``
   (``record_shapes``, plus tracekit's module annotations), the figure is the median of
   the per-block ratios. Neighbouring blocks are seconds apart, so machine load that
   drifts between whole runs mostly cancels: the most stable figure on a shared machine.

    .venv/bin/python benchmarks/profile_overhead.py [--pairs 3] [--steps 24] [--model mlp]
    .venv/bin/python benchmarks/profile_overhead.py --in-process [--blocks 15] [--block-steps 5]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
_MEDIAN = re.compile(r"step_ms median=([0-9.]+)")


def _median_step_ms(cmd: list[str]) -> float:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(_MEDIAN.search(proc.stdout).group(1))


def in_process(blocks: int, block_steps: int) -> None:
    import time

    import torch

    from collectors.annotations import ModuleAnnotator
    from collectors.model_meta import ModelRecorder

    torch.manual_seed(0)
    layers = []
    for _ in range(16):
        layers += [torch.nn.Linear(512, 512), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 512), torch.randn(32, 512)

    def step() -> float:
        t = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    rec = ModelRecorder(model)
    for _ in range(5):
        step()
    annotator = ModuleAnnotator(rec, print)
    ratios = []
    for _ in range(blocks):
        plain = statistics.median(step() for _ in range(block_steps))
        annotator.enable()
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                      record_shapes=True)
        prof.start()
        step()  # the first profiled step pays the profiler's start-up
        profiled = statistics.median(step() for _ in range(block_steps))
        prof.stop()
        annotator.disable()
        ratios.append(profiled / plain)
    print(f"in-process: median profiled/plain step ratio {statistics.median(ratios):.3f} "
          f"over {blocks} blocks of {block_steps} steps (quartiles "
          f"{statistics.quantiles(ratios, n=4)[0]:.3f}..{statistics.quantiles(ratios, n=4)[2]:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--in-process", action="store_true")
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--block-steps", type=int, default=5)
    args = ap.parse_args()
    if args.in_process:
        in_process(args.blocks, args.block_steps)
        return
    train = [*TORCHRUN, str(REPO / "samples/train_ddp.py"), "--model", args.model,
             "--steps", str(args.steps)]
    tracekit = [sys.executable, "-m", "tracekit", "profile", "--overwrite"]
    ratios, manifest_ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            plain = _median_step_ms(train)
            # profile iterations 2 .. steps-3: nearly all of those the script's median covers
            profiled = _median_step_ms([*tracekit, "--out", f"{tmp}/ab", "--wait", "0",
                                        "--warmup", "1", "--steps", str(args.steps - 4),
                                        "--", *train])
            ratios.append(profiled / plain)
            _median_step_ms([*tracekit, "--out", f"{tmp}/default", "--", *train])
            m = json.loads(Path(f"{tmp}/default/manifest.json").read_text())
            manifest_ratios.append(m["overhead"]["ratio"])
            print(f"pair {i}: plain {plain:.1f} ms, profiled {profiled:.1f} ms, "
                  f"ratio {ratios[-1]:.3f}; in-run manifest ratio {manifest_ratios[-1]:.3f} "
                  f"({m['overhead']['profiled_step_ms']:.1f} vs "
                  f"{m['overhead']['unprofiled_step_ms']:.1f} ms)", flush=True)
    print(f"interleaved A/B: median profiled/plain step ratio {statistics.median(ratios):.3f} "
          f"over {len(ratios)} pairs")
    print(f"manifest overhead.ratio: median {statistics.median(manifest_ratios):.3f}")


if __name__ == "__main__":
    main()
