"""Options shared by the commands that replay and predict (``replay``, ``timeline``,
``report``): one spelling, one meaning, one :class:`~tracekit.api.PredictionOptions`."""

from __future__ import annotations

import click

from replay.whatif.registry import help_table
from tracekit.api import INTERFERENCE_MODELS, PredictionOptions, Session
from tracekit.cli.loading import ingest_from_context
from tracekit.errors import TracekitError


def what_if_help() -> str:
    """The what-if list for ``--help``, read from the registry (one line each)."""
    lines = ["\b", "What-ifs (--what-if SPEC; '+' combines, a..b sweeps powers of two, a,b,c lists):"]
    lines += [f"  {syntax:<16} {summary}" + (f" (e.g. {example})" if example != syntax else "")
              for syntax, example, summary in help_table()]
    return "\n".join(lines)


class WhatIfCommand(click.Command):
    """A command whose ``--help`` ends with the registered what-ifs, read when the help
    is shown (so a what-if added to the registry is listed without touching the CLI)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(what_if_help())


def prediction_options(command):
    """Add ``--step``, ``--comm-model`` and ``--interference`` to a click command; the
    command receives them as ``steps``, ``comm_model`` and ``interference``."""
    command = click.option(
        "--interference", type=click.Choice(list(INTERFERENCE_MODELS)), default="auto",
        show_default=True,
        help="How overlap slows work down in a what-if: 'cores' (CPU-only runs: all threads "
             "of a host share its cores, comm and compute alike), 'factor' (compute slows "
             "by the factor fitted on the run while comm runs: GPUs), 'none'; 'auto' picks "
             "'cores' for CPU-only runs, else 'factor'.")(command)
    command = click.option(
        "--comm-model", type=click.Path(dir_okay=False), default=None,
        help="Collective cost model written by 'tracekit calibrate' (comm.json); default: "
             "fitted on the run's own collectives.")(command)
    return click.option(
        "--step", "steps", type=int, multiple=True,
        help="Replay (and draw) only this step, the N of ProfilerStep#N (repeatable). "
             "Default: every step present on every rank.")(command)


def open_session(path: tuple[str, ...], steps: tuple[int, ...], comm_model: str | None,
                 interference: str, *, events: str = "all") -> Session:
    """The run at ``path`` with the shared prediction options (and the command's
    ``--jobs`` / ``--no-cache`` / ``--dask``)."""
    options = PredictionOptions(steps=steps or None, comm_model=comm_model,
                                interference=interference)
    return Session(list(path), options, progress=True, ingest=ingest_from_context(events))


def parse_ranks(text: str | None) -> list[int] | None:
    """``'0,1'`` -> [0, 1]; ``'0-3,8'`` -> [0, 1, 2, 3, 8]; None -> None."""
    if text is None or not text.strip():
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise TracekitError(f"--ranks {text!r} is not a list of ranks; write e.g. 0,1 or "
                            "0-3,8") from None
    return sorted(set(out))
