"""Read the traces of a run: from the cache, in worker processes, or on a Dask cluster.

:func:`load_traces` turns trace files into ``(events, meta)`` pairs, one per file, in
the order given:

- a file whose cache entry is valid (:mod:`tracekit.core.cache`) is loaded from it, in
  this process (reading a columnar entry is far cheaper than decoding JSON);
- the others are parsed (:func:`tracekit.core.kineto.parse_trace`) in ``jobs`` worker
  processes (:mod:`tracekit.core.parallel`), or in this process when ``jobs`` is 1 or
  one file is left, or on a ``dask.distributed`` cluster with ``dask=ADDRESS``
  (:mod:`tracekit.core.dask_ingest`); each parse writes its cache entry.

With ``events='graph'`` each table is reduced where it was parsed
(:mod:`tracekit.core.reduce`), so only the compact table travels back; the cache keeps
every event. Wherever a trace is parsed, the result is the same table, number for number. What a
parse logs (a skipped malformed event, a trace without steps) is logged here, in this
process, once per file and also when the table comes from the cache.

Example::

    >>> opts = IngestOptions(jobs=4)                               # doctest: +SKIP
    >>> [m.rank for _, _, m in load_traces(files, opts)]           # doctest: +SKIP
    [0, 1, 2, 3]
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from tracekit.core.assemble import Part, PartDamaged, assemble, part_rows
from tracekit.core.cache import (
    DamagedEntry,
    EntryReader,
    TraceCache,
    cache_disabled_by_env,
    meta_fields,
    trace_key,
)
from tracekit.core.reduce import droppable, reduce_events, with_nested_counts
from tracekit.core.trace_meta import TraceMeta
from tracekit.core.warnings import warn
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    """How a run's traces are read (``--jobs``, ``--no-cache``, ``--dask`` on the CLI)."""

    #: worker processes parsing traces; None: one per core; 1: parse in this process
    jobs: int | None = None
    #: read and write the columnar cache (also off when TRACEKIT_NO_CACHE is set)
    cache: bool = True
    #: a folder for every cache entry instead of beside the traces (TRACEKIT_CACHE_DIR)
    cache_dir: str | None = None
    #: a dask.distributed scheduler address ('tcp://host:8786'), 'local' for a local
    #: cluster, or a ``distributed.Client``; parses every trace on that cluster
    dask: Any = None
    #: 'all': every event; 'graph': the compact table (:mod:`tracekit.core.reduce`: host
    #: ops nested inside a host op left out), what summary, replay and graph read
    events: str = "all"

    def __post_init__(self) -> None:
        if self.jobs is not None and (isinstance(self.jobs, bool) or not isinstance(
                self.jobs, int) or self.jobs < 1):
            raise TracekitError(f"jobs must be a whole number >= 1, not {self.jobs!r}; e.g. "
                                "--jobs 4 (default: one per core)")
        if self.events not in ("all", "graph"):
            raise TracekitError(f"events must be 'all' or 'graph', not {self.events!r}")

    @property
    def workers(self) -> int:
        if self.jobs:
            return self.jobs
        from tracekit.core.parallel import available_cores  # the pool's imports: on use

        return available_cores()

    @property
    def use_cache(self) -> bool:
        return self.cache and not cache_disabled_by_env()


@dataclass(frozen=True)
class _Task:
    """One trace to parse, and where its cache entry goes (None: no cache)."""

    path: str
    cache_dir: str | None
    use_cache: bool
    #: the caller's log level, so a spawned worker logs what the caller would
    level: int = logging.WARNING
    parent_pid: int = 0
    #: return the compact table (tracekit.core.reduce); the cache keeps every event
    reduce: bool = False
    #: once the cache entry is written, send back its path instead of the table (the
    #: caller reads the entry straight into the run's columns)
    entry_only: bool = False


