"""A real DDP training loop on synthetic data: CPU + gloo by default, CUDA + NCCL when a GPU
is there.

    torchrun --nproc_per_node 2 samples/train_ddp.py --model mlp --steps 20
    torchrun --nproc_per_node 2 samples/train_ddp.py --bucket-mb 4
    torchrun --nproc_per_node 2 samples/train_ddp.py --no-overlap
    tracekit profile --out runs/mlp -- torchrun --nproc_per_node 2 samples/train_ddp.py

Modes:
- default: DDP overlaps gradient all-reduces with backward (wait-free backprop), buckets
  of ``--bucket-mb`` (DDP's default when omitted: 25 MB, first bucket 1 MB).
- ``--no-overlap``: DDP itself, with a comm hook (:func:`deferred_allreduce_hook`) that holds
  every bucket DDP hands it until the last one (the end of backward) and then issues
  their all-reduces in bucket order. Same buckets, bytes, copies and collectives as DDP,
  none of them overlapping the backward: what tracekit's ``overlap=off`` what-if
  predicts.

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


def deferred_allreduce_hook(held: list, bucket):  # DDP checks the return annotation: none
    """``--no-overlap``: a DDP comm hook (state: a list) that starts no communication
    during backward. Each bucket DDP hands over (as its gradients become ready) gets a
    future that is not yet complete; when the last bucket arrives, every held bucket is
    averaged and all-reduced, in bucket order, and its future completes with the result.
    DDP waits for the futures and copies the results back into the gradients as usual."""
    done = torch.futures.Future()
    held.append((bucket.buffer(), done))
    if bucket.is_last():
        world = dist.get_world_size()
        for buf, fut in held:
            buf.div_(world)
            work = dist.all_reduce(buf, async_op=True)
            work.get_future().then(lambda w, fut=fut: fut.set_result(w.value()[0]))
        held.clear()
    return done


def train_step(ddp, opt, work, x, y) -> None:
    """One step: forward, backward (DDP's all-reduces, overlapped or deferred by its comm
    hook), the optimizer."""
    opt.zero_grad(set_to_none=True)
    work.loss(ddp(x), y).backward()
    opt.step()


def make_ddp(model, *, bucket_mb: float | None, no_overlap: bool) -> DDP:
    """DDP with ``bucket_cap_mb`` (DDP's default when None); ``no_overlap``: with
    :func:`deferred_allreduce_hook`."""
    ddp = DDP(model, bucket_cap_mb=bucket_mb) if bucket_mb is not None else DDP(model)
    if no_overlap:
        ddp.register_comm_hook([], deferred_allreduce_hook)
    return ddp


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
    if args.no_overlap and args.record_buckets:
        raise SystemExit("--record-buckets and --no-overlap both register a DDP comm hook; "
                         "use one of them")
    ddp = make_ddp(model, bucket_mb=args.bucket_mb, no_overlap=args.no_overlap)
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
        train_step(ddp, opt, work, x, y)
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
