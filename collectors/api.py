"""``collectors.profile``: the collector as a context manager, for people who prefer code
to ``tracekit profile``.

::

    from collectors import profile

    with profile("runs/x", wait=1, warmup=1, active=3, model=ddp_model) as p:
        for batch in data:
            train_step(batch)
            p.step()

The profiler starts when the block is entered (the first iteration is step 0), steps are
counted by ``p.step()`` only, and the run folder is complete when the block exits on
every rank (each rank merges ``manifest.json`` as it leaves). ``model`` (a module or a
``DistributedDataParallel``) is optional: a DDP created inside the block is found by
itself. Inside a job already run by ``tracekit profile``, the block joins that job's
collector and its own settings are ignored.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from collectors.activation import rank_from_env
from collectors.config import CollectorConfig


class profile:  # noqa: N801 - used like a function: `with profile(...) as p`
    """Profile the steps of a block; see the module docstring."""

    def __init__(
        self,
        out: str | Path = "runs/profile",
        *,
        wait: int = 1,
        warmup: int = 1,
        active: int = 3,
        record_shapes: bool = True,
        annotate: bool = True,
        model: Any = None,
    ) -> None:
        self.config = CollectorConfig(run_dir=str(Path(out).resolve()), wait=wait,
                                      warmup=warmup, active=active, record_shapes=record_shapes,
                                      annotate=annotate)
        self.model = model
        self.session: Any = None
        self._owned = False

    @property
    def run_dir(self) -> Path:
        return Path(self.session.run_dir if self.session is not None else self.config.run_dir)

    def __enter__(self) -> profile:
        import torch

        from collectors import agent

        existing = agent.current()
        if existing is not None:
            self.session = existing
            sys.stderr.write("tracekit: profile() inside a job run by 'tracekit profile': "
                             f"recording into {existing.run_dir}\n")
        else:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                rank = dist.get_rank()
            else:
                rank = rank_from_env(os.environ) or 0
            Path(self.config.run_dir).mkdir(parents=True, exist_ok=True)
            self.session = agent.install(self.config, rank=rank, explicit_only=True)
            self._owned = True
        if self.model is not None:
            ddp_cls = torch.nn.parallel.DistributedDataParallel
            if isinstance(self.model, ddp_cls):
                self.session.watch(self.model.module, ddp=self.model)
            else:
                self.session.watch(self.model)
        if self._owned:
            self.session.start_now()
        return self

    def step(self) -> None:
        """End of one training step."""
        if self.session is not None:
            self.session.explicit_step()

    def __exit__(self, *exc: Any) -> None:
        if not self._owned or self.session is None:
            return
        from collectors import agent

        self.session.close()
        agent.uninstall(self.session)
