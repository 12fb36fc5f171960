"""Record the 2-rank gloo DDP traces in this folder (a real run, CPU only).

    cd tests/data/gloo_2rank
    ../../../.venv/bin/torchrun --nproc_per_node 2 record.py

Each rank trains a 6-layer Linear(256, 256) MLP wrapped in DistributedDataParallel
(gloo, bucket_cap_mb=0.25, so backward issues several gradient all-reduces that overlap
the rest of backward), all-reduces the loss for logging (a blocking all_reduce), and
ends the step with a barrier (``c10d::barrier``, an op that only waits for its peer).
torch.profiler records steps 2 to 4 (wait 1, warmup 1, active 3) with shapes, and
writes ``rank{R}.json.gz`` (Kineto JSON, gzip) per rank.
"""

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

STEPS = 5


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(6)])
    ddp = DDP(model, bucket_cap_mb=0.25)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    x = torch.randn(32, 256)
    schedule = torch.profiler.schedule(wait=1, warmup=1, active=3)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU],
        schedule=schedule,
        record_shapes=True,
        on_trace_ready=lambda p: p.export_chrome_trace(f"rank{rank}.json.gz"),
    ) as prof:
        for _ in range(STEPS):
            loss = ddp(x).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            logged = loss.detach().clone()
            dist.all_reduce(logged)
            dist.barrier()
            prof.step()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
