"""Map a function over items in worker processes, results in order, with bounded memory.

:func:`map_ordered` keeps at most ``2 * jobs`` items in flight, so a run of 256 traces
never holds more than a few decoded traces at once (each worker parses one file at a
time and sends back only its compact event table). Workers are forked where that is safe
(Linux, a single-threaded parent: no re-import, copy-on-write pages), spawned otherwise.
An exception in a worker is raised in the caller and the remaining items are cancelled.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import Any


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _context():
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def map_ordered(fn: Callable[[Any], Any], items: Iterable, *, jobs: int,
                initializer: Callable[[], None] | None = None) -> Iterator:
    """``fn(item)`` for every item, in ``jobs`` worker processes, yielded in item order."""
    it = iter(items)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=_context(), initializer=initializer)
    pending: deque = deque()
    try:
        for item in islice(it, 2 * jobs):
            pending.append(pool.submit(fn, item))
        while pending:
            result = pending.popleft().result()
            for item in islice(it, 1):
                pending.append(pool.submit(fn, item))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
