"""Write a run folder: per-rank partial manifests, atomic files, the merged ``manifest.json``.

Each rank writes what it knows to ``<run>/.parts/rank<N>.json`` (several times: when its
trace is exported, and when the process exits). Whoever finishes last merges the parts
into ``manifest.json`` (the format of :mod:`tracekit.core.manifest`): each rank when it
exits, and ``tracekit profile`` once the command has exited, which also adds the command
and its exit code. Merging holds a lock and rewrites the whole file atomically, so the
last merge always sees every part written before it.

A part (one rank's view), before merging::

    {"rank": 1, "world_size": 2, "backend": "gloo", "host": "vm", "pid": 4242,
     "versions": {"torch": "2.13.0+cpu", "nccl": "", "python": "3.11.7"},
     "profiler": {"wait": 3, "warmup": 2, "active": 5, "record_shapes": true},
     "trace": "rank1.trace.json.gz", "nccl_log": "",
     "steps": [5, 6, 7, 8, 9], "step_times_ms": [48.1, 47.0, 51.3, 46.2, 47.7],
     "unprofiled_step_times_ms": [44.0, 45.1, 43.9], "errors": [], "model": {...}}

After merging, ``manifest.json`` has one ``ranks`` entry per part, the model of the
lowest rank that recorded one, and ``overhead`` pooled over ranks. No torch here.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import importlib.metadata
import json
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tracekit.core.atomic import atomic_write_json

# Ranks write and merge manifests at exit: importing tracekit.core.manifest there would
# pull in pandas, so the two contract constants are repeated here (tests check they equal
# tracekit.core.manifest's). tracekit.core.atomic is standard library only.
MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1

PARTS_DIR = ".parts"
NCCL_DIR = "nccl"
LOCK_NAME = ".merge.lock"


def trace_file_name(rank: int) -> str:
    """``rank3.trace.json.gz``: the trace file of one rank, relative to the run folder."""
    return f"rank{rank}.trace.json.gz"


def part_path(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / PARTS_DIR / f"rank{rank}.json"


def write_part(run_dir: str | Path, rank: int, part: dict[str, Any]) -> Path:
    """Atomically write one rank's part; returns its path."""
    path = part_path(run_dir, rank)
    atomic_write_json(path, part, what="this rank's part of the run folder", parents=True)
    return path


def read_parts(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every readable part, sorted by rank, and a message per unreadable one."""
    folder = Path(run_dir) / PARTS_DIR
    parts, problems = [], []
    if not folder.is_dir():
        return parts, problems
    for f in sorted(folder.glob("rank*.json")):
        try:
            doc = json.loads(f.read_text())
            int(doc["rank"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"unreadable rank part {f.name}: {exc}")
            continue
        parts.append(doc)
    parts.sort(key=lambda p: int(p["rank"]))
    return parts, problems


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    with open(run_dir / LOCK_NAME, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _tool_version() -> str:
    try:
        return importlib.metadata.version("tracekit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def build_manifest(
    parts: Sequence[dict[str, Any]],
    run_dir: str | Path,
    *,
    command: Sequence[str] | None = None,
    exit_code: int | None = None,
    errors: Sequence[str] = (),
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge rank parts into one manifest document (see the module docstring).

    ``previous`` is the manifest already on disk, whose ``command`` / ``exit_code`` are
    kept when this merge does not know them (a rank merging at exit knows neither).
    """
    run_dir = Path(run_dir)
    previous = previous or {}
    first = parts[0] if parts else {}
    all_errors = list(errors)
    ranks = []
    profiled, unprofiled = [], []
    for p in parts:
        entry, rank_errors = _rank_entry(p, run_dir)
        ranks.append(entry)
        all_errors += rank_errors
        profiled += entry["step_times_ms"]
        unprofiled += entry["unprofiled_step_times_ms"]
    world = max([int(p.get("world_size") or 0) for p in parts] + [len(parts)])
    all_errors += _coverage_errors(parts, ranks, world)
    model, model_errors = _model_of(parts)
    all_errors += model_errors
    if command is None:
        command = previous.get("command") or first.get("argv")
    if exit_code is None:
        exit_code = previous.get("exit_code")
    hosts = sorted({r["host"] for r in ranks if r["host"]})
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": f"tracekit {_tool_version()}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else None,
        "exit_code": exit_code,
        "world_size": world,
        "backend": str(first.get("backend", "") or next(
            (p.get("backend") for p in parts if p.get("backend")), "")),
        "versions": first.get("versions") or {},
        "hosts": hosts,
        "profiler": first.get("profiler") or {},
        "ranks": ranks,
        "model": model,
        "overhead": _overhead(profiled, unprofiled),
        "errors": all_errors,
    }


