"""FSDP2's own host time per unit and step, measured where collectives cost nothing.

``fully_shard`` runs Python hooks around every unit: before its forward (unshard, copy-out
bookkeeping), after it (reshard, registering the backward hooks), before its backward and
after its last gradient (reduce-scatter bookkeeping, gradient views). On a GPU that time
hides behind the device; on a CPU, or a host-bound step, it adds to the step.
``fsdp=CLASS`` predicts FSDP2 from a DDP run, which has none of it, so ``tracekit
calibrate`` measures it here:

- every rank builds a small model (``units`` blocks of ``Linear(width, width)`` + ReLU) twice,
  plain and with ``fully_shard`` on every ``Linear`` and the root, on a mesh over every
  rank whose process group is torch's ``fake`` backend (every collective returns at once):
  FSDP2 runs its whole code path for this world size, copies included (tiny at this
  width), and no transfer (``mode: "fake"``). Where that backend is missing, a mesh of just
  the rank itself (``mode: "solo"``): FSDP2 then skips the all-gather and reduce-scatter
  paths, about a third of its host work here (0.6 / 0.8 ms per unit against 1.1 / 1.25);
- all ranks step at once (a barrier before each step), so they share the cores as training
  does; rounds alternate plain and FSDP2 steps;
- per unit: (FSDP2's median forward - the plain one's) / units, the same for backward.

Returns ``{"units": 8, "forward_ns": 1100000, "backward_ns": 1250000, "rounds": 3,
"steps": 12, "mode": "fake"}``, or None when this torch has no ``fully_shard``.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist


def _model(units: int, width: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(width, width),
                                                     torch.nn.ReLU()) for _ in range(units)]
                               ).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _steps(model: torch.nn.Module, x: torch.Tensor, steps: int, device: torch.device
           ) -> tuple[list[int], list[int]]:
    """Forward and backward wall ns of ``steps`` training steps, each after a barrier."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    fwd, bwd = [], []
    for _ in range(steps):
        dist.barrier()
        t0 = time.perf_counter_ns()
        loss = model(x).sum()
        _sync(device)
        t1 = time.perf_counter_ns()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter_ns()
        opt.step()
        opt.zero_grad()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return fwd, bwd


def measure_fsdp_hooks(device: torch.device, *, units: int = 8, width: int = 64,
                       rounds: int = 3, steps: int = 12, warmup: int = 3) -> dict | None:
    """FSDP2's host time per unit and step (see the module doc); every rank must call it."""
    try:
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # pragma: no cover - torch without FSDP2
        return None
    groups, mode = _groups()
    mesh = DeviceMesh.from_group(groups[0] if mode == "fake" else groups[dist.get_rank()],
                                 device.type)
    plain = _model(units, width, device)
    sharded = _model(units, width, device)
    for block in sharded:
        fully_shard(block[0], mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    x = torch.randn(8, width, device=device)
    _steps(plain, x, warmup, device)
    _steps(sharded, x, warmup, device)
    per_unit_fwd, per_unit_bwd = [], []
    for _ in range(rounds):
        pf, pb = _steps(plain, x, steps, device)
        ff, fb = _steps(sharded, x, steps, device)
        per_unit_fwd.append(max(0.0, statistics.median(ff) - statistics.median(pf)) / units)
        per_unit_bwd.append(max(0.0, statistics.median(fb) - statistics.median(pb)) / units)
    for group in groups:
        dist.destroy_process_group(group)
    return {"units": units, "forward_ns": round(statistics.median(per_unit_fwd)),
            "backward_ns": round(statistics.median(per_unit_bwd)), "rounds": rounds,
            "steps": steps, "mode": mode}


def _groups() -> tuple[list, str]:
    """A ``fake``-backend group over every rank, else one group per rank (every rank
    creates every group, as ``new_group`` requires)."""
    world = dist.get_world_size()
    try:  # torch's no-op backend for tests; registered on import
        import torch.testing._internal.distributed.fake_pg  # noqa: F401

        return [dist.new_group(list(range(world)), backend="fake")], "fake"
    except Exception:  # noqa: BLE001 - any failure: the solo mesh measures a lower bound
        return [dist.new_group([r]) for r in range(world)], "solo"
