"""Traces that do not say which rank they are.

A trace from a single-GPU job (an inference server, a benchmark, a notebook) has no
``distributedInfo.rank`` and usually no rank number in its name. Alone, it is rank 0 of
a world of 1, and the run's notes say so. Several such files together cannot be told
apart: the error names them and says how to rename them (``rank0.json``, ``rank1.json``,
...), or to pass one at a time.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tracekit.core.trace_meta import TraceMeta
from tracekit.errors import TracekitError

#: ``TraceMeta.rank_source`` of a lone trace without rank information
ASSUMED = "assumed"


def unranked_trace(path: Path, meta: TraceMeta, files: list[Path]) -> tuple[int, TraceMeta]:
    """``(0, meta)`` for the only trace of a run; a :class:`TracekitError` otherwise."""
    if len(files) == 1:
        world = meta.world_size if meta.world_size and meta.world_size > 1 else 1
        return 0, replace(meta, rank=0, rank_source=ASSUMED, world_size=world)
    names = ", ".join(p.name for p in files[:4]) + (", ..." if len(files) > 4 else "")
    raise TracekitError(
        f"cannot tell which rank this trace is: it has no distributedInfo.rank and its name "
        f"has no rank number, and {len(files)} traces were given ({names}); rename each "
        "after its rank (rank0.json.gz, rank1.json.gz, ...) or pass one trace at a time",
        path=str(path),
    )


def unranked_note(metas: dict[int, TraceMeta]) -> list[str]:
    """The run note for a trace whose rank was assumed, if any."""
    assumed = [m for m in metas.values() if m.rank_source == ASSUMED]
    if not assumed:
        return []
    m = assumed[0]
    world = f"a world of {m.world_size}" if (m.world_size or 1) > 1 else "a world of 1"
    return [f"{Path(m.path).name} has no rank information (no distributedInfo.rank, no rank "
            f"number in its name): read as rank 0 of {world}"]
