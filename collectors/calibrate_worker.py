"""Measure a cluster's collectives the way nccl-tests does; run under a launcher.

``tracekit calibrate`` starts this script once per rank (``torchrun --nproc_per_node 2
collectors/calibrate_worker.py --out raw.json ...``). For every collective and size it
runs warm-up calls, then timed calls, each started right after a barrier and an untimed
4 MB all-reduce that leaves the link busy as in a training step (``--drain-bytes``), and records
every rank's duration of every call. Rank 0 writes one JSON document::

    {"format": "tracekit-calibration-raw", "version": 1, "backend": "gloo",
     "world_size": 2, "device": "cpu", "torch": "2.13.0", "hosts": ["a", "a"],
     "measurements": [
       {"collective": "all_reduce", "bytes": 1024, "iters": 20,
        "per_rank_ns": [[41000, ...], [39000, ...]],    # [rank][iteration]
        "per_rank_cpu_ns": [[9000, ...], [8500, ...]],   # CPU time of the process
        "per_rank_issue_ns": [[30000, ...], [28000, ...]],  # until the call returned
        "per_rank_end_ns": [[5101234567, ...], [5101236789, ...]],  # when it was done
        "per_rank_chain_ns": [[52000, ...], [51000, ...]]},  # calls back to back
       ...]}

The duration of the rank that left the barrier last (the shortest one) is the transfer
time; the fit in ``replay/calibration.py`` uses the median of those over iterations.
On gloo, an all-reduce is also timed two at a time (``per_rank_pair_ns``, both calls
issued together and both waited for): how much two transfers side by side slow each
other is what ``replay.interference.cores`` needs to share the link. ``cpu_cores`` is
the cores the rank may run on, ``cpu_sets`` which ones, per rank (ranks pinned apart,
``TRACEKIT_PIN_CORES=1``, share no cores: ``collectors/affinity.py``). ``per_rank_issue_ns`` is how long the calling thread spent
issuing each call (``async_op=True`` until it returned), host work before the transfer
starts: on gloo a reduce-scatter first clones its whole input there. ``per_rank_end_ns``
is when each rank's call was done (``perf_counter_ns``: on one host every rank's clock is
the same CLOCK_MONOTONIC), so the fit can tell when the *last* rank had the result: on a
shared link one rank's all-gather finishes well before the other's. ``per_rank_chain_ns``
times the same number of calls back to back, each waited for before the next (FSDP2's
blocking all-gathers and reduce-scatters on CPU): each call's period on each rank, its
tail and the ranks' waiting for each other included. ``per_rank_cpu_ns`` is the CPU time the rank's process (all its threads: the backend's
worker threads do the copies, reductions and socket calls) spent during the same call:
on a wire-bound link a transfer keeps a fraction of a core busy, on loopback nearly one
(``replay.interference.cores`` counts a transfer's threads by that share).
Sizes are bytes of the full (unsharded) buffer, as ``comm_bytes`` in a trace.
Then, unless ``--credit-bytes 0``, the link's burst credit (``link_credit``): one
all-reduce of ``--credit-bytes`` timed alternately on a busy link (after the drain) and
after ``--credit-idle`` seconds of an idle one, ``per_rank_drained_ns`` and
``per_rank_idle_ns``. A link shaped by a token bucket lets an idle link's first bytes
through at once, so the idle call is faster by what the bucket holds
(:mod:`replay.link_credit`); on an unshaped link the two agree.
Then, on CPU and unless ``--contention-bytes 0``, how much a transfer slows when the
training threads keep every core busy (``contention``, one entry per size): an all-reduce
of each of ``--contention-bytes`` timed alternately on a busy link as the curves are (the
calling thread waits) and while the calling thread of every rank runs matmuls until it
completes, ``per_rank_quiet_ns`` and ``per_rank_busy_ns`` (:mod:`replay.contention_probe`).
Last, unless ``--no-fsdp-hooks``, FSDP2's own host time per unit and step
(:mod:`collectors.fsdp_hooks`) goes under ``fsdp_hooks``: ``{"units": 8, "forward_ns": ...,
"backward_ns": ..., "per_rank": [...]}``, for ``fsdp=CLASS``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

try:
    from tracekit.core.atomic import atomic_write_json
except ImportError:  # run as a script from a source tree where tracekit is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tracekit.core.atomic import atomic_write_json
try:
    from collectors.affinity import cpu_count, cpu_set, pin_local_rank_if_asked
    from collectors.fsdp_hooks import measure_fsdp_hooks
except ImportError:  # run as a script: this file's folder is on sys.path
    from affinity import cpu_count, cpu_set, pin_local_rank_if_asked
    from fsdp_hooks import measure_fsdp_hooks

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast")
#: the untimed all-reduce before each timed call (see _Drain)
DRAIN_BYTES = 4 << 20
#: the all-reduce that times the link's burst credit (see _link_credit): it must outlast
#: the burst, and the smaller it is the larger the burst's share of its time (a 1 MB
#: bucket saved 1.8 ms of an 8 MB call's 33.6 at 4 Gbit/s, inside the calls' jitter, so
#: the credit went uncounted; of a 4 MB call's 16.8 it is twice the share)
CREDIT_BYTES = 4 << 20
#: the all-reduces timed beside compute on every core (see _contention): four sizes, since
#: the extra time does not grow in proportion to the size (it is about the same for 1 MB
#: at every link rate, and gone at 8 MB where the wire takes longer)
CONTENTION_BYTES = f"{1 << 18},{1 << 20},{4 << 20},{16 << 20}"


def _sizes(text: str) -> list[int]:
    """``'1048576,8388608'`` -> the positive sizes (``'0'``: none)."""
    return [b for b in (int(x) for x in str(text).split(",") if x.strip()) if b > 0]


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="raw measurements JSON (written by rank 0)")
    p.add_argument("--sizes", required=True,
                   help="comma-separated sizes in bytes of the full buffer")
    p.add_argument("--collectives", default=",".join(COLLECTIVES))
    p.add_argument("--iters", type=int, default=20, help="timed calls per size (at most)")
    p.add_argument("--min-iters", type=int, default=3, help="timed calls per size (at least)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per size")
    p.add_argument("--budget-s", type=float, default=1.0,
                   help="seconds of timed calls per (collective, size): big sizes run fewer "
                        "calls, never below --min-iters")
    p.add_argument("--backend", default="", help="gloo or nccl (default: nccl with CUDA)")
    p.add_argument("--drain-bytes", type=int, default=DRAIN_BYTES,
                   help="an untimed all-reduce of this many bytes right before each timed "
                        "call, so the link is busy as in a training step (0: none)")
    p.add_argument("--credit-bytes", type=int, default=CREDIT_BYTES,
                   help="all-reduce size that times the link's burst credit: it must take "
                        "longer than the burst lasts (0: skip)")
    p.add_argument("--credit-idle", type=float, default=0.25, metavar="SECONDS",
                   help="idle time before each credit call, long enough to refill the bucket")
    p.add_argument("--credit-reps", type=int, default=30,
                   help="credit calls of each kind (pairs: enough that a real bucket's "
                        "saving wins them clearly, replay/link_credit.py)")
    p.add_argument("--contention-bytes", default=CONTENTION_BYTES, type=_sizes,
                   help="comma-separated all-reduce sizes timed while every rank's calling "
                        "thread computes (CPU only; 0: skip)")
    p.add_argument("--contention-reps", type=int, default=12,
                   help="contention calls of each kind")
    p.add_argument("--no-fsdp-hooks", dest="fsdp_hooks", action="store_false",
                   help="skip timing FSDP2's own host work per unit (collectors/fsdp_hooks.py)")
    return p.parse_args(argv)


class _Bench:
    """Buffers and the call for one collective and size."""

    def __init__(self, coll: str, nbytes: int, world: int, rank: int, device: torch.device):
        numel = max(world, nbytes // 4 // world * world)
        shard = numel // world
        self.nbytes = numel * 4
        mk = lambda n: torch.ones(n, dtype=torch.float32, device=device)  # noqa: E731
        #: two calls at once (gloo's all-reduce only: its worker threads run them side by
        #: side; NCCL runs one process group's calls one after another), else None
        self.pair = None
        if coll == "all_reduce":
            buf, other = mk(numel), mk(numel)
            self.call = lambda: dist.all_reduce(buf, async_op=True)
            if dist.get_backend() == "gloo":
                self.pair = lambda: [w.wait() for w in (dist.all_reduce(buf, async_op=True),
                                                        dist.all_reduce(other, async_op=True))]
        elif coll == "reduce_scatter":
            src, dst = mk(numel), mk(shard)
            # torch 2.13 renamed reduce_scatter_tensor (now deprecated) to *_single
            rs = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
            self.call = lambda: rs(dst, src, async_op=True)
        elif coll == "all_gather":
            src, dst = mk(shard), mk(numel)
            ag = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            self.call = lambda: ag(dst, src, async_op=True)
        elif coll == "all_to_all":
            src, dst = mk(numel), mk(numel)
            self.call = lambda: dist.all_to_all_single(dst, src, async_op=True)
        elif coll == "broadcast":
            buf = mk(numel)
            self.call = lambda: dist.broadcast(buf, src=0, async_op=True)
        else:
            raise SystemExit(f"unknown collective {coll!r}; choose from {', '.join(COLLECTIVES)}")


class _Drain:
    """An untimed all-reduce right before each timed call. In a training step a collective
    follows other traffic; after a barrier the link has been idle, and a link shaped by a
    token bucket (``tc tbf``, the emulated cluster of ``benchmarks/cluster.py``, whose
    1 MB burst lets an idle link's first megabyte through unshaped) would time a call
    after an idle moment faster than the link's rate. The drain empties such a bucket; on
    a link without one it only costs time."""

    def __init__(self, nbytes: int, device: torch.device):
        self.buf = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=device) \
            if nbytes > 0 else None

    def __call__(self) -> None:
        if self.buf is not None:
            dist.all_reduce(self.buf)



def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _libc_malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere)."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def _fresh_memory(device: torch.device) -> None:
    """Give the process's free heap back to the system before a timed call: in a
    training step the step's own allocations have taken the blocks a call could reuse,
    so what a call allocates (gloo's reduce-scatter clones its input) is fresh memory,
    page faults included. A loop of calls alone would reuse one warm block each time
    (``python benchmarks/clone_cost.py``: a 15 MB clone 1.4 ms warm, 10.2 ms fresh,
    13.1 ms fresh with a second process doing the same)."""
    if device.type == "cpu" and _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _wait(work) -> None:
    work.wait()


def _timed(bench: _Bench, device: torch.device, before: Callable[[], None], *,
           pair: bool = False, wait: Callable = _wait) -> tuple[int, int, int, int]:
    """(wall ns, process CPU ns, issue ns, end) of one call (``pair``: two at once, issue 0;
    end: ``perf_counter_ns`` when it was done, CLOCK_MONOTONIC, comparable across the
    processes of one host)
    started right after a barrier and ``before`` (the drain, :class:`_Drain`; an idle
    pause for the link's credit), on fresh memory (:func:`_fresh_memory`); issue: until
    the asynchronous call returned; ``wait``: what the calling thread does until the
    call is done (waits; computes, for the contention probe)."""
    _fresh_memory(device)
    dist.barrier()
    before()
    _sync(device)
    t0, c0 = time.perf_counter_ns(), time.process_time_ns()
    if pair:
        bench.pair()
        issued = t0
    else:
        work = bench.call()
        issued = time.perf_counter_ns()
        wait(work)
    _sync(device)
    end = time.perf_counter_ns()
    return end - t0, time.process_time_ns() - c0, issued - t0, end


def _chain(bench: _Bench, n: int, device: torch.device) -> list[int]:
    """``n`` calls back to back, each waited for before the next is issued, as FSDP2 on a
    CPU issues its all-gathers and reduce-scatters: this rank's period of each, from the
    previous call's end to its own (issuing, the transfer, waiting for the other ranks,
    resuming). One call before them leaves the link busy and is not counted (its period
    would hold the barrier's exit)."""
    dist.barrier()
    bench.call().wait()
    _sync(device)
    prev, out = time.perf_counter_ns(), []
    for _ in range(n):
        bench.call().wait()
        _sync(device)
        now = time.perf_counter_ns()
        out.append(now - prev)
        prev = now
    return out


def _agree_on_iters(seconds: float, args: argparse.Namespace, device: torch.device) -> int:
    """Every rank must issue the same calls: agree on the slowest rank's count."""
    want = args.iters if seconds <= 0 else int(args.budget_s / seconds)
    n = torch.tensor([max(args.min_iters, min(args.iters, want))], dtype=torch.int64,
                     device=device)
    dist.all_reduce(n, op=dist.ReduceOp.MIN)
    return int(n.item())


def _gather_durations(durs: list[int], world: int, device: torch.device) -> list[list[int]]:
    mine = torch.tensor(durs, dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(out, mine)
    return [t.cpu().tolist() for t in out]


def _link_credit(args: argparse.Namespace, device: torch.device, drain: _Drain) -> dict:
    """One all-reduce of ``--credit-bytes`` timed after the drain (a busy link) and after
    ``--credit-idle`` seconds of silence (a bucket refilled), alternately; every rank's
    durations (see the module doc)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    bench = _Bench("all_reduce", args.credit_bytes, world, rank, device)
    _timed(bench, device, drain)  # warm-up
    pause = lambda: time.sleep(args.credit_idle)  # noqa: E731
    drained, idle = [], []
    for _ in range(max(1, args.credit_reps)):
        drained.append(_timed(bench, device, drain)[0])
        idle.append(_timed(bench, device, pause)[0])
    return {"collective": "all_reduce", "bytes": bench.nbytes, "idle_s": args.credit_idle,
            "per_rank_drained_ns": _gather_durations(drained, world, device),
            "per_rank_idle_ns": _gather_durations(idle, world, device)}


def _contention(nbytes: int, args: argparse.Namespace, device: torch.device,
                drain: _Drain) -> dict:
    """One all-reduce of ``nbytes`` on a busy link, timed alternately with the calling
    thread waiting and computing (small matmuls, as a training step's backward does beside
    its buckets) until the call completes; every rank's durations."""
    world, rank = dist.get_world_size(), dist.get_rank()
    bench = _Bench("all_reduce", nbytes, world, rank, device)
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def compute(work) -> None:
        while not work.is_completed():
            torch.mm(a, b)
        work.wait()

    _timed(bench, device, drain, wait=compute)  # warm-up
    quiet, busy = [], []
    for _ in range(max(1, args.contention_reps)):
        quiet.append(_timed(bench, device, drain)[0])
        busy.append(_timed(bench, device, drain, wait=compute)[0])
    return {"collective": "all_reduce", "bytes": bench.nbytes,
            "per_rank_quiet_ns": _gather_durations(quiet, world, device),
            "per_rank_busy_ns": _gather_durations(busy, world, device)}


def _fsdp_hooks(device: torch.device) -> dict | None:
    """FSDP2's host time per unit (:mod:`collectors.fsdp_hooks`), every rank's: the
    per-rank figures under ``per_rank``, their mean as ``forward_ns`` / ``backward_ns``."""
    mine = measure_fsdp_hooks(device)
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    if any(h is None for h in every):
        return None
    out = dict(every[0])
    for key in ("forward_ns", "backward_ns"):
        out[key] = round(sum(h[key] for h in every) / len(every))
    out["per_rank"] = [{k: h[k] for k in ("forward_ns", "backward_ns")} for h in every]
    if dist.get_rank() == 0:
        sys.stderr.write(f"calibrate: FSDP2 host work per unit: forward "
                         f"{out['forward_ns'] / 1e3:.0f} us, backward "
                         f"{out['backward_ns'] / 1e3:.0f} us ({out.get('mode')} group)\n")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    pin_local_rank_if_asked()  # under benchmarks/cluster.py --pin, as the trainers are
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    colls = [c.strip() for c in args.collectives.split(",") if c.strip()]
    hosts: list[str] = [""] * world
    dist.all_gather_object(hosts, socket.gethostname())
    cpu_sets: list[list[int]] = [[] for _ in range(world)]
    dist.all_gather_object(cpu_sets, cpu_set())
    measurements = []
    drain = _Drain(args.drain_bytes, device)
    t_start = time.perf_counter()
    for coll in colls:
        for nbytes in sizes:
            bench = _Bench(coll, nbytes, world, rank, device)
            warm = [_timed(bench, device, drain)[0] for _ in range(max(1, args.warmup))]
            iters = _agree_on_iters(min(warm) / 1e9, args, device)
            timed = [_timed(bench, device, drain) for _ in range(iters)]
            per_rank = _gather_durations([t[0] for t in timed], world, device)
            per_rank_cpu = _gather_durations([t[1] for t in timed], world, device)
            per_rank_issue = _gather_durations([t[2] for t in timed], world, device)
            entry = {"collective": coll, "bytes": bench.nbytes, "iters": iters,
                     "per_rank_ns": per_rank, "per_rank_cpu_ns": per_rank_cpu,
                     "per_rank_issue_ns": per_rank_issue,
                     "per_rank_end_ns": _gather_durations([t[3] for t in timed], world,
                                                          device)}
            entry["per_rank_chain_ns"] = _gather_durations(_chain(bench, iters, device), world,
                                                           device)
            if bench.pair is not None:
                pairs = [_timed(bench, device, drain, pair=True)[0] for _ in range(iters)]
                entry["per_rank_pair_ns"] = _gather_durations(pairs, world, device)
            measurements.append(entry)
            if rank == 0:
                best = sorted(min(col) for col in zip(*per_rank))[len(timed) // 2]
                sys.stderr.write(
                    f"calibrate: {coll:<15} {bench.nbytes:>11} B  x{iters:<3} median "
                    f"{best / 1e3:10.1f} us  [{time.perf_counter() - t_start:6.1f} s]\n")
                sys.stderr.flush()
            del bench
    credit = _link_credit(args, device, drain) if args.credit_bytes > 0 else None
    contention = ([_contention(b, args, device, drain) for b in args.contention_bytes]
                  if args.contention_bytes and device.type == "cpu" else None)
    hooks = _fsdp_hooks(device) if args.fsdp_hooks else None
    if rank == 0:
        doc = {"format": "tracekit-calibration-raw", "version": 1, "backend": backend,
               "world_size": world, "device": device.type, "torch": torch.__version__,
               "hosts": hosts, "cpu_cores": cpu_count() or 1, "cpu_sets": cpu_sets,
               "drain_bytes": args.drain_bytes,
               "measurements": measurements}
        if credit is not None:
            doc["link_credit"] = credit
        if contention is not None:
            doc["contention"] = contention
        if hooks is not None:
            doc["fsdp_hooks"] = hooks
        atomic_write_json(args.out, doc, indent=None, what="the raw measurements")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
