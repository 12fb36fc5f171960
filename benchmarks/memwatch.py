"""Peak memory of a process and its children, sampled from outside: the figure the
scale benchmark prints beside ``ru_maxrss``.

``ru_maxrss`` is one process's own high-water mark: it misses worker processes (the
parallel parse) and counts pages shared with them twice if summed. :func:`run_measured`
samples the PSS (proportional set size: shared pages split between the processes that
map them) of this process and every descendant from ``/proc/<pid>/smaps_rollup`` every
``interval`` seconds, from outside the measured process, and keeps the largest sum.
Linux only (elsewhere it reports 0). Sampling misses peaks shorter than the interval;
``ru_maxrss`` (the measured process's own, printed beside) does not.

    r = run_measured([sys.executable, "-m", "tracekit", "replay", "runs/x", "--json"])
    print(r["wall_s"], r["peak_mb"])
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").glob("*/children"))
    except OSError:  # the process ended while we looked
        return out
    for task in tasks:
        try:
            out += [int(c) for c in task.read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_pss_mb(pid: int | None = None) -> float:
    """PSS of ``pid`` (default: this process) and all its descendants, MB."""
    todo, total = [pid or os.getpid()], 0
    while todo:
        p = todo.pop()
        total += _pss_kb(p)
        todo += _children(p)
    return total / 1024


def run_measured(cmd: list[str], *, interval: float = 0.05, **popen) -> dict:
    """Run ``cmd`` and sample its process tree's PSS from outside (no thread inside it, so
    it forks its workers as it would anywhere): ``{"rc", "stdout", "stderr", "wall_s",
    "peak_mb"}``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, **popen)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, tree_pss_mb(proc.pid))
            time.sleep(interval)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace"), "wall_s": wall,
                "peak_mb": peak}
