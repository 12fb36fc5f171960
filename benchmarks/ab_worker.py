"""Measure what-ifs for real with step-level interleaving: several trainers in one job.

    torchrun --nproc_per_node 2 benchmarks/ab_worker.py --variant bucket:4 --steps 120
    torchrun --nproc_per_node 2 benchmarks/ab_worker.py --variant no-overlap,dear,bucket:1

Separate runs of one configuration on this 2-core machine differ by 5-10% (thread
placement, the memory a process happens to get), so a ratio of two runs is that noisy
even with many steps each. Here the baseline (A: DDP with its defaults, 25 MB buckets,
the first one 1 MB) and the variant (B) are two copies of the same model, same weights
and data, trained side by side in the same processes, in the step order A B B A A B B A
... (so neither always follows the other). Each is the real training code of
``samples/``:

- ``bucket:MB``: DDP with ``bucket_cap_mb=MB`` (``samples/train_ddp.py --bucket-mb MB``);
- ``no-overlap``: DDP with a comm hook that holds every bucket until the end of
  backward, then all-reduces them in bucket order (``train_ddp.py --no-overlap``);
- ``dear`` / ``dear:MB``: the DeAR trainer (``samples/train_dear.py``, DDP's default
  buckets or ``MB`` buckets): reduce-scatter in backward, all-gather + update in the next
  forward;
- ``link:RATE``: the baseline trainer again, its steps run with the emulated link
  re-shaped to ``RATE`` (under ``benchmarks/cluster.py``; the baseline's steps run at the
  job's own rate, ``TRACEKIT_LINK``): what ``bandwidth=`` what-ifs predict;
- ``imbalance:RANK:FACTOR``: DDP's defaults with rank ``RANK``'s batch ``FACTOR`` times the
  others' (``train_ddp.py --imbalance RANK:FACTOR``), a straggler; as ``--baseline`` with
  ``--variant baseline`` it measures what ``stragglers=off`` predicts;
- ``fsdp:CLASS`` / ``fsdp-noreshard:CLASS``: FSDP2, ``fully_shard`` on every module of
  class ``CLASS`` and the root (``samples/train_fsdp.py --unit CLASS``, with
  ``--no-reshard``): what ``fsdp=CLASS`` (and ``fsdp=CLASS+reshard=off``) predict.

``--baseline`` takes the same forms (default ``baseline``: DDP's defaults), so
``--baseline fsdp:Linear --variant fsdp-noreshard:Linear`` measures ``reshard=off`` on an
FSDP run.

Several variants (``--variant a,b,c``) run in one job beside one baseline: each round runs
one block of ``--block`` consecutive steps of every side, in a shuffled order that the
next round reverses (B A C, C A B, A C B, B C A, ...), so a slow phase of the machine hits
every side alike, no side holds a fixed place, and the job's start-up is paid once.

A side is timed per block (the block's wall time over its steps): a DeAR step leaves its
reduce-scatters in flight for the next step's forward, so its steps alternate short and
long, and the median of single steps would fall between the two; a block ends with the
side drained, so its time per step is the steady state's.

Rank 0 prints, per variant, ``ab variant=V baseline_ms=... variant_ms=... speedup=...
n=...``: the median time per step of the baseline's and the variant's blocks after the
first ``--skip`` rounds, the median over rounds of the baseline/variant ratio within
the round (> 1: the variant is faster), and every round's ratio
(``benchmarks/measured_speedups.py`` pools them over jobs).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples"))
from train_ddp import make_ddp, rank_batch, train_step  # noqa: E402
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

    def __init__(self, work, *, bucket_mb: float | None, no_overlap: bool, lr: float) -> None:
        self.work = work
        self.ddp = make_ddp(work.model, bucket_mb=bucket_mb, no_overlap=no_overlap)
        self.opt = torch.optim.SGD(self.ddp.parameters(), lr=lr)

    def step(self, x, y) -> None:
        train_step(self.ddp, self.opt, self.work, x, y)


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


def _batch(variant: str, args) -> int | None:
    """This rank's batch on an ``imbalance:RANK:FACTOR`` side (None: the model's own), as
    ``train_ddp.py --imbalance RANK:FACTOR`` gives it."""
    if not variant.startswith("imbalance:"):
        return None
    spec = variant.partition(":")[2]
    who, _, factor = spec.partition(":")
    try:
        int(who), float(factor)
    except ValueError:
        raise SystemExit(f"--variant imbalance:RANK:FACTOR, e.g. imbalance:1:3, not "
                         f"{variant!r}") from None
    return rank_batch(argparse.Namespace(imbalance=spec, batch=None, model=args.model,
                                         hidden=None, layers=None), dist.get_rank())


def make_side(variant: str, args, world: int, device):
    work = build_workload(args.model, batch=_batch(variant, args), hidden=None, layers=None,
                          seed=args.seed)
    work.model.to(device)
    if variant == "baseline" or variant.startswith(("imbalance:", "link:")):
        return DDPSide(work, bucket_mb=None, no_overlap=False, lr=args.lr)
    if variant == "no-overlap":
        return DDPSide(work, bucket_mb=None, no_overlap=True, lr=args.lr)
    if variant == "dear" or variant.startswith("dear:"):
        mb = variant.partition(":")[2]
        return DearSide(work, world=world, lr=args.lr, bucket_mb=float(mb) if mb else None)
    if variant.startswith(("fsdp:", "fsdp-noreshard:")):
        kind, _, unit = variant.partition(":")
        return FSDPSide(work, unit=unit, reshard=kind == "fsdp", lr=args.lr)
    if variant.startswith("bucket:"):
        return DDPSide(work, bucket_mb=float(variant.partition(":")[2]), no_overlap=False,
                       lr=args.lr)
    raise SystemExit(f"--variant must be bucket:MB, no-overlap, dear, dear:MB, link:RATE, "
                     f"imbalance:RANK:FACTOR, fsdp:CLASS or fsdp-noreshard:CLASS, not "
                     f"{variant!r}")


def link_switcher(variants: list[str], rank: int):
    """When a variant is ``link:RATE``: a function ``switch(side)`` that shapes the emulated
    link to that side's rate (the job's own, ``TRACEKIT_LINK``, for every other side)
    before its block; else None."""
    if not any(v.startswith("link:") for v in variants):
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cluster

    own = os.environ.get("TRACEKIT_LINK", "")
    if not own or not os.environ.get("TRACEKIT_NETNS"):
        raise SystemExit("--variant link:RATE runs under benchmarks/cluster.py (it re-shapes "
                         "the emulated link); e.g. python benchmarks/cluster.py --link 4gbit "
                         "-- torchrun --nproc_per_node 2 benchmarks/ab_worker.py --variant "
                         "link:8gbit")
    rates = [own] + [v.partition(":")[2] if v.startswith("link:") else own for v in variants]
    current = [None]

    def switch(side: int) -> None:
        if rates[side] == current[0]:
            return
        if rank == 0:
            cluster.shape(rates[side])
        current[0] = rates[side]
        dist.barrier()

    return switch


def round_order(n_sides: int, round_index: int, seed: int = 0) -> list[int]:
    """Sides in one round: a shuffled order, the same on every rank, whose reverse is the
    next round's (P, reversed P, Q, reversed Q, ...).

    The reversal makes a steady drift of the machine hit every side alike over two rounds;
    the shuffle keeps any one side from holding a fixed place: with a fixed order the
    baseline would always run twice in a row where rounds turn (... C B A, A B C ...), its
    second block warm from its own first. In three jobs (mlp, 4 Gbit/s, 16 steps a side)
    the baseline's median block was 0.2, 2.3 and 4.1% faster than three identical copies
    of itself run beside it (the fixed order's ``run_rounds``, every block's time printed:
    README, "How what-if accuracy is measured")."""
    order = list(range(n_sides))
    random.Random(seed * 1_000_003 + round_index // 2).shuffle(order)
    return order if round_index % 2 == 0 else order[::-1]


def run_rounds(sides: list, rounds: int, block: int, rank: int, seed: int, device,
               switch) -> list[list[float]]:
    """Time per step of every side's block in every round (see the module doc)."""
    times: list[list[float]] = [[] for _ in sides]
    step = 0
    for r in range(rounds):
        for which in round_order(len(sides), r, seed):
            side = sides[which]
            if switch is not None:
                switch(which)
            t0 = time.perf_counter()
            for _ in range(block):
                x, y = side.work.batch_for(step, rank, seed, device)
                side.step(x, y)
                step += 1
            if hasattr(side, "drain"):
                side.drain()  # nothing of this side may run during another's block
            times[which].append((time.perf_counter() - t0) / block)
    return times


