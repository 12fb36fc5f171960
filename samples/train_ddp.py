"""A real DDP training loop on synthetic data: CPU + gloo by default, CUDA + NCCL when a GPU
is there.

    torchrun --nproc_per_node 2 samples/train_ddp.py --model mlp --steps 20
    torchrun --nproc_per_node 2 samples/train_ddp.py --bucket-mb 4
    torchrun --nproc_per_node 2 samples/train_ddp.py --no-overlap
    tracekit profile --out runs/mlp -- torchrun --nproc_per_node 2 samples/train_ddp.py

Modes:
- default: DDP overlaps gradient all-reduces with backward (wait-free backprop), buckets
  of ``--bucket-mb`` (DDP's default when omitted: 25 MB, first bucket 1 MB).
- ``--no-overlap``: the backward runs under ``no_sync()`` (no communication), then the
  gradients are all-reduced in the same buckets DDP would use (reverse registration
  order, same size limits), one coalesced flat buffer per bucket, all issued after the
  backward in bucket order and then awaited. Same bytes and collectives as DDP, none of
  them overlapping the backward: what tracekit's ``overlap=off`` what-if predicts.

Prints ``step_ms median=... mean=... n=...`` (steps after the first two) on rank 0.
``--record-buckets FILE`` registers a DDP comm hook that records the buckets DDP really
all-reduces in the last step (then calls DDP's default all-reduce; values unchanged) and
writes them as JSON; ``--save-params FILE`` saves the final parameters (rank 0).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from workloads import (
    build_workload,
    ddp_style_buckets,
    finish_training,
    start_training,
    trainer_parser,
)


def parse_args(argv=None) -> argparse.Namespace:
    ap = trainer_parser(__doc__)
    ap.add_argument("--bucket-mb", type=float, default=None,
                    help="DDP bucket_cap_mb (default: DDP's 25 MB with a 1 MB first bucket)")
    ap.add_argument("--no-overlap", action="store_true",
                    help="all-reduce the gradients after backward, in DDP's buckets")
    ap.add_argument("--record-buckets", metavar="FILE", default=None)
    ap.add_argument("--save-params", metavar="FILE", default=None)
    ap.add_argument("--imbalance", metavar="RANK:FACTOR", default=None,
                    help="give one rank FACTOR times the batch (a straggler), e.g. 1:3")
    return ap.parse_args(argv)


def rank_batch(args, rank: int) -> int | None:
    """The per-rank batch: ``--batch``, scaled by ``--imbalance`` on its rank."""
    if not args.imbalance:
        return args.batch
    who, _, factor = args.imbalance.partition(":")
    base = args.batch or build_workload(args.model, hidden=args.hidden,
                                        layers=args.layers).batch
    return int(round(base * float(factor))) if int(who) == rank else base


def allreduce_after_backward(params, buckets, world: int) -> None:
    """--no-overlap: one coalesced all-reduce per DDP-style bucket, after backward."""
    pending = []
    for bucket in buckets:
        grads = [params[i].grad for i in bucket]
        flat = torch.cat([g.reshape(-1) for g in grads]).div_(world)
        pending.append((flat, grads, dist.all_reduce(flat, async_op=True)))
    for flat, grads, work in pending:
        work.wait()
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def train_step(ddp, opt, work, x, y, *, no_overlap: bool, buckets, world: int) -> None:
    """One step: DDP's overlapped all-reduces, or (``no_overlap``) the backward under
    ``no_sync()`` and then ``buckets`` all-reduced after it; then the optimizer."""
    opt.zero_grad(set_to_none=True)
    if no_overlap:
        with ddp.no_sync():
            work.loss(ddp(x), y).backward()
        allreduce_after_backward(list(ddp.module.parameters()), buckets, world)
    else:
        work.loss(ddp(x), y).backward()
    opt.step()


def bucket_recorder(model, steps: int, record: list):
    """A DDP comm hook that notes each bucket's parameters in the last step."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    index = {id(p): i for i, p in enumerate(model.parameters())}
    state = {"step": -1}

    def hook(process_group, bucket):
        if state["step"] == steps - 1:
            record.append({"index": bucket.index(),
                           "params": [index[id(p)] for p in bucket.parameters()]})
        return allreduce_hook(process_group, bucket)

    return hook, state


def main(argv=None) -> None:
    args = parse_args(argv)
    rank, world, device, work = start_training(args, batch_of=lambda r: rank_batch(args, r))
    model = work.model
    ddp = DDP(model, bucket_cap_mb=args.bucket_mb) if args.bucket_mb is not None else DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)
    params = list(model.parameters())
    buckets = ddp_style_buckets(params, args.bucket_mb)
    seen_buckets: list = []
    hook_state = None
    if args.record_buckets:
        hook, hook_state = bucket_recorder(model, args.steps, seen_buckets)
        ddp.register_comm_hook(None, hook)

    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        if hook_state is not None:
            hook_state["step"] = step
        x, y = work.batch_for(step, rank, args.seed, device)
        train_step(ddp, opt, work, x, y, no_overlap=args.no_overlap, buckets=buckets,
                   world=world)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)

    if rank == 0 and args.record_buckets:
        with open(args.record_buckets, "w") as fh:
            json.dump({"buckets": sorted(seen_buckets, key=lambda b: b["index"]),
                       "ddp_style": buckets}, fh)
    mode = "no-overlap" if args.no_overlap else "ddp"
    finish_training(rank, model, times_s=times, save_to=args.save_params,
                    header=f"train_ddp model={args.model} mode={mode} world={world} "
                           f"bucket_mb={args.bucket_mb} steps={args.steps}")


if __name__ == "__main__":
    main()
