"""Arm the collector in a process at start-up, without importing torch.

Called by the injected ``sitecustomize``. If :func:`collectors.activation.decide` says this
process is a training rank, the collector is installed the moment the job's own
``import torch`` finishes (a post-import hook on ``sys.meta_path``), so processes that never
import torch pay nothing, and torch is never imported earlier than the job imports it.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Callable

from collectors.activation import decide, owner_tag
from collectors.config import ENV_OWNER_PID, CollectorConfig


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``callback(module)`` right after module ``name`` finishes executing."""

    def __init__(self, name: str, callback: Callable) -> None:
        self.name = name
        self.callback = callback
        self._busy = False

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name or self._busy:
            return None
        self._busy = True
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        self._remove()
        original = spec.loader.exec_module
        callback = self.callback

        def exec_module(module):
            original(module)
            try:
                del spec.loader.exec_module  # back to the class's method
            except AttributeError:
                pass
            callback(module)

        spec.loader.exec_module = exec_module
        return spec

    def _remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def call_after_import(name: str, callback: Callable) -> None:
    """Run ``callback(module)`` once ``import name`` completes (now, if already imported)."""
    if name in sys.modules:
        callback(sys.modules[name])
        return
    sys.meta_path.insert(0, _AfterImport(name, callback))


def arm() -> bool:
    """Arm the collector in this process if it is a training rank; True when armed."""
    argv = getattr(sys, "orig_argv", sys.argv)
    activation = decide(os.environ, argv, os.getpid())
    if not activation.active:
        return False
    config = CollectorConfig.from_env(os.environ)
    if config is None:
        return False
    os.environ[ENV_OWNER_PID] = owner_tag(os.environ, os.getpid())
    rank = activation.rank

    def on_torch(_module) -> None:
        try:
            from collectors.agent import install

            install(config, rank=rank)
        except Exception as exc:  # never break the job's `import torch`
            sys.stderr.write(f"tracekit: collector not installed on rank {rank}: {exc!r}\n")

    call_after_import("torch", on_torch)
    return True
