"""Parse a run's traces on a ``dask.distributed`` cluster (``--dask ADDRESS``).

Each trace becomes one task: a Dask worker reads the file, parses it into its columnar
event table (and writes its cache entry), and only that table travels back, a few times
smaller than the JSON and never the decoded events. Results are gathered one at a time,
in order, and released on the cluster once received, so the client holds what the graph
needs and nothing more. Scheduling, retries and placement are Dask's.

The workers must see the trace files at the same paths as this process (a shared
filesystem, e.g. the cluster's home or scratch), and have tracekit installed
(``pip install 'tracekit[dask]'`` on every node). ``ADDRESS`` is the scheduler's
(``tcp://10.0.0.5:8786``; ``dask scheduler`` prints it), ``local`` for a local cluster
of one worker process per core, or a ``distributed.Client`` in library code.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)

INSTALL_HINT = "install it with pip install 'tracekit[dask]' (dask.distributed)"


def _client(address: Any, jobs: int | None):
    """A ``distributed.Client`` for ``address``, and whether this module made it."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise TracekitError(f"--dask needs dask.distributed, which is not installed; "
                            f"{INSTALL_HINT}") from None
    if isinstance(address, Client):
        return address, False
    if not isinstance(address, str) or not address.strip():
        raise TracekitError(f"--dask {address!r}: give a scheduler address such as "
                            "tcp://10.0.0.5:8786, or 'local'")
    if address.strip() == "local":
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), True
    try:
        return Client(address.strip(), timeout="20s"), True
    except (OSError, TimeoutError) as exc:
        raise TracekitError(f"--dask {address}: cannot reach the Dask scheduler ({exc}); is "
                            "'dask scheduler' running there, and is the port open?") from None


def _on_worker(fn: Callable, task: Any):
    """Run ``fn(task)`` on a worker; a trace the worker cannot see gets a clear error."""
    path = Path(getattr(task, "path", ""))
    if path and not path.exists():
        raise TracekitError(f"Dask worker {socket.gethostname()} cannot see this file; the "
                            "workers must reach the traces at the same path (a shared "
                            "filesystem)", path=str(path))
    return fn(task)


def map_on_dask(fn: Callable, tasks: list, address: Any, *,
                jobs: int | None = None) -> Iterator:
    """``fn(task)`` for every task on the cluster at ``address``, yielded in order."""
    client, owned = _client(address, jobs)
    try:
        futures = client.map(_on_worker, [fn] * len(tasks), tasks, pure=False)
        log.info("parsing %d trace(s) on the Dask cluster %s", len(tasks),
                 getattr(client, "scheduler", None) and client.scheduler.address)
        for i in range(len(futures)):
            fut, futures[i] = futures[i], None
            result = fut.result()
            fut.release()
            yield result
    finally:
        if owned:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
