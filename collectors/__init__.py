"""tracekit's collector: what runs inside the training job. The only package that imports
torch (lazily: importing ``collectors`` itself does not).

Two ways in:

- ``tracekit profile --out runs/x -- torchrun --nproc_per_node 2 train.py``: no change to
  the script. An injected ``sitecustomize`` arms the collector in every rank (see
  :mod:`collectors.activation`); steps are counted at each ``optimizer.step()``.
- In code::

      from collectors import profile
      with profile("runs/x", wait=1, warmup=1, active=3) as p:
          for batch in data:
              train_step(batch)
              p.step()

Loops without an optimizer call :func:`step` (``collectors.step()``) at the end of each
iteration; it does nothing when no collector runs, so a script may call it always.

What ends up in the run folder (``manifest.json``, ``rank<N>.trace.json.gz``,
``nccl/rank<N>.log``) is described in :mod:`tracekit.core.manifest`.

Annotations in the trace (``record_function`` ranges, profiled steps only), for the graph
and what-if code to find module boundaries:

- ``tracekit.fwd:<qualname>``: the forward of one module of the model DDP wraps, on the
  thread that runs the forward. ``<qualname>`` is the name in ``model.named_modules()``
  ('' for the root, ``layers.0.self_attn``, ...), the same names as the manifest's
  ``model.forward_order[*].module``. Only *forward units* are marked: modules that own
  parameters and whose forward runs, plus the nearest running ancestor of modules whose
  forward never runs (``MultiheadAttention`` for its ``out_proj``).
- ``tracekit.bwd:<qualname>``: the backward of the same unit, on the autograd thread (the
  main thread on CPU, the device's autograd thread on CUDA): from when the gradient
  reaches the unit's outputs to when the last of its parameters has its gradient
  accumulated (so the unit's ``*Backward0`` ops and ``AccumulateGrad`` fall inside).
- ``ProfilerStep#N``: one per step, from ``torch.profiler``.
"""

from __future__ import annotations

from collectors.api import profile


def step() -> None:
    """Mark the end of a training step (for loops without ``optimizer.step()``).

    A no-op unless a collector runs in this process, and cheap either way.
    """
    import sys

    agent = sys.modules.get("collectors.agent")
    if agent is not None:
        agent.step()


__all__ = ["profile", "step"]
