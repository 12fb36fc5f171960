"""tracekit: trace-driven profiler and replayer for distributed PyTorch training.

Front door for library users::

    import tracekit
    run = tracekit.load_run("runs/mlp")          # folder, file, or list of files
    run.events                                   # one columnar event table, every rank
    tracekit.summarize(run)                      # per-rank, per-step breakdown
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracekit._version import __version__
from tracekit.errors import TracekitError

if TYPE_CHECKING:
    from tracekit.core.run import Run, load_run

__all__ = ["Run", "TracekitError", "__version__", "load_run", "summarize"]


def __getattr__(name: str):
    """``Run`` and ``load_run`` on first use: importing a light module such as
    ``tracekit.core.atomic`` (as every profiled rank does at exit) must not pull in
    pandas."""
    if name in ("Run", "load_run"):
        from tracekit.core import run

        return getattr(run, name)
    raise AttributeError(f"module 'tracekit' has no attribute {name!r}")


def summarize(run: Run):  # noqa: D401 - thin re-export, imported lazily to keep start-up fast
    """Per-rank, per-step time breakdown; see :func:`tracekit.analysis.breakdown.summarize`."""
    from tracekit.analysis.breakdown import summarize as _summarize

    return _summarize(run)
