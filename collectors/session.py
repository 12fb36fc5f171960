"""One rank's profiling session: drives ``torch.profiler`` step by step, times every step,
writes the rank's trace and its part of the manifest.

Step boundaries come from outside (:mod:`collectors.agent`: ``optimizer.step()`` or
``collectors.step()``). With the schedule ``wait=3, warmup=2, active=5`` a job looks like::

    boundary:  B0        B1     B2     B3     B4     B5     B6 ... B10     B11 ... B15
    step:      (setup)   0 wait 1 wait 2 wait 3 warm 4 warm 5 act ... 9 act  10 post ...
                         |- unprofiled, timed -|- profiler on ---------------|- unprofiled

B0 (the first boundary) starts the profiler, so ``ProfilerStep#N`` is step N above and the
trace holds ``ProfilerStep#5`` .. ``#9``. Each step's wall time runs from the end of the
collector's work at one boundary to the start of the next, so the export does not count.
Wait steps (but the first, which still pays one-time costs such as DDP's bucket rebuild)
and post steps are the unprofiled reference for the overhead figure.

Every failure (a profiler that will not start, an export that cannot write) is reported on
stderr and kept in the part's ``errors``; training is never interrupted.
"""

from __future__ import annotations

import gzip
import os
import platform
import shutil
import socket
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from collectors.affinity import cpu_count, cpu_set
from collectors.annotations import ModuleAnnotator
from collectors.config import CollectorConfig
from collectors.model_meta import ModelRecorder, ModelRegistry
from collectors.nccl_env import nccl_debug_env, nccl_log_name
from collectors.run_folder import (
    PARTS_DIR,
    merge_manifest,
    trace_file_name,
    write_part,
)
from tracekit.core.atomic import atomic_output
from tracekit.errors import TracekitError


class Phase(str, Enum):
    """Where a step falls in the schedule."""

    WAIT = "wait"
    WARMUP = "warmup"
    ACTIVE = "active"
    POST = "post"


class State(str, Enum):
    ARMED = "armed"          # waiting for the first boundary
    PROFILING = "profiling"  # the profiler object exists (wait, warmup, active steps)
    POST = "post"            # profiler gone, timing a few unprofiled steps
    DONE = "done"            # nothing more to do
    FAILED = "failed"        # stood down after an error


def phase_of(step: int, config: CollectorConfig) -> Phase:
    """The phase of step ``step`` (0 = the step after the first boundary)."""
    if step < config.wait:
        return Phase.WAIT
    if step < config.wait + config.warmup:
        return Phase.WARMUP
    if step < config.profiled_steps:
        return Phase.ACTIVE
    return Phase.POST


def gzip_atomically(src: Path, dest: Path) -> None:
    """Compress ``src`` into ``dest`` atomically (:mod:`tracekit.core.atomic`)."""
    with open(src, "rb") as fin, atomic_output(dest, what="the trace") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
            shutil.copyfileobj(fin, gz, 1 << 20)


