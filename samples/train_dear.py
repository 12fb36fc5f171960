"""A DeAR-style trainer (DeAR, ICDCS 2023): each bucket's all-reduce is split into a
reduce-scatter that overlaps the backward and an all-gather that runs in the next
step's forward, just before the first module that needs those parameters.

    torchrun --nproc_per_node 2 samples/train_dear.py --model mlp --steps 20
    tracekit profile --out runs/dear -- torchrun --nproc_per_node 2 samples/train_dear.py

Per step, for each bucket (DDP's buckets: reverse registration order, first bucket 1 MB
when ``--bucket-mb`` is left at DDP's default, closed at the cap; see
``workloads.ddp_style_buckets``):

1. backward: a post-accumulate-grad hook on every parameter; when the bucket's last
   gradient is ready, the gradients are copied into one flat buffer (padded to a multiple
   of the world size), divided by the world size, and
   ``dist.reduce_scatter_tensor(..., async_op=True)`` (``reduce_scatter_single`` in torch
   2.13) is launched: this rank now owns the
   averaged gradient of one shard of the bucket.
2. next forward: a forward pre-hook on the first module (in forward order) that uses any
   parameter of the bucket waits for the reduce-scatter, launches
   ``dist.all_gather_into_tensor(..., async_op=True)`` (``all_gather_single``), waits
   for it, and applies the SGD update (with momentum when ``--momentum``) to the
   bucket's parameters from the gathered averaged gradient. Then the module runs with updated parameters.
3. after the last step, pending updates are applied (same order), so the final
   parameters are exactly those DDP + SGD would have after the same steps.

On gloo, ``reduce_scatter_tensor`` is implemented as a full all-reduce plus a local copy
(the trace shows ``c10d::_reduce_scatter_base_`` launching ``gloo:all_reduce``), so it
moves all-reduce bytes and DeAR on gloo pays all-reduce + all-gather. ``--rs-via-alltoall``
does a true reduce-scatter instead: ``all_to_all_single`` (each rank receives every peer's
copy of its shard: (n-1)/n of the bytes, as a ring reduce-scatter) and a local sum when
the bucket is needed. Same numbers either way.

No optimizer object: the loop calls ``collectors.step()`` (when tracekit is installed) to
mark step boundaries for ``tracekit profile``. Prints ``step_ms median=...`` on rank 0.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn
from workloads import (
    ForwardOrder,
    ddp_style_buckets,
    finish_training,
    start_training,
    trainer_parser,
)

# torch 2.13 renamed reduce_scatter_tensor / all_gather_into_tensor (same signatures)
reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

try:  # mark step boundaries for `tracekit profile` (a no-op when not profiled)
    from collectors import step as mark_step
except ImportError:  # tracekit is not installed: run unprofiled
    def mark_step() -> None:
        pass


class DearBucket:
    """One bucket's flat buffers and in-flight collectives."""

    def __init__(self, index: int, params: list[nn.Parameter], world: int) -> None:
        self.index = index
        self.params = params
        self.numel = sum(p.numel() for p in params)
        padded = -(-self.numel // world) * world
        like = params[0]
        self.flat = torch.zeros(padded, dtype=like.dtype, device=like.device)
        self.shard = torch.empty(padded // world, dtype=like.dtype, device=like.device)
        self.gathered = torch.empty_like(self.flat)
        self.received: torch.Tensor | None = None  # --rs-via-alltoall: every peer's shard
        self.momentum_buf: torch.Tensor | None = None
        self.ready = 0
        self.reduce_scatter = None


class DearTrainer:
    def __init__(self, model: nn.Module, buckets: list[list[int]], *, world: int, lr: float,
                 momentum: float, rs_via_alltoall: bool = False) -> None:
        self.model = model
        self.rs_via_alltoall = rs_via_alltoall
        self.world = world
        self.lr = lr
        self.momentum = momentum
        params = list(model.parameters())
        self.buckets = [DearBucket(b, [params[i] for i in idx], world)
                        for b, idx in enumerate(buckets)]
        self.bucket_of = {}
        for b, idx in zip(self.buckets, buckets):
            for i in idx:
                self.bucket_of[i] = b
        for i, p in enumerate(params):
            p.register_post_accumulate_grad_hook(self._grad_ready(self.bucket_of[i]))
        self.order = ForwardOrder(model)
        self._prehooks_installed = False

    # ----- backward: reduce-scatter as soon as a bucket is complete -----------------------
    def _grad_ready(self, bucket: DearBucket):
        def hook(_param):
            bucket.ready += 1
            if bucket.ready < len(bucket.params):
                return
            bucket.ready = 0
            offset = 0
            with torch.no_grad():
                for p in bucket.params:
                    n = p.numel()
                    bucket.flat[offset:offset + n].copy_(p.grad.reshape(-1))
                    offset += n
                    p.grad = None
                bucket.flat.div_(self.world)
            if self.rs_via_alltoall:
                if bucket.received is None:
                    bucket.received = torch.empty_like(bucket.flat)
                bucket.reduce_scatter = dist.all_to_all_single(
                    bucket.received, bucket.flat, async_op=True)
            else:
                bucket.reduce_scatter = reduce_scatter(
                    bucket.shard, bucket.flat, op=dist.ReduceOp.SUM, async_op=True)
        return hook

    # ----- forward: all-gather + update just before first use ---------------------------
    def install_forward_hooks(self) -> None:
        """After the first forward: hook the first user of each bucket."""
        if self._prehooks_installed or not self.order.done:
            return
        modules = dict(self.model.named_modules())
        first_user: dict[str, list[DearBucket]] = {}
        placed: set[int] = set()
        for qualname, indices in self.order.units():
            for i in indices:
                b = self.bucket_of[i]
                if b.index not in placed:
                    placed.add(b.index)
                    first_user.setdefault(qualname, []).append(b)
        for qualname, buckets in first_user.items():
            modules[qualname].register_forward_pre_hook(self._before_use(buckets))
        self._prehooks_installed = True

    def _before_use(self, buckets: list[DearBucket]):
        def hook(_module, _args):
            for b in buckets:
                self.finish_bucket(b)
        return hook

    def finish_bucket(self, b: DearBucket) -> None:
        if b.reduce_scatter is None:
            return
        b.reduce_scatter.wait()
        b.reduce_scatter = None
        if b.received is not None:  # --rs-via-alltoall: sum the peers' copies of our shard
            torch.sum(b.received.view(self.world, -1), dim=0, out=b.shard)
        all_gather(b.gathered, b.shard, async_op=True).wait()
        with torch.no_grad():
            grad = b.gathered[: b.numel]
            if self.momentum:
                if b.momentum_buf is None:
                    b.momentum_buf = grad.clone()
                else:
                    b.momentum_buf.mul_(self.momentum).add_(grad)
                grad = b.momentum_buf
            offset = 0
            for p in b.params:
                n = p.numel()
                p.add_(grad[offset:offset + n].view_as(p), alpha=-self.lr)
                offset += n

    def flush(self) -> None:
        """Apply every pending update (after the last step)."""
        for _, indices in self.order.units():
            for i in indices:
                self.finish_bucket(self.bucket_of[i])
        for b in self.buckets:
            self.finish_bucket(b)


def parse_args(argv=None) -> argparse.Namespace:
    ap = trainer_parser(__doc__)
    ap.add_argument("--bucket-mb", type=float, default=None,
                    help="bucket cap (default: DDP's 25 MB with a 1 MB first bucket)")
    ap.add_argument("--rs-via-alltoall", action="store_true",
                    help="reduce-scatter as all_to_all_single + local sum (a true "
                         "reduce-scatter on gloo, whose own is an all-reduce)")
    ap.add_argument("--save-params", metavar="FILE", default=None)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    rank, world, device, work = start_training(args)
    model = work.model
    with torch.no_grad():  # start from rank 0's weights, as DDP does
        for p in model.parameters():
            dist.broadcast(p, 0)
    params = list(model.parameters())
    buckets = ddp_style_buckets(params, args.bucket_mb)
    trainer = DearTrainer(model, buckets, world=world, lr=args.lr, momentum=args.momentum,
                          rs_via_alltoall=args.rs_via_alltoall)

    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        x, y = work.batch_for(step, rank, args.seed, device)
        loss = work.loss(model(x), y)
        trainer.install_forward_hooks()
        loss.backward()
        mark_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    trainer.flush()

    rs = "alltoall" if args.rs_via_alltoall else "native"
    finish_training(rank, model, times_s=times, save_to=args.save_params,
                    header=f"train_dear model={args.model} world={world} "
                           f"bucket_mb={args.bucket_mb} buckets={len(buckets)} "
                           f"reduce_scatter={rs} steps={args.steps}")


if __name__ == "__main__":
    main()
