"""Mark each forward unit's forward and backward in the trace.

While the profiler records (warmup and active steps only), every forward unit of the
recorded model (see :class:`collectors.model_meta.ModelRecorder`) gets two
``record_function`` ranges on the thread that runs it::

    tracekit.fwd:<module qualname>   from the module's forward pre-hook to its forward hook
    tracekit.bwd:<module qualname>   from the moment the gradient reaches the module's
                                     outputs (a pre-hook on their autograd nodes) until the
                                     last of its parameters has its gradient accumulated
                                     (post-accumulate-grad hooks)

The backward range lives on the autograd thread (the main thread on CPU, the device
thread on CUDA), beside the ``*Backward0`` ops it covers. Nothing here changes values:
the hooks only observe (they return None). Full module backward hooks are avoided on
purpose: they wrap outputs in a custom autograd function, which breaks in-place ops on
those outputs (``ReLU(inplace=True)`` after a ``Linear``).

A unit whose parameters get no gradient in some backward (unused, frozen) leaves its
range open; open ranges are closed at the next step boundary.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from collectors.model_meta import ModelRecorder

FWD_PREFIX = "tracekit.fwd:"
BWD_PREFIX = "tracekit.bwd:"


def _tensors(value: Any) -> list[torch.Tensor]:
    """Tensors in a module output (a tensor, or nested tuples / lists / dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class _Range:
    """A record_function range opened in one hook and closed in another."""

    __slots__ = ("rf",)

    def __init__(self, name: str) -> None:
        self.rf = torch.autograd.profiler.record_function(name)
        self.rf.__enter__()

    def close(self) -> None:
        if self.rf is not None:
            rf, self.rf = self.rf, None
            rf.__exit__(None, None, None)


class _UnitState:
    def __init__(self, name: str, n_params: int) -> None:
        self.name = name
        self.n_params = n_params
        self.fwd: list[_Range] = []
        self.bwd: _Range | None = None
        self.remaining = 0


class ModuleAnnotator:
    """Adds and removes the fwd/bwd annotation hooks of one recorded model.

    ``on_error`` receives a message when a hook fails; the annotator then switches itself
    off (hooks stay harmless) rather than disturb training.
    """

    def __init__(self, recorder: ModelRecorder, on_error: Callable[[str], None]) -> None:
        self.recorder = recorder
        self.on_error = on_error
        self._handles: list[Any] = []
        self._states: list[_UnitState] = []
        self._lock = threading.Lock()
        self.enabled = False

    def enable(self) -> None:
        if self.enabled:
            return
        params = self.recorder.parameter_objects()
        for unit, module in self.recorder.unit_modules():
            grad_params = [params[i] for i in unit.params if params[i].requires_grad]
            state = _UnitState(unit.module, len(grad_params))
            self._states.append(state)
            self._handles.append(module.register_forward_pre_hook(self._fwd_pre(state)))
            self._handles.append(module.register_forward_hook(self._fwd_post(state)))
            for p in grad_params:
                self._handles.append(p.register_post_accumulate_grad_hook(self._accumulated(state)))
        self.enabled = True

    def disable(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.close_open()
        self._states.clear()
        self.enabled = False

    def close_open(self) -> None:
        """Close every range still open (at step boundaries and when disabling)."""
        with self._lock:
            for s in self._states:
                while s.fwd:
                    s.fwd.pop().close()
                if s.bwd is not None:
                    s.bwd.close()
                    s.bwd = None

    def _fail(self, where: str, exc: BaseException) -> None:
        self.on_error(f"module annotation hook ({where}) failed, annotations off: {exc!r}")
        try:
            self.disable()
        except Exception:
            pass

    def _fwd_pre(self, state: _UnitState):
        def hook(_module, _args):
            try:
                state.fwd.append(_Range(FWD_PREFIX + state.name))
            except Exception as exc:
                self._fail("forward pre", exc)
        return hook

    def _fwd_post(self, state: _UnitState):
        def hook(_module, _args, output):
            try:
                if state.fwd:
                    state.fwd.pop().close()
                if state.n_params == 0 or not torch.is_grad_enabled():
                    return
                nodes = {id(t.grad_fn): t.grad_fn for t in _tensors(output)
                         if t.grad_fn is not None}
                for node in nodes.values():
                    node.register_prehook(self._bwd_start(state))
            except Exception as exc:
                self._fail("forward", exc)
        return hook

    def _bwd_start(self, state: _UnitState):
        def prehook(_grad_outputs):
            try:
                with self._lock:
                    if state.bwd is None:
                        state.bwd = _Range(BWD_PREFIX + state.name)
                        state.remaining = state.n_params
            except Exception as exc:
                self._fail("backward start", exc)
        return prehook

    def _accumulated(self, state: _UnitState):
        def hook(_param):
            try:
                with self._lock:
                    if state.bwd is None:
                        return
                    state.remaining -= 1
                    if state.remaining <= 0:
                        state.bwd.close()
                        state.bwd = None
            except Exception as exc:
                self._fail("gradient accumulated", exc)
        return hook
