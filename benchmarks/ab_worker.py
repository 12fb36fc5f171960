"""Measure a what-if for real with step-level interleaving: two trainers in one job.

    torchrun --nproc_per_node 2 benchmarks/ab_worker.py --variant bucket:4 --steps 120
    torchrun --nproc_per_node 2 benchmarks/ab_worker.py --variant no-overlap
    torchrun --nproc_per_node 2 benchmarks/ab_worker.py --variant dear

Separate runs of one configuration on this 2-core machine differ by 5-10% (thread
placement, the memory a process happens to get), so a ratio of two runs is that noisy
even with many steps each. Here the baseline (A: DDP with its defaults, 25 MB buckets,
the first one 1 MB) and the variant (B) are two copies of the same model, same weights
and data, trained side by side in the same processes, in the step order A B B A A B B A
... (so neither always follows the other). Each is the real training code of
``samples/``:

- ``bucket:MB``: DDP with ``bucket_cap_mb=MB`` (``samples/train_ddp.py --bucket-mb MB``);
- ``no-overlap``: DDP under ``no_sync()``, then DDP's buckets all-reduced after the
  backward (``train_ddp.py --no-overlap``);
- ``dear`` / ``dear:MB``: the DeAR trainer (``samples/train_dear.py``, DDP's default
  buckets or ``MB`` buckets): reduce-scatter in backward, all-gather + update in the next
  forward;
- ``link:RATE``: the baseline trainer again, its steps run with the emulated link
  re-shaped to ``RATE`` (under ``benchmarks/cluster.py``; the baseline's steps run at the
  job's own rate, ``TRACEKIT_LINK``): what ``bandwidth=`` what-ifs predict;
- ``fsdp:CLASS`` / ``fsdp-noreshard:CLASS``: FSDP2, ``fully_shard`` on every module of
  class ``CLASS`` and the root (``samples/train_fsdp.py --unit CLASS``, with
  ``--no-reshard``): what ``fsdp=CLASS`` (and ``fsdp=CLASS+reshard=off``) predict.

``--baseline`` takes the same forms (default ``baseline``: DDP's defaults), so
``--baseline fsdp:Linear --variant fsdp-noreshard:Linear`` measures ``reshard=off`` on an
FSDP run.

Rank 0 prints ``ab baseline_ms=... variant_ms=... speedup=... n=...``: each side's median
step time over its steps after the first ``--skip``, and their ratio (baseline / variant,
> 1: the variant is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples"))
from train_ddp import train_step  # noqa: E402
from train_dear import DearTrainer  # noqa: E402
from train_fsdp import shard  # noqa: E402
from workloads import (  # noqa: E402
    MODELS,
    build_workload,
    ddp_style_buckets,
    finish_distributed,
    init_distributed,
)


class DDPSide:
    """One DDP-trained copy of the model (the baseline, a bucket size, or no overlap)."""

    def __init__(self, work, *, bucket_mb: float | None, no_overlap: bool, world: int,
                 lr: float) -> None:
        self.work, self.no_overlap, self.world = work, no_overlap, world
        model = work.model
        self.ddp = DDP(model, bucket_cap_mb=bucket_mb) if bucket_mb is not None else DDP(model)
        self.opt = torch.optim.SGD(self.ddp.parameters(), lr=lr)
        self.buckets = ddp_style_buckets(list(model.parameters()), bucket_mb)

    def step(self, x, y) -> None:
        train_step(self.ddp, self.opt, self.work, x, y, no_overlap=self.no_overlap,
                   buckets=self.buckets, world=self.world)


class DearSide:
    """The DeAR-trained copy (``samples/train_dear.py``'s trainer)."""

    def __init__(self, work, *, world: int, lr: float, bucket_mb: float | None = None) -> None:
        self.work = work
        with torch.no_grad():  # start from rank 0's weights, as DDP does
            for p in work.model.parameters():
                dist.broadcast(p, 0)
        buckets = ddp_style_buckets(list(work.model.parameters()), bucket_mb)
        self.trainer = DearTrainer(work.model, buckets, world=world, lr=lr, momentum=0.0)

    def step(self, x, y) -> None:
        loss = self.work.loss(self.work.model(x), y)
        self.trainer.install_forward_hooks()
        loss.backward()

    def drain(self) -> None:
        """Wait for the reduce-scatters still in flight, so they do not run beside the
        other side's step (DeAR would wait for them at its next forward anyway: the
        first module uses the last bucket's parameters, whose reduce-scatter is last)."""
        for b in self.trainer.buckets:
            if b.reduce_scatter is not None:
                b.reduce_scatter.wait()


class FSDPSide:
    """One FSDP2-wrapped copy (``samples/train_fsdp.py``'s wrapping and step)."""

    def __init__(self, work, *, unit: str, reshard: bool, lr: float) -> None:
        self.work = work
        with torch.no_grad():  # start from rank 0's weights, as DDP does
            for p in work.model.parameters():
                dist.broadcast(p, 0)
        shard(work.model, unit, reshard)
        self.opt = torch.optim.SGD(work.model.parameters(), lr=lr)

    def step(self, x, y) -> None:
        loss = self.work.loss(self.work.model(x), y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()


def make_side(variant: str, args, world: int, device):
    work = build_workload(args.model, batch=None, hidden=None, layers=None, seed=args.seed)
    work.model.to(device)
    if variant == "baseline":
        return DDPSide(work, bucket_mb=None, no_overlap=False, world=world, lr=args.lr)
    if variant == "no-overlap":
        return DDPSide(work, bucket_mb=None, no_overlap=True, world=world, lr=args.lr)
    if variant == "dear" or variant.startswith("dear:"):
        mb = variant.partition(":")[2]
        return DearSide(work, world=world, lr=args.lr, bucket_mb=float(mb) if mb else None)
    if variant.startswith("link:"):
        return DDPSide(work, bucket_mb=None, no_overlap=False, world=world, lr=args.lr)
    if variant.startswith(("fsdp:", "fsdp-noreshard:")):
        kind, _, unit = variant.partition(":")
        return FSDPSide(work, unit=unit, reshard=kind == "fsdp", lr=args.lr)
    if variant.startswith("bucket:"):
        return DDPSide(work, bucket_mb=float(variant.partition(":")[2]), no_overlap=False,
                       world=world, lr=args.lr)
    raise SystemExit(f"--variant must be bucket:MB, no-overlap, dear, dear:MB, link:RATE, "
                     f"fsdp:CLASS or fsdp-noreshard:CLASS, not {variant!r}")


def link_switcher(variant: str, rank: int):
    """For ``link:RATE``: a function ``switch(side)`` that re-shapes the emulated link to
    the job's rate (side 0) or to RATE (side 1) before that side's steps; else None."""
    if not variant.startswith("link:"):
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cluster

    rates = (os.environ.get("TRACEKIT_LINK", ""), variant.partition(":")[2])
    if not rates[0] or not os.environ.get("TRACEKIT_NETNS"):
        raise SystemExit("--variant link:RATE runs under benchmarks/cluster.py (it re-shapes "
                         "the emulated link); e.g. python benchmarks/cluster.py --link 4gbit "
                         "-- torchrun --nproc_per_node 2 benchmarks/ab_worker.py --variant "
                         "link:8gbit")

    def switch(side: int) -> None:
        if rank == 0:
            cluster.shape(rates[side])
        dist.barrier()

    return switch


def order(steps: int) -> list[int]:
    """0 = baseline, 1 = variant: A B B A A B B A ..."""
    return [(i + 1) // 2 % 2 for i in range(steps)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", required=True,
                    help="bucket:MB, no-overlap, dear, dear:MB or link:RATE")
    ap.add_argument("--baseline", default="baseline",
                    help="side A: baseline (DDP's defaults) or any --variant form")
    ap.add_argument("--model", choices=list(MODELS), default="mlp")
    ap.add_argument("--steps", type=int, default=120, help="steps in all (both sides)")
    ap.add_argument("--skip", type=int, default=4, help="first steps of each side left out")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rank, world, device = init_distributed(None)
    sides = [make_side(args.baseline, args, world, device),
             make_side(args.variant, args, world, device)]
    times: list[list[float]] = [[], []]
    plan = order(args.steps)
    switch = link_switcher(args.variant, rank)
    for i, which in enumerate(plan):
        side = sides[which]
        if switch is not None and (i == 0 or plan[i - 1] != which):
            switch(which)
        x, y = side.work.batch_for(i // 2, rank, args.seed, device)
        t0 = time.perf_counter()
        side.step(x, y)
        if i + 1 < len(plan) and plan[i + 1] != which and hasattr(side, "drain"):
            side.drain()  # nothing of this side may run during the other's step
        times[which].append(time.perf_counter() - t0)
    for side in sides:
        if hasattr(side, "drain"):
            side.drain()  # no collective may be in flight at teardown
    if rank == 0:
        a, b = (statistics.median(t[args.skip:] or t) * 1000 for t in times)
        n = min(len(t[args.skip:]) for t in times)
        print(f"ab baseline={args.baseline} variant={args.variant} baseline_ms={a:.3f} variant_ms={b:.3f} "
              f"speedup={a / b:.4f} n={n}", flush=True)
    finish_distributed()


if __name__ == "__main__":
    main()
