"""Load a run: a run folder written by ``tracekit profile``, any folder of Kineto traces,
one trace file, or a list of files. Every command starts here.

Ranks come from the manifest, else each trace's ``distributedInfo.rank``, else the file
name (``rank3``, ``rank-3``, ``worker3``); a lone trace without any is rank 0. A run
folder's ``nccl/rank<N>.log`` (NCCL's own log, captured by ``tracekit profile``) is attached
to the NCCL kernels (:mod:`tracekit.core.nccl_attach`). Problems a user can fix raise
:class:`~tracekit.errors.TracekitError` with a one-line message naming the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from tracekit.core.assemble import Part
from tracekit.core.formats import foreign_files_hint
from tracekit.core.ingest import IngestOptions, assemble_parts, load_traces
from tracekit.core.nccl_attach import attach_logs_to_events
from tracekit.core.run_checks import (
    check_run,
    check_trace_rank,
    missing_path_message,
    warn_unreadable_traces,
)
from tracekit.core.schema import empty_events
from tracekit.core.trace_meta import TraceMeta
from tracekit.core.unranked import unranked_note, unranked_trace
from tracekit.core.warnings import collecting
from tracekit.errors import TracekitError
from tracekit.log import get_logger

if TYPE_CHECKING:
    from tracekit.core.manifest import Manifest

log = get_logger(__name__)

_TRACE_SUFFIXES = (".json", ".json.gz")
#: tracekit.core.manifest.MANIFEST_NAME (that module is imported only for a folder that
#: has one: a run read from plain traces never needs it)
_MANIFEST = "manifest.json"
_NOT_TRACES = {_MANIFEST, "comm.json", "calibration.json"}


@dataclass(kw_only=True)
class Run:
    """Everything tracekit knows about one recorded run.

    ``events`` is one event table (see :mod:`tracekit.core.schema`) holding every rank,
    sorted by ``(rank, lane_kind, lane, ts_ns)``.
    """

    #: the folder or file the run was loaded from (the first file for a list).
    path: str
    #: every rank's events, concatenated.
    events: pd.DataFrame
    #: per-rank trace metadata, by rank.
    traces: dict[int, TraceMeta]
    #: the run folder's manifest, or None for a bare folder of traces.
    manifest: Manifest | None = None
    #: the job's world size: from the manifest or traces, else the number of ranks present.
    world_size: int = 1
    #: 'gloo', 'nccl', ... or '' when nothing says.
    backend: str = ""
    #: statements about how the run was interpreted (missing steps, incomplete world, ...).
    notes: list[str] = field(default_factory=list)
    #: what was left out or doubted while reading it (dropped events, incomplete steps,
    #: steps some rank lacks, ...): :mod:`tracekit.core.warnings`; every ``--json`` has it
    warnings: list[str] = field(default_factory=list)

    @property
    def ranks(self) -> list[int]:
        """The ranks whose traces are present, ascending."""
        return sorted(self.traces)

    @property
    def complete(self) -> bool:
        """True when every rank of the world has a trace."""
        return len(self.traces) >= self.world_size

    @property
    def has_gpu(self) -> bool:
        return bool((self.events["lane_kind"] == "gpu").any())

    def rank_events(self, rank: int) -> pd.DataFrame:
        """The event table of one rank (a view-like slice; do not modify in place)."""
        bounds = self._rank_bounds()
        if bounds is None:
            return self.events[self.events["rank"].to_numpy() == rank]
        lo, hi = bounds.get(rank, (0, 0))
        return self.events.iloc[lo:hi]

    def _rank_bounds(self) -> dict[int, tuple[int, int]] | None:
        """``{rank: (first row, end row)}`` when ``events`` is sorted by rank (as loaded),
        else None; computed once per events table (a slice per rank is then O(1))."""
        events = self.events
        cached = self.__dict__.get("_bounds")
        if cached is not None and cached[0] is events and cached[1] == len(events):
            return cached[2]
        ranks = events["rank"].to_numpy()
        bounds = None
        if len(ranks) < 2 or bool((ranks[1:] >= ranks[:-1]).all()):
            starts = np.flatnonzero(np.concatenate([[True], ranks[1:] != ranks[:-1]])) if len(
                ranks) else np.zeros(0, dtype=np.int64)
            ends = np.append(starts[1:], len(ranks))
            bounds = {int(ranks[a]): (int(a), int(b)) for a, b in zip(starts, ends)}
        self.__dict__["_bounds"] = (events, len(events), bounds)
        return bounds

    def steps(self) -> list[int]:
        """Step numbers present on every rank (a step cut short on one rank is dropped)."""
        sets = [set(m.steps) if m.steps else {0} for m in self.traces.values()]
        common = set.intersection(*sets) if sets else set()
        return sorted(common)


def discover_trace_files(folder: Path) -> list[Path]:
    """Trace files directly inside ``folder`` (``*.json``, ``*.json.gz``), sorted."""
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.endswith(_TRACE_SUFFIXES) and p.name not in _NOT_TRACES
    ]
    warn_unreadable_traces(folder, files, _TRACE_SUFFIXES)
    return files


def _resolve_inputs(source: str | Path | Sequence[str | Path]) -> tuple[Path, list[Path], Manifest | None]:
    if isinstance(source, (str, Path)):
        sources = [Path(source)]
    else:
        sources = [Path(s) for s in source]
        if not sources:
            raise TracekitError("no trace given; pass a run folder or trace files")
    if len(sources) == 1 and sources[0].is_dir():
        folder = sources[0]
        manifest = _manifest_of(folder)
        if manifest is not None and manifest.trace_files:
            files = [folder / f for f in manifest.trace_files.values()]
            missing = [str(f) for f in files if not f.exists()]
            if missing:
                raise TracekitError(
                    f"manifest lists trace {missing[0]} but it is missing; the run was cut "
                    "short or files were moved: re-run 'tracekit profile'",
                    path=str(folder),
                )
        else:
            files = discover_trace_files(folder)
        if not files:
            nested = sorted({p.parent for p in folder.glob("*/*")
                             if p.is_file() and p.name.endswith(_TRACE_SUFFIXES)})
            hint = (f"its subfolder {nested[0]} has some: pass that folder" if nested else
                    foreign_files_hint(folder) or
                    "point at the folder torch.profiler wrote, or record one with "
                    "'tracekit profile'")
            raise TracekitError(f"folder holds no trace files (*.json or *.json.gz); {hint}",
                                path=str(folder))
        return folder, files, manifest
    for s in sources:
        if s.is_dir():
            raise TracekitError("pass either one folder or a list of trace files, not both",
                                path=str(s))
        if not s.exists():
            raise TracekitError(missing_path_message(s), path=str(s))
    return sources[0], sources, None


def load_run(
    source: str | Path | Sequence[str | Path],
    *,
    progress: bool = False,
    ingest: IngestOptions | None = None,
) -> Run:
    """Load a run folder, a trace file, or a list of trace files into a :class:`Run`.

    Args:
        source: a folder (with or without ``manifest.json``), one file, or a list of files.
        progress: log one line per file parsed (the CLI turns this on for big runs).
        ingest: worker processes, cache and Dask cluster for reading the traces
            (:class:`~tracekit.core.ingest.IngestOptions`; default: one worker per core,
            cache on).

    What was left out or doubted on the way is logged as warnings and kept in
    :attr:`Run.warnings` (:mod:`tracekit.core.run_checks`, :mod:`tracekit.core.validate`),
    also for traces parsed in worker processes or read from the cache.
    """
    with collecting() as found:
        run = _load_run(source, progress=progress, ingest=ingest)
        check_run(run)
    run.warnings = found
    return run


def _load_run(source: str | Path | Sequence[str | Path], *, progress: bool,
              ingest: IngestOptions | None) -> Run:
    root, files, manifest = _resolve_inputs(source)
    rank_from_manifest = {}
    if manifest is not None:
        rank_from_manifest = {str(root / f): r for r, f in manifest.trace_files.items()}

    tables: dict[int, tuple[Path, Part]] = {}
    metas: dict[int, TraceMeta] = {}
    for f, part, meta in load_traces(files, ingest, progress=progress):
        rank = rank_from_manifest.get(str(f), meta.rank)
        if rank is None:
            rank, meta = unranked_trace(f, meta, files)
        if str(f) in rank_from_manifest:
            check_trace_rank(meta, rank)
            meta = replace(meta, rank=rank, rank_source="manifest")
        if rank in metas:
            raise TracekitError(
                f"two traces claim rank {rank}: {metas[rank].path} and {f}; pass one trace "
                "per rank (remove the duplicate or pass the files explicitly)",
                path=str(f),
            )
        tables[rank] = (f, part)
        metas[rank] = meta

    # every part's rank column is its rank here (manifest, file name, ... included)
    events = assemble_parts([(r, *tables.pop(r)) for r in sorted(tables)], ingest)
    events, nccl_notes = attach_logs_to_events(root, events)  # <run>/nccl/rank*.log
    world = max(
        [m.world_size or 0 for m in metas.values()]
        + [manifest.world_size if manifest else 0, len(metas)]
    )
    backend = (manifest.backend if manifest else "") or next(
        (m.backend for m in metas.values() if m.backend), ""
    )
    run = Run(
        path=str(root),
        events=events,
        traces=metas,
        manifest=manifest,
        world_size=world,
        backend=backend,
    )
    run.notes.extend(unranked_note(metas))
    run.notes.extend(nccl_notes)
    if not run.complete:
        run.notes.append(
            f"incomplete world: traces for {len(metas)} of {world} ranks "
            f"({_ranges(run.ranks)}); collectives are timed from the ranks present"
        )
    no_steps = [r for r, m in metas.items() if not m.has_steps]
    if no_steps:
        run.notes.append(
            f"no ProfilerStep#N annotations on rank(s) {_ranges(no_steps)}: each trace is "
            "treated as one window (step 0)"
        )
    return run


def _manifest_of(folder: Path) -> Manifest | None:
    """The folder's ``manifest.json`` (:func:`tracekit.core.manifest.read_manifest`), or
    None when it has none."""
    if not (folder / _MANIFEST).exists():
        return None
    from tracekit.core.manifest import read_manifest

    return read_manifest(folder)


def concat_events(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-rank event tables into one, keeping the schema.

    ``pd.concat`` turns categoricals whose categories differ into plain strings (and
    costs a copy through Python objects); this unions the categories instead, so a
    64-rank run concatenates in numpy. Column by column, each input column is released
    once copied (the tables are emptied): the peak is the result plus one column, not
    twice the run.
    """
    if not tables:
        return empty_events()
    if len(tables) == 1:
        return tables[0].reset_index(drop=True)
    columns = {}
    for col in list(tables[0].columns):
        if isinstance(tables[0][col].dtype, pd.CategoricalDtype):
            columns[col] = union_categoricals([t[col] for t in tables])
        else:
            columns[col] = np.concatenate([t[col].to_numpy() for t in tables])
        for t in tables:
            del t[col]
    return pd.DataFrame(columns, copy=False)


def _ranges(ranks: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, run_start, prev = [], None, None
    for r in sorted(ranks):
        if run_start is None:
            run_start = prev = r
        elif r == prev + 1:
            prev = r
        else:
            out.append(f"{run_start}-{prev}" if prev != run_start else f"{run_start}")
            run_start = prev = r
    if run_start is not None:
        out.append(f"{run_start}-{prev}" if prev != run_start else f"{run_start}")
    return ", ".join(out)
