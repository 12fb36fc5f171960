"""tracekit: trace-driven profiler and replayer for distributed PyTorch training.

Front door for library users::

    import tracekit
    run = tracekit.load_run("runs/mlp")          # folder, file, or list of files
    run.events                                   # one columnar event table, every rank
    tracekit.summarize(run)                      # per-rank, per-step breakdown
"""

from __future__ import annotations

from tracekit._version import __version__
from tracekit.core.run import Run, load_run  # noqa: E402
from tracekit.errors import TracekitError  # noqa: E402

__all__ = ["Run", "TracekitError", "__version__", "load_run", "summarize"]


def summarize(run: Run):  # noqa: D401 - thin re-export, imported lazily to keep start-up fast
    """Per-rank, per-step time breakdown; see :func:`tracekit.analysis.breakdown.summarize`."""
    from tracekit.analysis.breakdown import summarize as _summarize

    return _summarize(run)