def _rank_entry(p: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """One rank's part as its ``ranks[*]`` manifest entry, and the errors it adds (its
    own, and a trace file that is missing from the run folder)."""
    errors = []
    rank = int(p["rank"])
    trace = str(p.get("trace") or "")
    if trace and not (run_dir / trace).is_file():
        errors.append(f"rank {rank}: trace {trace} is missing from the run folder")
        trace = ""
    nccl_log = str(p.get("nccl_log") or "")
    if nccl_log and not (run_dir / nccl_log).is_file():
        nccl_log = ""
    steps = [float(x) for x in p.get("step_times_ms") or []]
    unprof = [float(x) for x in p.get("unprofiled_step_times_ms") or []]
    rank_errors = [str(e) for e in p.get("errors") or []]
    errors += [f"rank {rank}: {e}" for e in rank_errors]
    entry = {
        "rank": rank,
        "host": str(p.get("host", "")),
        "cpu_cores": int(p.get("cpu_cores") or 0),
        "cpu_set": [int(c) for c in p.get("cpu_set") or []],
        "pid": p.get("pid"),
        "trace": trace,
        "nccl_log": nccl_log,
        "steps": [int(s) for s in p.get("steps") or []],
        "step_times_ms": steps,
        "unprofiled_step_ms": _median(unprof),
        "unprofiled_step_times_ms": unprof,
        "errors": rank_errors,
    }
    cut = [int(s) for s in p.get("incomplete_steps") or []]
    if cut:
        entry["incomplete_steps"] = cut
    return entry, errors


def _coverage_errors(parts: Sequence[dict[str, Any]], ranks: list[dict[str, Any]],
                     world: int) -> list[str]:
    """Errors for ranks of the world that reported nothing, or reported no trace."""
    errors = []
    present = {r["rank"] for r in ranks}
    missing = sorted(set(range(world)) - present)
    if missing:
        errors.append(
            f"ranks {missing} of {world} reported nothing (they never reached a step "
            "boundary, or were killed before writing)"
        )
    if not parts:
        errors.append(
            "no rank reported: the command never reached a step boundary (an "
            "optimizer.step() or collectors.step()), or is not a Python/torch job"
        )
    no_trace = [r["rank"] for r in ranks if not r["trace"]]
    if no_trace and parts:
        errors.append(f"no trace for ranks {no_trace}; see their errors above")
    return errors


def _model_of(parts: Sequence[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    """The model table of the first rank that recorded one (None: none did), and an error
    for each rank whose model has a different number of parameters."""
    errors = []
    model, model_rank = None, None
    for p in parts:
        if p.get("model"):
            model, model_rank = p["model"], int(p["rank"])
            break
    if model is not None:
        n_params = len(model.get("parameters") or [])
        for p in parts:
            other = p.get("model")
            if other and len(other.get("parameters") or []) != n_params:
                errors.append(
                    f"rank {p['rank']} recorded {len(other.get('parameters') or [])} "
                    f"parameters, rank {model_rank} {n_params}: the model differs by rank"
                )
    return model, errors


def _overhead(profiled: list[float], unprofiled: list[float]) -> dict[str, Any]:
    """The manifest's ``overhead`` entry: median profiled vs. unprofiled step time."""
    p_med, u_med = _median(profiled), _median(unprofiled)
    return {
        "profiled_step_ms": p_med,
        "unprofiled_step_ms": u_med,
        "ratio": round(p_med / u_med, 4) if p_med and u_med else None,
        "how": "median wall time of active (profiled) steps vs. median of the unprofiled "
               "steps just before warmup and just after the active window, pooled over ranks",
    }


def merge_manifest(
    run_dir: str | Path,
    *,
    command: Sequence[str] | None = None,
    exit_code: int | None = None,
    errors: Sequence[str] = (),
) -> dict[str, Any]:
    """Merge every part of ``run_dir`` into ``manifest.json`` (atomically, under a lock)
    and return the document written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):
        parts, problems = read_parts(run_dir)
        previous = None
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads((run_dir / MANIFEST_NAME).read_text())
        doc = build_manifest(parts, run_dir, command=command, exit_code=exit_code,
                             errors=[*problems, *errors], previous=previous)
        atomic_write_json(run_dir / MANIFEST_NAME, doc, what="manifest.json")
    return doc
