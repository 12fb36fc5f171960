"""The NCCL environment a profiled rank gets, so that NCCL logs every collective it runs.

NCCL reads these variables when it initializes (the first communicator), so the collector
sets them in each rank's own environment from inside ``dist.init_process_group``, where
both the rank and the backend are known. Variables the job already set are never
changed, and if the job set ``NCCL_DEBUG`` itself, its NCCL logging is left entirely alone.

Before / after, for rank 1 of an NCCL job with nothing set::

    {}  ->  {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,COLL",
             "NCCL_DEBUG_FILE": "/abs/run/nccl/rank1.log",
             "NCCL_DEBUG_TIMESTAMP_LEVELS": "WARN,INFO",
             "NCCL_DEBUG_TIMESTAMP_FORMAT": "[%s.%6f] "}

``COLL`` gives one line per collective (``AllReduce: opCount 3 ... count 262144 datatype 7
...``, see :mod:`collectors.nccl_log`); ``INIT`` adds the communicator lines (which comm
is which rank of how many). The timestamp variables exist from NCCL 2.26 on (older
versions ignore them): epoch seconds with microseconds let the log be aligned to the
trace by time instead of by order. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

NCCL_LOG_DIR = "nccl"


def nccl_log_name(rank: int) -> str:
    """``nccl/rank3.log``: where rank 3's NCCL log goes, relative to the run folder."""
    return f"{NCCL_LOG_DIR}/rank{rank}.log"


def uses_nccl(backend: str | None, cuda_available: bool) -> bool:
    """True when the process group will (or may) run NCCL.

    ``backend`` as given to ``init_process_group``: ``'nccl'``, ``'cpu:gloo,cuda:nccl'``,
    ``'gloo'``, or None / '' when the job left it to torch (NCCL whenever CUDA is there).
    """
    if backend:
        return "nccl" in str(backend).lower()
    return cuda_available


def nccl_debug_env(
    environ: Mapping[str, str],
    *,
    run_dir: str | Path,
    rank: int,
    backend: str | None,
    cuda_available: bool,
) -> dict[str, str]:
    """The variables to add to ``environ`` (only those it lacks); {} when NCCL is not in
    play or the job manages NCCL logging itself (it set ``NCCL_DEBUG``)."""
    if not uses_nccl(backend, cuda_available) or environ.get("NCCL_DEBUG"):
        return {}
    wanted = {
        "NCCL_DEBUG": "INFO",
        "NCCL_DEBUG_SUBSYS": "INIT,COLL",
        "NCCL_DEBUG_FILE": str(Path(run_dir).resolve() / nccl_log_name(rank)),
        "NCCL_DEBUG_TIMESTAMP_LEVELS": "WARN,INFO",
        "NCCL_DEBUG_TIMESTAMP_FORMAT": "[%s.%6f] ",
    }
    return {k: v for k, v in wanted.items() if not environ.get(k)}
