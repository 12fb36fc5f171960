"""Checks of a loaded run as a whole (:func:`tracekit.core.run.load_run` calls them):
what the traces say against the manifest and against each other. Each decision is a
warning (:func:`tracekit.core.warnings.warn`), kept in :attr:`Run.warnings
<tracekit.core.run.Run.warnings>`:

- a trace whose own rank (``distributedInfo.rank``) disagrees with the manifest: the
  manifest's rank is used (:func:`check_trace_rank`);
- steps the manifest records as incomplete (the job ended during them) are left out:
  their events are removed from the event table;
- ranks outside the world (rank 5 of a world of 2): the world is taken as large as the
  highest rank needs;
- steps some rank lacks are left out of the replay and the step time; ranks that share
  no step at all are a warning here and an error where steps are needed
  (:func:`require_common_steps`).

:func:`missing_path_message` says why a path given on the command line cannot be opened
(a symlink loop is not "no such file").
"""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tracekit.core.warnings import warn
from tracekit.errors import TracekitError

if TYPE_CHECKING:
    from tracekit.core.run import Run
    from tracekit.core.trace_meta import TraceMeta


def missing_path_message(path: Path) -> str:
    """Why ``path`` cannot be opened: a symlink loop, a dangling symlink, or no file."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return "is a symlink loop; point it at the trace file"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symlink loop; point it at the trace file"
            return f"is a symlink to {path.readlink()}, which does not exist; fix the link"
    return "no such file; check the path"


def warn_unreadable_traces(folder: Path, found: list[Path], suffixes: tuple[str, ...]) -> None:
    """Warn about trace-named entries of ``folder`` that are left out because they cannot
    be read as files (a symlink loop, a dangling symlink)."""
    kept = set(found)
    for p in sorted(folder.iterdir()):
        if p not in kept and p.name.endswith(suffixes) and p.is_symlink():
            warn(f"{p}: left out: it {missing_path_message(p).split(';')[0]}")


def check_trace_rank(meta: TraceMeta, rank: int) -> None:
    """Warn when the trace's own ``distributedInfo.rank`` is not ``rank``, the manifest's."""
    if meta.rank_source == "distributedInfo" and meta.rank is not None and meta.rank != rank:
        warn(f"{meta.path}: its distributedInfo.rank is {meta.rank} but the manifest lists "
             f"it as rank {rank}; using the manifest's rank (check ranks[*].trace in "
             "manifest.json)")


def check_run(run: Run) -> None:
    """Every check of the module doc, in order; edits ``run`` in place."""
    _drop_incomplete_steps(run)
    _check_world(run)
    _check_common_steps(run)


def _drop_incomplete_steps(run: Run) -> None:
    if run.manifest is None or not run.manifest.incomplete_steps:
        return
    events = run.events
    drop = np.zeros(len(events), dtype=bool)
    rank_col, step_col = events["rank"].to_numpy(), events["step"].to_numpy()
    for rank, cut in sorted(run.manifest.incomplete_steps.items()):
        meta = run.traces.get(rank)
        if meta is None:
            continue
        present = [s for s in cut if s in meta.steps]
        if not present:
            continue
        left = [s for s in meta.steps if s not in present]
        if not left:
            raise TracekitError(
                f"rank {rank}: every profiled step ({_steps(present)}) is incomplete (the "
                "job ended during it), nothing complete is left to analyse; profile more "
                "steps (tracekit profile --steps N)", path=run.path)
        sel = (rank_col == rank) & np.isin(step_col, present)
        drop |= sel
        run.traces[rank] = replace(meta, steps=left, n_events=meta.n_events - int(sel.sum()))
        warn(f"{meta.path}: step {_steps(present)} left out: the manifest records it as "
             "incomplete (the job ended during it)")
    if drop.any():
        run.events = events[~drop].reset_index(drop=True)


def _check_world(run: Run) -> None:
    ranks = run.ranks
    if not ranks or ranks[-1] < run.world_size:
        return
    outside = [r for r in ranks if r >= run.world_size]
    world = ranks[-1] + 1
    recorded = [m.world_size for m in run.traces.values() if m.world_size]
    if recorded or run.manifest is not None:
        warn(f"rank(s) {_steps(outside)} ({run.traces[outside[0]].path}) outside the world "
             f"of {run.world_size} rank(s) the traces record (distributedInfo.world_size); "
             f"the world is taken as {world} ranks: check each trace's distributedInfo")
    run.world_size = world
    run.notes[:] = [n for n in run.notes if not n.startswith("incomplete world:")]
    if not run.complete:
        run.notes.append(f"incomplete world: traces for {len(ranks)} of {world} ranks "
                         f"({_steps(ranks)}); collectives are timed from the ranks present")


def _rank_steps(run: Run) -> dict[int, set[int]]:
    return {r: set(m.steps) if m.steps else {0} for r, m in sorted(run.traces.items())}


def _check_common_steps(run: Run) -> None:
    per = _rank_steps(run)
    if len(per) < 2:
        return
    common = set.intersection(*per.values())
    every = set.union(*per.values())
    if not common:
        listing = "; ".join(f"rank {r}: {_steps(sorted(s))}" for r, s in list(per.items())[:6])
        warn(f"the ranks share no step ({listing}): nothing can be replayed, and the step "
             "time is taken over each rank's own steps; pass traces of the same steps")
        return
    left_out = sorted(every - common)
    if left_out:
        lacking = sorted(r for r, s in per.items() if not set(left_out) <= s)
        warn(f"step(s) {_steps(left_out)} left out of the replay and the step time: not on "
             f"every rank (rank(s) {_steps(lacking)} lack some); steps on every rank: "
             f"{_steps(sorted(common))}")


def require_common_steps(run: Run) -> list[int]:
    """The steps on every rank (:meth:`Run.steps <tracekit.core.run.Run.steps>`); an error
    saying which rank has which steps when there is none."""
    steps = run.steps()
    if steps or not run.traces:
        return steps
    listing = "; ".join(f"rank {r}: {_steps(sorted(s))}"
                        for r, s in list(_rank_steps(run).items())[:6])
    raise TracekitError(f"the ranks share no step ({listing}), so nothing can be replayed; "
                        "pass traces recorded over the same steps", path=run.path)


def _steps(values: list[int]) -> str:
    """[2, 3, 4, 7] -> '2-4, 7' (as the run's notes write rank lists)."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)