def summarize(variants: list[str], times: list[list[float]], skip: int) -> list[str]:
    """One ``ab ...`` line per variant (see the module doc), ending with every round's
    ratio (``rounds=r1,r2,...``) for pooling over jobs."""
    base = times[0][skip:] or times[0]
    lines = []
    for v, t in zip(variants, times[1:]):
        t = t[skip:] or t
        ratios = [a / b for a, b in zip(base, t)]
        lines.append(f"ab variant={v} baseline_ms={statistics.median(base) * 1000:.3f} "
                     f"variant_ms={statistics.median(t) * 1000:.3f} "
                     f"speedup={statistics.median(ratios):.4f} n={len(ratios)} "
                     f"rounds={','.join(f'{r:.4f}' for r in ratios)}")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", required=True,
                    help="one or more (comma-separated) of baseline, bucket:MB, no-overlap, "
                         "dear, dear:MB, link:RATE, imbalance:RANK:FACTOR, fsdp:CLASS, "
                         "fsdp-noreshard:CLASS")
    ap.add_argument("--baseline", default="baseline",
                    help="side A: baseline (DDP's defaults) or any --variant form")
    ap.add_argument("--model", choices=list(MODELS), default="mlp")
    ap.add_argument("--steps", type=int, default=120,
                    help="steps of each side in all (rounds = steps / block)")
    ap.add_argument("--block", type=int, default=2, help="consecutive steps of one side")
    ap.add_argument("--skip", type=int, default=2, help="first rounds left out")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variant.split(",") if v.strip()]
    rank, world, device = init_distributed(None)
    sides = [make_side(v, args, world, device) for v in [args.baseline, *variants]]
    switch = link_switcher(variants, rank)
    rounds = max(args.steps // args.block, args.skip + 3)
    times = run_rounds(sides, rounds, args.block, rank, args.seed, device, switch)
    if rank == 0:
        for line in summarize(variants, times, args.skip):
            print(line, flush=True)
    finish_distributed()


if __name__ == "__main__":
    main()
