"""A real FSDP2 (``fully_shard``) training loop on synthetic data: CPU + gloo by default,
CUDA + NCCL when a GPU is there.

    torchrun --nproc_per_node 2 samples/train_fsdp.py --model mlp --steps 20
    torchrun --nproc_per_node 2 samples/train_fsdp.py --no-reshard
    tracekit profile --out runs/fsdp -- torchrun --nproc_per_node 2 samples/train_fsdp.py

Every module of ``--unit`` class (default ``Linear``) and the root are wrapped with
``fully_shard``: a unit all-gathers its parameters before its forward (and, resharding
after forward, again before its backward) and reduce-scatters its gradients after its
backward. ``--no-reshard`` keeps the gathered parameters from forward to backward
(``reshard_after_forward=False``). Prints ``step_ms median=... mean=... n=...`` on rank 0.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.distributed.fsdp import fully_shard
from workloads import finish_training, start_training, trainer_parser


def parse_args(argv=None) -> argparse.Namespace:
    ap = trainer_parser(__doc__)
    ap.add_argument("--unit", default="Linear",
                    help="wrap every module of this class (and the root) with fully_shard")
    ap.add_argument("--no-reshard", action="store_true",
                    help="reshard_after_forward=False: no all-gather again in backward")
    return ap.parse_args(argv)


def shard(model: nn.Module, unit: str, reshard: bool) -> list[str]:
    """``fully_shard`` every module of class ``unit``, then the root; the wrapped names."""
    wrapped = []
    for name, module in model.named_modules():
        if name and type(module).__name__ == unit:
            fully_shard(module, reshard_after_forward=reshard)
            wrapped.append(name)
    if not wrapped:
        raise SystemExit(f"--unit {unit!r}: the model has no module of that class")
    fully_shard(model, reshard_after_forward=reshard)
    return wrapped


def main(argv=None) -> None:
    args = parse_args(argv)
    rank, world, device, work = start_training(args)
    model = work.model
    units = shard(model, args.unit, not args.no_reshard)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        x, y = work.batch_for(step, rank, args.seed, device)
        loss = work.loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    finish_training(rank, model, times_s=times,
                    header=f"train_fsdp model={args.model} world={world} units={len(units)} "
                           f"reshard={not args.no_reshard} steps={args.steps}")


if __name__ == "__main__":
    main()
