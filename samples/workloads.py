"""Models, synthetic data and DDP-style bucketing shared by the sample trainers.

Standalone (torch only, no tracekit), so the samples can be copied elsewhere.

- ``mlp``: ``--layers`` x (Linear(hidden, hidden) + ReLU), batch 32, MSE loss: the
  16-layer, 512-wide MLP of tracekit's design notes.
- ``transformer``: token embedding + ``nn.TransformerEncoder`` (pre-norm off, no dropout)
  + a vocabulary head, cross-entropy on random tokens.
- ``embed_mlp``: a recommendation-style model: a large embedding table (one 5 MB
  gradient, sum-pooled over 8 ids) feeding an MLP of uneven widths (64 -> 1024 -> 256 ->
  2048 -> 128 -> 1), MSE loss: buckets of very different sizes.
- ``cnn``: a small convolutional net on 3x32x32 images (three conv + pool blocks, two
  linear layers), cross-entropy over 10 classes.

Data is synthetic and reproducible: batch ``(step, rank)`` is drawn from its own
generator, so every run (DDP, DeAR, no-overlap) sees the same numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

MB = 1024 * 1024
VOCAB = 1000
#: rows of ``embed_mlp``'s table (x 64 floats: a 5 MB gradient)
EMBED_ROWS = 20_000


@dataclass(frozen=True, kw_only=True)
class Workload:
    model: nn.Module
    name: str
    batch: int
    hidden: int
    seq: int = 32

    def batch_for(self, step: int, rank: int, seed: int, device: torch.device):
        """(inputs, targets) for one step on one rank, reproducible."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + rank * 10_007 + step)
        if self.name == "mlp":
            x = torch.randn(self.batch, self.hidden, generator=g)
            y = torch.randn(self.batch, self.hidden, generator=g)
        elif self.name == "embed_mlp":
            x = torch.randint(0, EMBED_ROWS, (self.batch, 8), generator=g)
            y = torch.randn(self.batch, 1, generator=g)
        elif self.name == "cnn":
            x = torch.randn(self.batch, 3, 32, 32, generator=g)
            y = torch.randint(0, 10, (self.batch,), generator=g)
        else:
            x = torch.randint(0, VOCAB, (self.batch, self.seq), generator=g)
            y = torch.randint(0, VOCAB, (self.batch, self.seq), generator=g)
        return x.to(device), y.to(device)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.name in ("mlp", "embed_mlp"):
            return nn.functional.mse_loss(out, target)
        if self.name == "cnn":
            return nn.functional.cross_entropy(out, target)
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))


class TokenTransformer(nn.Module):
    def __init__(self, hidden: int, layers: int, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=4 * hidden,
                                           dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


class EmbedMLP(nn.Module):
    """Sum-pooled embedding lookups, then an MLP of uneven widths."""

    def __init__(self, widths: tuple[int, ...] = (64, 1024, 256, 2048, 128, 1)) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(EMBED_ROWS, widths[0], mode="sum")
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers[:-1])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(ids))


def small_cnn() -> nn.Module:
    """Three conv + pool blocks (32, 64, 128 channels) and two linear layers."""
    blocks: list[nn.Module] = []
    for a, b in ((3, 32), (32, 64), (64, 128)):
        blocks += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(),
                         nn.Linear(256, 10))


#: every model the sample trainers take (``--model``)
MODELS = ("mlp", "transformer", "embed_mlp", "cnn")


def build_workload(name: str, *, hidden: int | None = None, layers: int | None = None,
                   batch: int | None = None, seed: int = 0) -> Workload:
    """The model (same initial weights on every rank, from ``seed``) and its data shape."""
    torch.manual_seed(seed)
    if name == "mlp":
        hidden, layers = hidden or 512, layers or 16
        mods: list[nn.Module] = []
        for _ in range(layers):
            mods += [nn.Linear(hidden, hidden), nn.ReLU()]
        return Workload(model=nn.Sequential(*mods), name=name, batch=batch or 32, hidden=hidden)
    if name == "transformer":
        hidden, layers = hidden or 128, layers or 4
        return Workload(model=TokenTransformer(hidden, layers), name=name, batch=batch or 16,
                        hidden=hidden)
    if name == "embed_mlp":
        return Workload(model=EmbedMLP(), name=name, batch=batch or 64, hidden=64)
    if name == "cnn":
        return Workload(model=small_cnn(), name=name, batch=batch or 16, hidden=0)
    raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group torchrun set up: gloo on CPU, NCCL when CUDA is there."""
    if "RANK" not in os.environ:  # plain `python train.py`: a world of one
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29512")
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    cuda = torch.cuda.is_available() and backend != "gloo"
    backend = backend or ("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    pin_to_own_core()
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def trainer_parser(doc: str) -> argparse.ArgumentParser:
    """The options every sample trainer takes (model, steps, batch, sizes, optimizer,
    seed, backend); each trainer adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--model", choices=list(MODELS), default="mlp")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=None, help="per-rank batch (mlp 32)")
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    return ap


def start_training(args, batch_of=None) -> tuple[int, int, torch.device, Workload]:
    """The start of a sample trainer: join the process group (``args.backend``), build
    the workload from ``args`` (model, hidden, layers, batch, seed), model on the device;
    ``batch_of(rank)``, when given, is this rank's batch instead of ``args.batch``;
    returns (rank, world size, device, workload)."""
    rank, world, device = init_distributed(args.backend)
    work = build_workload(args.model, hidden=args.hidden, layers=args.layers,
                          batch=batch_of(rank) if batch_of else args.batch, seed=args.seed)
    work.model.to(device)
    return rank, world, device, work


