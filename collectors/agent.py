"""The collector's hooks into torch, installed once per process.

:func:`install` (called right after the job's ``import torch`` when the process runs under
``tracekit profile``, or by :class:`collectors.profile`) creates the process's
:class:`~collectors.session.ProfileSession` and connects it to the job:

- ``torch.optim.Optimizer.step``: a global step post-hook marks each step boundary;
- ``DistributedDataParallel.__init__``: wrapped, to record the wrapped model's metadata;
- a global module forward pre-hook, until a model is recorded: the first forward of an
  FSDP2 module (``fully_shard``) records that module (the outermost one runs first);
- ``torch.distributed.init_process_group``: wrapped, to turn NCCL's log on before NCCL
  starts (see :mod:`collectors.nccl_env`);
- ``atexit``: writes the rank's part of the run folder and merges ``manifest.json``.

None of these change what the job computes; each wrapper calls the original first (or
last) and swallows its own errors.
"""

from __future__ import annotations

import atexit
import functools
import threading
from typing import Any

import torch

from collectors.config import CollectorConfig
from collectors.session import ProfileSession

_session: ProfileSession | None = None
_lock = threading.Lock()
_patched = False


def current() -> ProfileSession | None:
    """The session of this process, or None when nothing is being collected."""
    return _session


def install(config: CollectorConfig, *, rank: int, explicit_only: bool = False) -> ProfileSession:
    """Create this process's session (once) and hook it into torch."""
    global _session
    with _lock:
        if _session is not None:
            return _session
        _session = ProfileSession(config, rank=rank, explicit_only=explicit_only)
        _patch_torch()
        atexit.register(_at_exit)
        return _session


def uninstall(session: ProfileSession) -> None:
    """Forget ``session`` (the ``profile()`` block ended); the patches stay, inert."""
    global _session
    with _lock:
        if _session is session:
            _session = None


def step() -> None:
    """An explicit step boundary (``collectors.step()``)."""
    s = _session
    if s is not None:
        s.explicit_step()


def _at_exit() -> None:
    s = _session
    if s is not None:
        s.close()


def _on_optimizer_step(optimizer: Any, _args: Any, _kwargs: Any) -> None:
    s = _session
    if s is not None:
        s.optimizer_stepped(optimizer)


def _patch_torch() -> None:
    global _patched
    if _patched:
        return
    _patched = True
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(_on_optimizer_step)
    _wrap_ddp_init()
    _watch_fsdp_roots()
    _wrap_init_process_group()


def _wrap_ddp_init() -> None:
    ddp_cls = torch.nn.parallel.DistributedDataParallel
    original = ddp_cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):  # noqa: N807 - replaces DDP.__init__
        original(self, *args, **kwargs)
        s = _session
        if s is not None:
            s.watch(self.module, ddp=self)

    ddp_cls.__init__ = __init__


def _watch_fsdp_roots() -> None:
    from torch.nn.modules.module import register_module_forward_pre_hook

    from collectors.fsdp_meta import is_fsdp_module

    handle = None

    def pre_forward(module, _args):
        s = _session
        if s is None or handle is None:
            return
        if s.models.primary is not None:
            handle.remove()
            return
        if is_fsdp_module(module):
            handle.remove()
            s.watch(module, in_forward=True)

    handle = register_module_forward_pre_hook(pre_forward)


def _wrap_init_process_group() -> None:
    dist = torch.distributed
    if not dist.is_available():
        return
    from torch.distributed import distributed_c10d

    original = distributed_c10d.init_process_group

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        s = _session
        if s is not None:
            backend = kwargs.get("backend", args[0] if args else None)
            s.prepare_nccl(None if backend is None else str(backend))
        return original(*args, **kwargs)

    distributed_c10d.init_process_group = init_process_group
    if getattr(dist, "init_process_group", None) is original:
        dist.init_process_group = init_process_group
