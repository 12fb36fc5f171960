"""What a fresh allocation costs a copy: a tensor clone on warm vs fresh memory, alone and
with a second process doing the same (as the other rank does in a 2-rank job).

    python benchmarks/clone_cost.py            # 15 MB, the DeAR bucket of the mlp sample
    python benchmarks/clone_cost.py --mb 4

Warm: the same block is reused from one clone to the next. Fresh: glibc's free memory is
handed back (``malloc_trim``) before each clone, so the clone page-faults, as in a training
step whose own allocations took the reusable blocks; ``tracekit calibrate`` times issue
ops that way (``collectors/calibrate_worker.py``). Prints medians of 30 clones.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import subprocess
import sys
import time


def _child(mb: float, fresh: bool) -> float:
    import torch

    torch.set_num_threads(1)
    trim = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    x = torch.ones(int(mb * 2**20) // 4)
    times = []
    for _ in range(30):
        if fresh and trim is not None:
            trim(0)
        t0 = time.perf_counter()
        y = x.clone()
        times.append(time.perf_counter() - t0)
        del y
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=15.0)
    ap.add_argument("--child", choices=["warm", "fresh"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(f"{_child(args.mb, args.child == 'fresh'):.2f}")
        return
    cmd = [sys.executable, __file__, "--mb", str(args.mb), "--child"]
    for kind in ("warm", "fresh"):
        alone = float(subprocess.run([*cmd, kind], capture_output=True, text=True,
                                     check=True).stdout)
        pair = [subprocess.Popen([*cmd, kind], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
        both = [float(p.communicate()[0]) for p in pair]
        print(f"clone of {args.mb:g} MB, {kind} memory: alone {alone:.2f} ms, two processes "
              f"at once {max(both):.2f} / {min(both):.2f} ms (median of 30)")


if __name__ == "__main__":
    main()