class _Capture(logging.Handler):
    """Collects the records one thread logs while it parses one trace."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.thread = threading.get_ident()
        self.records: list[list] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append([record.name, record.levelno, record.getMessage()])


def parse_trace(path: Path) -> tuple[pd.DataFrame, TraceMeta]:
    """:func:`tracekit.core.kineto.parse_trace`, its modules (msgspec, the decoders)
    imported on first use: a run read from the cache never needs them."""
    from tracekit.core.kineto import parse_trace as parse

    return parse(path)


def parse_task(task: _Task) -> tuple[pd.DataFrame | None, dict, list, int, str | None]:
    """Parse one trace and write its cache entry: ``(events, meta fields, logged records,
    pid of the process that parsed it, entry path)``; ``events`` is None when only the
    entry was asked for and written. Runs in a worker process, a Dask worker or here."""
    path = Path(task.path)
    root = logging.getLogger("tracekit")
    if os.getpid() != task.parent_pid:
        root.setLevel(task.level)
    capture = _Capture()
    root.addHandler(capture)
    try:
        events, meta = parse_trace(path)
    finally:
        root.removeHandler(capture)
    fields = meta_fields(meta)
    entry = None
    drop = droppable(events)
    events = with_nested_counts(events, drop)
    if task.use_cache:
        entry = TraceCache(task.cache_dir).store(path, events, fields, capture.records,
                                                 graph_rows=~drop)
        if entry is not None and task.entry_only:
            return None, fields, capture.records, os.getpid(), str(entry)
    if task.reduce:
        events = reduce_events(events, drop)
    return events, fields, capture.records, os.getpid(), None


def _quiet_worker() -> None:
    """In a worker process: records go back to the parent, which logs them once."""
    root = logging.getLogger("tracekit")
    root.handlers[:] = [logging.NullHandler()]
    root.propagate = False


def _replay_logs(records: list) -> None:
    """Log here what a parse logged elsewhere (a worker, a Dask worker, the parse that
    wrote a cache entry); a warning also goes to the run's warnings
    (:func:`tracekit.core.warnings.warn`), as it would have from a parse in this process."""
    for name, level, message in records:
        if level >= logging.WARNING:
            warn(message)
        else:
            logging.getLogger(name).log(level, "%s", message)


def _meta(fields: dict, path: Path) -> TraceMeta:
    return replace(TraceMeta(**fields), path=str(path))


def load_traces(files: Sequence[Path], options: IngestOptions | None = None, *,
                progress: bool = False) -> Iterator[tuple[Path, Part, TraceMeta]]:
    """``(path, part, meta)`` for every file, in order (see the module doc); a part is the
    trace's table, or its cache entry (an :class:`~tracekit.core.cache.EntryReader`,
    read by :func:`assemble_parts`)."""
    options = options or IngestOptions()
    files = [Path(f) for f in files]
    cache = TraceCache(options.cache_dir) if options.use_cache else None
    compact = options.events == "graph"
    t0 = time.perf_counter()
    done: dict[int, tuple[Part, TraceMeta, str]] = {}
    todo = []
    for i, f in enumerate(files):
        reader = cache.open(f) if cache is not None else None
        if reader is None or (compact and reader.graph_rows is None):
            todo.append(i)
            continue
        _replay_logs(reader.logs)
        done[i] = (reader, _meta(reader.meta, f), "cache")
    level = logging.getLogger("tracekit").getEffectiveLevel()
    tasks = [_Task(str(files[i]), options.cache_dir, cache is not None, level, os.getpid(),
                   compact, entry_only=options.dask is None) for i in todo]
    parsed = _parse_all(tasks, options)
    n_out = 0
    for i, f in enumerate(files):
        if i in done:
            part, meta, how = done.pop(i)
        else:
            events, fields, records, pid, entry = next(parsed)
            if pid != os.getpid():  # logged in another process: say it here
                _replay_logs(records)
            meta, how = _meta(fields, f), "parsed"
            part = events if events is not None else _reopen(f, Path(entry), options)
        n_out += 1
        if progress:
            log.info("parsed %s (rank %s, %d events%s) [%d/%d, %.1fs]", f.name, meta.rank,
                     part_rows(part, compact), ", from the cache" if how == "cache" else "",
                     n_out, len(files), time.perf_counter() - t0)
        yield f, part, meta


def _reopen(trace: Path, entry: Path, options: IngestOptions) -> Part:
    """The entry a worker just wrote; if it is gone or changed since (the trace was
    rewritten meanwhile), the trace parsed here."""
    try:
        reader = EntryReader.open(entry, trace_key(trace))
    except (DamagedEntry, OSError):
        reader = None
    if reader is not None:
        return reader
    return _parse_here(trace, options)


def _parse_here(trace: Path, options: IngestOptions) -> pd.DataFrame:
    task = _Task(str(trace), options.cache_dir, options.use_cache, parent_pid=os.getpid(),
                 reduce=options.events == "graph")
    return parse_task(task)[0]


def assemble_parts(parts: list[tuple[int, Path, Part]],
                   options: IngestOptions | None = None) -> pd.DataFrame:
    """The run's event table from ``(rank, path, part)`` in rank order
    (:func:`tracekit.core.assemble.assemble`); an entry found damaged while it is read is
    logged, its trace parsed again, and the table assembled anew."""
    options = options or IngestOptions()
    parts = list(parts)
    while True:
        try:
            return assemble([(r, p) for r, _, p in parts], compact=options.events == "graph")
        except PartDamaged as exc:
            rank, path, part = parts[exc.index]
            log.warning("%s: damaged cache entry %s (%s); parsing the trace again", path,
                        getattr(part, "path", "?"), exc)
            parts[exc.index] = (rank, path, _parse_here(path, options))


def _parse_all(tasks: list[_Task], options: IngestOptions) -> Iterator:
    if not tasks:
        return iter(())
    if options.dask is not None:
        from tracekit.core.dask_ingest import map_on_dask

        return map_on_dask(parse_task, tasks, options.dask, jobs=options.jobs)
    jobs = min(options.workers, len(tasks)) if len(tasks) > 1 else 1
    if jobs <= 1:
        return (parse_task(t) for t in tasks)
    return _pooled(tasks, jobs)


def _pooled(tasks: list[_Task], jobs: int) -> Iterator:
    """:func:`map_ordered` over the tasks; if the pool cannot run (a worker died: killed,
    out of memory, or a spawned worker that could not start its parent's script), the rest
    is parsed in this process, with a warning. (The pool's modules are imported here: a
    run of one trace never needs them.)"""
    from concurrent.futures.process import BrokenProcessPool

    from tracekit.core.parallel import map_ordered

    done = 0
    try:
        for result in map_ordered(parse_task, tasks, jobs=jobs, initializer=_quiet_worker):
            done += 1
            yield result
    except BrokenProcessPool as exc:
        log.warning("worker processes failed (%s); parsing the remaining %d trace(s) in "
                    "this process (--jobs 1 does so from the start)", exc, len(tasks) - done)
        for t in tasks[done:]:
            yield parse_task(replace(t, parent_pid=os.getpid(), entry_only=False))
