"""Whether a graph can be replayed: its structural checks, then the engine itself.

:func:`check_graph` returns every problem found (or raises the first as a
:class:`TracekitError`): the structural ones of
:func:`tracekit.graph.checks.check_structure` (arrays of inconsistent length, dangling
edges, unknown lanes, lane-order edges that are not chains, negative durations, two
participants of one collective on the same lane) and, when there are none, cycles: the
graph is replayed, and a replay that cannot order its nodes names a cycle::

    >>> check_graph(g)                                    # doctest: +SKIP
    ['cycle: node 12 (aten::mm, rank0 cpu main) -> node 40 (gloo:all_reduce, ...) -> node 12']
"""

from __future__ import annotations

from replay.engine import schedule_full
from tracekit.errors import TracekitError
from tracekit.graph.checks import check_structure
from tracekit.graph.model import Graph


def check_graph(graph: Graph, *, raise_on_error: bool = False) -> list[str]:
    """Every problem of ``graph`` as one line each ([] when it is sound and replays)."""
    problems = check_structure(graph, raise_on_error=raise_on_error)
    if not problems:
        try:
            schedule_full(graph)
        except TracekitError as exc:
            problems.append(str(exc))
    if problems and raise_on_error:
        raise TracekitError(problems[0])
    return problems
