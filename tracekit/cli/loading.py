"""``--jobs``, ``--no-cache`` and ``--dask``: how a command reads its traces.

Kept apart from :mod:`tracekit.cli.options` so that ``tracekit summary`` does not import
the replay machinery just to read its options.
"""

from __future__ import annotations

import click

from tracekit.core.ingest import IngestOptions

_INGEST_KEY = "tracekit.ingest"


def _remember(ctx: click.Context, param: click.Parameter, value):
    ctx.meta.setdefault(_INGEST_KEY, {})[param.name] = value
    return value


def ingest_options(command=None, *, dask: bool = False):
    """Add ``--jobs`` and ``--no-cache`` (and ``--dask`` with ``dask=True``) to a click
    command; they are read back with :func:`ingest_from_context` (the command's own
    signature does not change)."""
    def decorate(cmd):
        if dask:
            cmd = click.option(
                "--dask", "dask", metavar="ADDRESS", default=None, expose_value=False,
                callback=_remember,
                help="Parse the traces on this dask.distributed cluster (scheduler address "
                     "such as tcp://10.0.0.5:8786, or 'local'); the workers must see the "
                     "trace files at the same paths. Needs pip install 'tracekit[dask]'.")(cmd)
        cmd = click.option(
            "--no-cache", "no_cache", is_flag=True, expose_value=False, callback=_remember,
            help="Parse every trace again: neither read nor write the columnar cache "
                 "(RUN/.tracekit-cache, else ~/.cache/tracekit).")(cmd)
        return click.option(
            "--jobs", "jobs", type=click.IntRange(min=1), default=None, metavar="N",
            expose_value=False, callback=_remember,
            help="Parse traces in N worker processes (default: one per core; 1: in this "
                 "process).")(cmd)
    return decorate(command) if command is not None else decorate


def ingest_from_context(events: str = "all") -> IngestOptions:
    """The ``--jobs`` / ``--no-cache`` / ``--dask`` of the running command; ``events``:
    'graph' for commands that print only what the compact table gives the same
    (summary, replay, graph: :mod:`tracekit.core.reduce`), 'all' for the views."""
    ctx = click.get_current_context(silent=True)
    values = ctx.meta.get(_INGEST_KEY, {}) if ctx is not None else {}
    return IngestOptions(jobs=values.get("jobs"), cache=not values.get("no_cache", False),
                         dask=values.get("dask"), events=events)
