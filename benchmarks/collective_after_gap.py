"""How long a blocking collective takes after an idle gap, against back to back.

    python benchmarks/cluster.py --link 2gbit -- torchrun --nproc_per_node 2 \\
        --master_addr 127.0.0.1 benchmarks/collective_after_gap.py --bytes 1050624

Each rank all-gathers ``--bytes`` (the full output, as ``comm_bytes`` counts it) with
``async_op=False``, as FSDP2 unshards on CPU. Per gap (ms) and kind it times ``--calls``
calls, each after a barrier and then:

- ``busy``: one untimed all-gather right before it (the link busy, as the calibration
  times its curves);
- ``sleepG``: G ms of sleep (the link and the cores idle);
- ``computeG``: G ms of matmuls on the calling thread (the link idle, the core busy,
  as between FSDP2's collectives).

Rank 0 prints one JSON object of median milliseconds. On a token-bucket link the gap lets
the bucket refill, so the transfer passes at once; the calls after a gap also pay for
waking up. Measured on this machine (2 cores, the 1 MB unit of the FSDP2 MLP; busy vs
the median over every gap and kind) at 2 / 4 / 8 Gbit/s: 3.94 / 2.66 / 1.51 vs 3.21 /
2.33 / 1.56 ms (the same loop before it was this script: 4.13 / 2.27 / 2.11 vs 2.10 /
2.21 / 2.59 ms). Single calls scatter by 2-3x: read the medians of several runs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bytes", type=int, default=1 << 20, help="all-gathered bytes (output)")
    ap.add_argument("--gaps", default="1,2,4,8,16,32", help="gaps before a call, ms")
    ap.add_argument("--calls", type=int, default=12, help="timed calls per gap and kind")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    torch.set_num_threads(1)
    shard = torch.ones(max(1, args.bytes // 4 // world))
    out = torch.empty(shard.numel() * world)
    mat = torch.randn(256, 256)

    def compute(ms: float) -> None:
        end = time.perf_counter() + ms / 1e3
        while time.perf_counter() < end:
            mat @ mat

    def median_ms(before) -> float:
        times = []
        for _ in range(args.calls):
            dist.barrier()
            before()
            t0 = time.perf_counter_ns()
            dist.all_gather_into_tensor(out, shard)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        times.sort()
        return round(times[len(times) // 2], 3)

    res = {"busy": median_ms(lambda: dist.all_gather_into_tensor(out, shard))}
    for gap in (float(g) for g in args.gaps.split(",") if g.strip()):
        res[f"sleep{gap:g}"] = median_ms(lambda: time.sleep(gap / 1e3))  # noqa: B023
        res[f"compute{gap:g}"] = median_ms(lambda: compute(gap))  # noqa: B023
    if dist.get_rank() == 0:
        print(json.dumps(res))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