class ProfileSession:
    """The collector of one process. Thread-safe; every public method swallows errors."""

    def __init__(self, config: CollectorConfig, *, rank: int, explicit_only: bool = False) -> None:
        self.config = config
        self.rank = rank
        self.run_dir = Path(config.run_dir)
        self.pid = os.getpid()
        self.explicit_steps = explicit_only
        self.state = State.ARMED
        self.errors: list[str] = []
        self.models = ModelRegistry()
        self.trace_name = ""
        self.nccl_log = ""
        self.world_size = 0
        self.backend = ""
        self._prof: Any = None
        self._annotator: ModuleAnnotator | None = None
        self._optimizer_id: int | None = None
        self._step = -1
        self._t_last = 0.0
        self._records: list[tuple[int, Phase, float]] = []
        self._lock = threading.RLock()
        self._closed = False
        self._skip_export = False
        #: the profiled step the job ended in (its trace holds it cut short)
        self._incomplete_steps: list[int] = []

    # ----- reporting ------------------------------------------------------------------
    def report(self, message: str) -> None:
        """Record a collector problem and say it on stderr (never raises)."""
        self.errors.append(message)
        try:
            sys.stderr.write(f"tracekit: rank {self.rank}: {message}\n")
        except Exception:
            pass

    def _stand_down(self, message: str) -> None:
        self.report(message + "; training continues without the profiler")
        self.state = State.FAILED
        prof, self._prof = self._prof, None
        if self._annotator is not None:
            try:
                self._annotator.disable()
            except Exception:
                pass
        if prof is not None:
            try:
                prof.stop()
            except Exception:
                pass
        self._write_part_safely()

    # ----- inputs from the job --------------------------------------------------------
    def watch(self, module: torch.nn.Module, *, ddp: Any = None, in_forward: bool = False
              ) -> None:
        """Record metadata of ``module`` (the module DDP wraps, with ``ddp`` its wrapper;
        ``in_forward``: called from inside the module's first forward)."""
        if os.getpid() != self.pid:
            return
        try:
            with self._lock:
                if self.models.primary is not None:
                    if not any(r.module is module for r in self.models.recorders):
                        self.report(f"another model ({type(module).__name__}) was wrapped; "
                                    "metadata is recorded for the first one only")
                    return
                self.models.add(ModelRecorder(module, ddp=ddp, in_forward=in_forward))
        except Exception as exc:
            self.report(f"could not record model metadata: {exc!r}")

    def prepare_nccl(self, backend: str | None) -> None:
        """Called as the job initializes its process group: turn NCCL's log on."""
        try:
            cuda = torch.cuda.is_available() if not backend else False
            env = nccl_debug_env(os.environ, run_dir=self.run_dir, rank=self.rank,
                                 backend=backend, cuda_available=cuda)
            if env:
                (self.run_dir / "nccl").mkdir(parents=True, exist_ok=True)
                os.environ.update(env)
                if "NCCL_DEBUG_FILE" in env:
                    self.nccl_log = nccl_log_name(self.rank)
        except Exception as exc:
            self.report(f"could not set up the NCCL log: {exc!r}")

    def optimizer_stepped(self, optimizer: Any) -> None:
        """A step boundary from ``optimizer.step()``: the first optimizer that steps is the
        one that counts (a job with several optimizers steps each once per iteration)."""
        if self.explicit_steps:
            return
        if self._optimizer_id is None:
            self._optimizer_id = id(optimizer)
        elif self._optimizer_id != id(optimizer):
            return
        self.boundary()

    def explicit_step(self) -> None:
        """A step boundary from ``collectors.step()``; from now on optimizers do not count."""
        self.explicit_steps = True
        self.boundary()

    def start_now(self) -> None:
        """Start the profiler without waiting for a boundary (the ``profile()`` API)."""
        with self._lock:
            if self.state is State.ARMED:
                self._guarded(self._start)
                self._t_last = time.perf_counter()

    def boundary(self) -> None:
        """One step ended and the next begins."""
        t_enter = time.perf_counter()
        if os.getpid() != self.pid or self.state in (State.DONE, State.FAILED):
            return
        with self._lock:
            if self.state is State.ARMED:
                self._guarded(self._start)
            else:
                self._guarded(self._advance, t_enter)
            self._t_last = time.perf_counter()

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._stand_down(f"profiler error at step {self._step}: {exc!r}")

    # ----- the schedule ---------------------------------------------------------------
    def _start(self) -> None:
        if torch.autograd._profiler_enabled():
            self._stand_down(
                "another torch.profiler is already running in this process (the job "
                "profiles itself), so tracekit did not start one; analyze the job's own "
                "traces with tracekit instead"
            )
            return
        cfg = self.config
        self._refresh_dist()
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=cfg.wait, warmup=cfg.warmup,
                                             active=cfg.active, repeat=1),
            on_trace_ready=self._export,
            record_shapes=cfg.record_shapes,
        )
        self._step = 0
        if phase_of(0, cfg) is not Phase.WAIT:
            self._open_window()
        self._prof.start()
        self.state = State.PROFILING

    def _advance(self, t_enter: float) -> None:
        cfg = self.config
        k = self._step
        phase = phase_of(k, cfg)
        self._records.append((k, phase, (t_enter - self._t_last) * 1000.0))
        nxt = phase_of(k + 1, cfg)
        if self._annotator is not None:
            self._annotator.close_open()
        if self.state is State.PROFILING:
            if phase is Phase.WAIT and nxt is not Phase.WAIT:
                self._open_window()
            if phase is Phase.ACTIVE and nxt is Phase.POST:
                self._close_window()
            self._prof.step()  # after the last active step this exports (self._export)
            if nxt is Phase.POST:
                prof, self._prof = self._prof, None
                prof.stop()
                self.state = State.POST
                self._write_part_safely()
        elif self.state is State.POST and k + 1 >= cfg.profiled_steps + cfg.post_steps:
            self.state = State.DONE
            self._write_part_safely()
        self._step = k + 1

    def _open_window(self) -> None:
        self._refresh_dist()
        rec = self.models.primary
        if rec is None:
            return
        rec.refresh_buckets()
        if self.config.annotate and rec.forward_units and self._annotator is None:
            self._annotator = ModuleAnnotator(rec, self.report)
            self._annotator.enable()

    def _close_window(self) -> None:
        if self._annotator is not None:
            self._annotator.disable()
            self._annotator = None
        rec = self.models.primary
        if rec is not None:
            rec.refresh_buckets()

    def _refresh_dist(self) -> None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            self.world_size = dist.get_world_size()
            self.backend = str(dist.get_backend())
            self.rank = dist.get_rank()

    # ----- output ---------------------------------------------------------------------
    def _export(self, prof: Any) -> None:
        """``on_trace_ready``: write ``rank<N>.trace.json.gz`` atomically."""
        if self._skip_export:
            return
        self._refresh_dist()
        parts = self.run_dir / PARTS_DIR
        tmp = parts / f".rank{self.rank}.{os.getpid()}.trace.json"
        try:
            parts.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(tmp))
            gzip_atomically(tmp, self.run_dir / trace_file_name(self.rank))
            self.trace_name = trace_file_name(self.rank)
        except Exception as exc:
            self.report(f"could not write the trace ({_why(exc)}); check free space and "
                        f"permissions of {self.run_dir}")
        finally:
            try:
                tmp.unlink()
            except OSError:
                pass

    def part(self) -> dict[str, Any]:
        """This rank's part of the manifest (see :mod:`collectors.run_folder`)."""
        cfg = self.config
        active = [(k, ms) for k, ph, ms in self._records if ph is Phase.ACTIVE]
        waits = [ms for k, ph, ms in self._records if ph is Phase.WAIT]
        if len(waits) >= 2:
            waits = waits[1:]  # the first still pays one-time costs
        posts = [ms for k, ph, ms in self._records if ph is Phase.POST]
        rec = self.models.primary
        model = None
        if rec is not None:
            try:
                model = rec.to_manifest()
            except Exception as exc:
                self.report(f"could not describe the model: {exc!r}")
        return {
            "rank": self.rank,
            "world_size": self.world_size or _env_int("WORLD_SIZE", 1),
            "backend": self.backend,
            "host": socket.gethostname(),
            "cpu_cores": cpu_count(),
            "cpu_set": cpu_set(),
            "pid": self.pid,
            "argv": list(getattr(sys, "orig_argv", sys.argv)),
            "versions": _versions(),
            "profiler": {"wait": cfg.wait, "warmup": cfg.warmup, "active": cfg.active,
                         "record_shapes": cfg.record_shapes, "annotate_modules": cfg.annotate},
            "trace": self.trace_name,
            "nccl_log": self.nccl_log,
            "steps": [k for k, _ in active],
            "step_times_ms": [round(ms, 3) for _, ms in active],
            "unprofiled_step_times_ms": [round(ms, 3) for ms in waits + posts],
            "incomplete_steps": list(self._incomplete_steps),
            "state": self.state.value,
            "errors": list(self.errors),
            "model": model,
        }

    def _write_part_safely(self) -> None:
        try:
            write_part(self.run_dir, self.rank, self.part())
        except Exception as exc:
            try:
                sys.stderr.write(f"tracekit: rank {self.rank}: could not write the run "
                                 f"folder {self.run_dir}: {_why(exc)}\n")
            except Exception:
                pass

    def close(self, *, merge: bool = True) -> None:
        """End of the process (or of the ``profile()`` block): finish, write, merge."""
        if os.getpid() != self.pid:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            cfg = self.config
            if self.state is State.ARMED:
                return  # never reached a step boundary: nothing to say
            if self.state is State.PROFILING:
                done = sum(1 for _, ph, _ in self._records if ph is Phase.ACTIVE)
                if done:
                    self._incomplete_steps.append(self._step)
                    self.report(f"the job ended during the profiled window, in step "
                                f"{self._step}: the trace holds {done} complete steps and "
                                f"the incomplete ProfilerStep#{self._step}")
                else:
                    self._skip_export = True
                    self.report(f"the job ended after {self._step} steps, before any profiled "
                                f"step completed (the window is steps "
                                f"{cfg.wait + cfg.warmup}..{cfg.profiled_steps - 1} after the "
                                "first); run more steps or lower --wait/--warmup/--steps")
                try:
                    self._close_window()
                    prof, self._prof = self._prof, None
                    prof.stop()  # exports, unless no recorded step completed
                except Exception as exc:
                    self.report(f"profiler error while stopping: {exc!r}")
            self.state = State.DONE
            rec = self.models.primary
            if rec is not None:
                try:
                    rec.refresh_buckets()
                except Exception:
                    pass
            self._write_part_safely()
            if merge:
                try:
                    merge_manifest(self.run_dir)
                except Exception as exc:
                    sys.stderr.write(f"tracekit: rank {self.rank}: could not write "
                                     f"manifest.json: {_why(exc)}\n")


def _why(exc: BaseException) -> str:
    """A failure in a message: a TracekitError's own one-line text, else its repr."""
    return str(exc) if isinstance(exc, TracekitError) else repr(exc)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _versions() -> dict[str, str]:
    nccl = ""
    try:
        if torch.cuda.is_available():
            v = torch.cuda.nccl.version()
            nccl = ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
    except Exception:
        pass
    return {"torch": torch.__version__, "nccl": nccl, "python": platform.python_version()}


__all__ = ["Phase", "ProfileSession", "State", "phase_of"]


