"""What the parent (``tracekit profile``) tells the in-job collector, through environment
variables that every rank inherits.

The parent builds a :class:`CollectorConfig`, turns it into variables with
:meth:`CollectorConfig.to_env`, and each rank's collector reads them back with
:meth:`CollectorConfig.from_env`::

    CollectorConfig(run_dir="/abs/runs/mlp", wait=3, warmup=2, active=5, record_shapes=True)
    <->  TRACEKIT_RUN_DIR=/abs/runs/mlp TRACEKIT_WAIT=3 TRACEKIT_WARMUP=2
         TRACEKIT_ACTIVE=5 TRACEKIT_RECORD_SHAPES=1 TRACEKIT_ANNOTATE=1

No torch here: the parent never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: the run folder (absolute); its presence is what turns the collector on in a process.
ENV_RUN_DIR = "TRACEKIT_RUN_DIR"
ENV_WAIT = "TRACEKIT_WAIT"
ENV_WARMUP = "TRACEKIT_WARMUP"
ENV_ACTIVE = "TRACEKIT_ACTIVE"
ENV_RECORD_SHAPES = "TRACEKIT_RECORD_SHAPES"
#: "0" turns the tracekit.fwd: / tracekit.bwd: module annotations off
ENV_ANNOTATE = "TRACEKIT_ANNOTATE"
#: set by the process that activated the collector to "<pid>:<rank>": its children with
#: the same rank (data loader workers, compile workers) inherit it and stay passive.
ENV_OWNER_PID = "TRACEKIT_OWNER_PID"
#: the folder holding the injected ``sitecustomize.py`` (so it can chain to the next one).
ENV_SITE_DIR = "TRACEKIT_SITE_DIR"


@dataclass(frozen=True, kw_only=True)
class CollectorConfig:
    """Profiler schedule and output folder for one profiled job.

    Steps are counted from the first step boundary the job reaches (the first
    ``optimizer.step()`` or ``collectors.step()``): then ``wait`` steps run unprofiled (and
    timed, for the overhead figure), ``warmup`` steps run with the profiler on but
    discarded, and ``active`` steps are recorded (``ProfilerStep#N``) and exported. After
    that, up to ``post_steps`` more steps are timed unprofiled; then the collector is idle.
    ``annotate`` adds the ``tracekit.fwd:`` / ``tracekit.bwd:`` module ranges (forward and
    gradient hooks on the model during warmup and active steps only).
    """

    run_dir: str
    wait: int = 3
    warmup: int = 2
    active: int = 5
    record_shapes: bool = True
    annotate: bool = True
    post_steps: int = 5

    def __post_init__(self) -> None:
        if self.wait < 0 or self.warmup < 0 or self.active < 1 or self.post_steps < 0:
            raise ValueError(
                f"bad profiler schedule wait={self.wait} warmup={self.warmup} "
                f"active={self.active}: need wait >= 0, warmup >= 0, active >= 1"
            )

    @property
    def profiled_steps(self) -> int:
        """Steps from the first boundary to the end of the active window."""
        return self.wait + self.warmup + self.active

    def to_env(self) -> dict[str, str]:
        return {
            ENV_RUN_DIR: self.run_dir,
            ENV_WAIT: str(self.wait),
            ENV_WARMUP: str(self.warmup),
            ENV_ACTIVE: str(self.active),
            ENV_RECORD_SHAPES: "1" if self.record_shapes else "0",
            ENV_ANNOTATE: "1" if self.annotate else "0",
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CollectorConfig | None:
        """The config a parent put in ``environ``; None when the collector is not wanted.

        Raises ValueError for malformed numbers (the caller reports it and stays off).
        """
        run_dir = environ.get(ENV_RUN_DIR, "")
        if not run_dir:
            return None
        return cls(
            run_dir=run_dir,
            wait=int(environ.get(ENV_WAIT, "3")),
            warmup=int(environ.get(ENV_WARMUP, "2")),
            active=int(environ.get(ENV_ACTIVE, "5")),
            record_shapes=environ.get(ENV_RECORD_SHAPES, "1") not in ("0", "false", ""),
            annotate=environ.get(ENV_ANNOTATE, "1") not in ("0", "false", ""),
        )