def pin_to_own_core() -> None:
    """Under ``benchmarks/cluster.py --pin`` (``TRACEKIT_PIN_CORES=1``): pin this local
    rank to core ``LOCAL_RANK % cores`` (its gloo threads inherit the affinity)."""
    try:
        from collectors.affinity import pin_local_rank_if_asked
    except ImportError:  # run without tracekit installed: nothing records the affinity
        return
    pin_local_rank_if_asked()


def bucket_limits(bucket_cap_mb: float | None) -> list[int]:
    """DDP's size limits for its rebuilt buckets: the first bucket is 1 MB only when the
    cap is left at DDP's default (25 MB); an explicit cap applies to every bucket."""
    if bucket_cap_mb is None:
        return [dist._DEFAULT_FIRST_BUCKET_BYTES, 25 * MB]
    return [int(bucket_cap_mb * MB)]


def ddp_style_buckets(params: list[nn.Parameter], bucket_cap_mb: float | None) -> list[list[int]]:
    """Parameter indices per bucket, in bucket (= gradient-ready) order, the way DDP
    builds them: reverse registration order, closed once a bucket reaches its limit.
    Uses DDP's own assignment function so the buckets are DDP's, not a lookalike."""
    order = list(range(len(params)))[::-1]
    tensors = [params[i] for i in order]
    groups, _ = dist._compute_bucket_assignment_by_size(tensors, bucket_limits(bucket_cap_mb))
    return [[order[j] for j in g] for g in groups]


class ForwardOrder:
    """Records, during one forward, the order in which modules first run, then gives
    each parameter's first user (a module that ran, or the nearest ancestor that ran)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.first_run: dict[str, int] = {}
        self.done = False
        self._handles = [m.register_forward_pre_hook(self._seen(q))
                         for q, m in model.named_modules()]
        self._handles.append(model.register_forward_hook(self._finish))

    def _seen(self, qualname: str):
        def hook(_m, _a):
            self.first_run.setdefault(qualname, len(self.first_run))
        return hook

    def _finish(self, *_):
        for h in self._handles:
            h.remove()
        self.done = True

    def units(self) -> list[tuple[str, list[int]]]:
        """[(module qualname, parameter indices it uses)] in forward order."""
        index = {id(p): i for i, p in enumerate(self.model.parameters())}
        owned: dict[str, list[int]] = {}
        for qualname, module in self.model.named_modules():
            for p in module.parameters(recurse=False):
                unit = qualname
                while unit not in self.first_run and unit:
                    unit = unit.rpartition(".")[0]
                owned.setdefault(unit, []).append(index[id(p)])
        return sorted(owned.items(), key=lambda kv: self.first_run.get(kv[0], 1 << 30))


def save_params(model: nn.Module, path: str | None) -> None:
    """``--save-params FILE``: the final parameters, by name, on the CPU."""
    if path:
        torch.save({n: p.detach().cpu() for n, p in model.named_parameters()}, path)


def report_step_times(times_s: list[float], *, skip: int = 2) -> str:
    """The final line benchmarks parse: ``step_ms median=... mean=... n=...`` over the
    steps after the first ``skip`` (which pay one-time costs)."""
    kept = [t * 1000 for t in times_s[skip:]] or [t * 1000 for t in times_s]
    if not kept:
        return "step_ms median=nan mean=nan n=0"
    return (f"step_ms median={statistics.median(kept):.2f} "
            f"mean={statistics.fmean(kept):.2f} n={len(kept)}")


def finish_training(rank: int, model: nn.Module, *, header: str, times_s: list[float],
                    save_to: str | None = None) -> None:
    """The end of a sample trainer: rank 0 saves the parameters (``--save-params``) and
    prints ``header`` and the ``step_ms`` line; then every rank tears down cleanly."""
    if rank == 0:
        save_params(model, save_to)
        print(header)
        print(report_step_times(times_s), flush=True)
    finish_distributed()


def finish_distributed() -> None:
    """Tear down the process group so that the process exits cleanly: a barrier (every
    rank is done with every collective), then ``destroy_process_group``, then wait until
    gloo's worker threads are idle before the interpreter shuts down.

    Why the last wait: a gloo worker thread drops its reference to a finished collective
    only after the caller's ``wait()`` has returned. A collective launched during
    ``backward()`` (every DDP bucket, every DeAR reduce-scatter) carries the autograd
    engine's Python context, so that drop needs the GIL. When the main thread reaches
    interpreter shutdown first, Python ends the worker thread inside that C++ destructor
    and the process aborts with ``terminate called without an active exception``
    (SIGABRT; about once in 20 runs of a 2-rank job on a loaded 2-core machine). The
    barrier alone does not prevent it: it may run on the other worker thread.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    dist.barrier()
    dist.destroy_process_group()
    wait_for_idle_gloo_workers()


def _gloo_worker_states() -> list[str] | None:
    """The scheduler state (``R``, ``S``, ...) of each of gloo's worker threads
    (``pt_gloo_runloop``) in this process; None where /proc cannot tell (not Linux)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    states = []
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue  # the thread has just exited
        name, _, rest = stat.partition("(")[2].rpartition(")")
        if name == "pt_gloo_runloop":
            states.append(rest.split()[0])
    return states


def wait_for_idle_gloo_workers(timeout_s: float = 10.0) -> bool:
    """Sleep in small steps (the GIL released, so a worker that needs it gets it) until
    every gloo worker thread is blocked waiting for work, seen twice in a row; True once
    they are, False after ``timeout_s`` or where /proc is not available (after a short
    pause). A worker that is still dropping a finished collective is running or
    runnable (``R``): the GIL is free while this thread sleeps."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        time.sleep(0.01)
        states = _gloo_worker_states()
        if states is None:
            time.sleep(0.2)
            return False
        quiet = quiet + 1 if all(s == "S" for s in states) else 0
        if quiet >= 2:
            return True
    return False
