"""Warnings: what tracekit left out or doubted while reading a run, said once on stderr
and kept for the ``--json`` outputs.

Nothing is dropped silently: a damaged event, a step the manifest records as incomplete,
a step some rank lacks, a rank outside the world. Each such decision calls :func:`warn`,
which logs the message at WARNING level (the CLI prints ``warning: <message>``) and adds
it to the innermost :func:`collecting` block, whatever the log level (``-q`` silences
stderr, not the JSON). :func:`tracekit.core.run.load_run` collects the warnings of
everything it does into :attr:`Run.warnings <tracekit.core.run.Run.warnings>`::

    >>> with collecting() as found:
    ...     warn("rank0.json: 3 events dropped (negative dur)")
    >>> found
    ['rank0.json: 3 events dropped (negative dur)']
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tracekit.log import get_logger

log = get_logger("tracekit.warnings")

_SINK: ContextVar[list[str] | None] = ContextVar("tracekit_warnings", default=None)


def warn(message: str) -> None:
    """Log ``message`` as a warning and keep it in the active :func:`collecting` block
    (once: the same message twice is kept once)."""
    log.warning("%s", message)
    sink = _SINK.get()
    if sink is not None and message not in sink:
        sink.append(message)


@contextmanager
def collecting() -> Iterator[list[str]]:
    """Collect the :func:`warn` messages of the block into the list it yields; an outer
    block also receives them."""
    outer = _SINK.get()
    found: list[str] = []
    token = _SINK.set(found)
    try:
        yield found
    finally:
        _SINK.reset(token)
        if outer is not None:
            outer.extend(m for m in found if m not in outer)
