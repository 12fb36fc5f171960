"""Decide, at interpreter start-up, whether this process is a training rank to profile.

``tracekit profile`` puts an injected ``sitecustomize`` on ``PYTHONPATH``, so *every*
Python process of the job imports it: the ``torchrun`` launcher, each rank, and whatever
the ranks start (data-loader workers, compile workers, helper scripts). Only ranks may
profile. The rules, in order::

    TRACEKIT_RUN_DIR unset                      -> off  (not under tracekit profile)
    TRACEKIT_OWNER_PID is another process with  -> off  (a child of a profiled rank: data
      the same rank as this one                         loader or compile worker)
    argv is torchrun / -m torch.distributed.run -> off  (the launcher)
    argv is a multiprocessing / fork-server child -> off
    otherwise                                   -> on, rank = $RANK (torchrun), or the
                                                   MPI / Slurm rank variables, else 0

An armed process records itself in ``TRACEKIT_OWNER_PID`` as ``"<pid>:<rank>"`` (see
:func:`owner_tag`). Its workers inherit the tag with the same rank and stay off; the ranks
that a Python launcher other than torchrun starts (``accelerate launch``, ``deepspeed``)
carry their own rank and are armed.

"on" only arms the collector: nothing is profiled or written until the process reaches its
first step boundary (``optimizer.step()`` or ``collectors.step()``), so a helper script
that never trains leaves no trace. No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from collectors.config import ENV_OWNER_PID, ENV_RUN_DIR

#: environment variables that carry the global rank, by launcher, in lookup order.
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID")

_LAUNCHER_MODULES = ("torch.distributed.run", "torch.distributed.launch")
_LAUNCHER_SCRIPTS = ("torchrun",)


@dataclass(frozen=True, kw_only=True)
class Activation:
    """Whether to arm the collector in this process, and why."""

    active: bool
    reason: str
    rank: int = 0


def rank_from_env(environ: Mapping[str, str]) -> int | None:
    """The global rank a launcher put in the environment, or None."""
    for var in RANK_VARIABLES:
        value = environ.get(var, "").strip()
        if value.isdigit():
            return int(value)
    return None


def is_launcher(argv: Sequence[str]) -> bool:
    """True for ``torchrun ...``, ``python -m torch.distributed.run ...`` and the like.

    ``argv`` is ``sys.orig_argv``: ``['/venv/bin/python3', '/venv/bin/torchrun', ...]``.
    """
    args = list(argv[1:])
    for i, a in enumerate(args):
        if a == "-m" and i + 1 < len(args):
            return args[i + 1] in _LAUNCHER_MODULES
        if a.startswith("-m") and len(a) > 2:
            return a[2:] in _LAUNCHER_MODULES
        if a.startswith("-"):
            continue
        base = os.path.basename(a)
        norm = a.replace(os.sep, "/")
        return base in _LAUNCHER_SCRIPTS or norm.endswith(
            ("torch/distributed/run.py", "torch/distributed/launch.py")
        )
    return False


def is_multiprocessing_child(argv: Sequence[str]) -> bool:
    """True for processes started by ``multiprocessing`` (spawn / forkserver)."""
    joined = " ".join(argv)
    return "--multiprocessing-fork" in joined or "from multiprocessing" in joined


def owner_tag(environ: Mapping[str, str], pid: int) -> str:
    """``"<pid>:<rank>"`` (rank '' when the environment names none): the value an armed
    process puts in ``TRACEKIT_OWNER_PID``."""
    rank = rank_from_env(environ)
    return f"{pid}:{'' if rank is None else rank}"


def decide(environ: Mapping[str, str], argv: Sequence[str], pid: int) -> Activation:
    """Apply the rules of this module's docstring."""
    if not environ.get(ENV_RUN_DIR):
        return Activation(active=False, reason=f"{ENV_RUN_DIR} is not set")
    owner = environ.get(ENV_OWNER_PID, "")
    if owner:
        owner_pid, _, owner_rank = owner.partition(":")
        mine = owner_tag(environ, pid).partition(":")[2]
        if owner_pid != str(pid) and owner_rank == mine:
            return Activation(active=False, reason=f"child of profiled process {owner_pid}")
    if is_launcher(argv):
        return Activation(active=False, reason="the torchrun launcher")
    if is_multiprocessing_child(argv):
        return Activation(active=False, reason="a multiprocessing child")
    rank = rank_from_env(environ)
    return Activation(active=True, reason="training process", rank=0 if rank is None else rank)
