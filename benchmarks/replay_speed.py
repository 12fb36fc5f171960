"""How fast tracekit assembles and replays the global dataflow graph.

    .venv/bin/python benchmarks/replay_speed.py                  # 1e4 .. 1e7 nodes
    .venv/bin/python benchmarks/replay_speed.py --sizes 1e5,1e6 --repeat 5

Three measurements, each size in a fresh process (so its peak RSS is its own):

- replay: :func:`replay.engine.schedule` on synthetic DDP-shaped graphs
  (:func:`tracekit.graph.synthetic.synthetic_graph`: 64 ranks, a cpu, a compute and a
  comm lane each, launch / stream-wait / host-wait edges, one all-reduce per bucket
  across all ranks). Prints nodes/s (median of ``--repeat``), engine rounds, and the peak
  RSS of the process (graph included) and the graph's own size.
- assembly: :func:`tracekit.graph.build.build_graph` on the equivalent event tables
  (:func:`tracekit.graph.synthetic.synthetic_events`), nodes/s.
- parse vs build for a 64-rank run written as Kineto JSON files: seconds in
  ``load_run`` (parsing) and in ``build_graph`` (assembly).

Timings on a shared 2-core machine vary by 2x between runs: read the medians, and the
process CPU time beside the wall time (on a loaded machine the wall time includes
waiting for a core).
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RANKS = 64
BUCKETS = 25


def _shape(n_nodes: float) -> dict:
    """ranks/steps/kernels for about ``n_nodes`` graph nodes (2K + 2B + 1 per rank-step)."""
    n = int(n_nodes)
    steps = 2 if n < 1e6 else 10
    per_rank_step = max(n // (RANKS * steps), 16)
    buckets = BUCKETS if per_rank_step > 500 else max(per_rank_step // 16, 1)
    kernels = (per_rank_step - 2 * buckets - 1) // 2
    return {"ranks": RANKS, "steps": steps, "kernels": kernels, "buckets": buckets}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_replay(size: float, repeat: int) -> dict:
    from replay.engine import schedule_full
    from tracekit.graph.synthetic import synthetic_graph

    g = synthetic_graph(**_shape(size))
    graph_mb = sum(getattr(g, a).nbytes for a in (
        "rank", "lane", "kind", "step", "name", "start_ns", "dur_ns", "wait_ns", "bytes",
        "coll_id", "event_row", "src", "dst", "edge_kind", "delay_ns", "inferred")) / 2**20
    before = _peak_mb()
    times, cpu, rounds = [], [], 0
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        s = schedule_full(g)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        rounds = s.rounds
    return {"nodes": g.n_nodes, "edges": g.n_edges, "seconds": statistics.median(times),
            "best": min(times), "cpu": statistics.median(cpu), "rounds": rounds,
            "peak_mb": _peak_mb(), "before_mb": before, "graph_mb": graph_mb}


def child_assembly(size: float, repeat: int) -> dict:
    from tracekit.core.run import Run
    from tracekit.graph.build import build_graph
    from tracekit.graph.synthetic import synthetic_events

    shape = _shape(size)
    events = synthetic_events(**shape)
    run = Run(path="synthetic", events=events, traces={r: None for r in range(RANKS)},
              world_size=RANKS, backend="nccl")
    run.steps = lambda: list(range(shape["steps"]))  # every rank has every step
    times, cpu, n = [], [], 0
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        g = build_graph(run)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        n = g.n_nodes
    return {"events": len(events), "nodes": n, "seconds": statistics.median(times),
            "cpu": statistics.median(cpu), "peak_mb": _peak_mb()}


def _kineto(events, rank: int) -> dict:
    """One rank of a synthetic event table as a Kineto JSON document."""
    ev = events[events["rank"] == rank]
    out = []
    for e in ev.itertuples(index=False):
        gpu = e.lane_kind == "gpu"
        args = {}
        if e.correlation >= 0:
            args["correlation"] = int(e.correlation)
        if gpu:
            args["stream"] = int(e.lane)
        if e.collective:
            args.update({"Collective name": "allreduce", "In msg nelems": 1 << 20,
                         "Out msg nelems": 1 << 20, "dtype": "Float", "Group size": RANKS,
                         "Process Group Name": "0", "Seq": int(e.seq)})
        out.append({"ph": "X", "cat": str(e.cat), "name": str(e.name),
                    "pid": 0 if gpu else 100 + rank, "tid": int(e.lane),
                    "ts": e.ts_ns / 1000, "dur": e.dur_ns / 1000, "args": args})
    return {"traceEvents": out, "distributedInfo": {"rank": rank, "world_size": RANKS,
                                                     "backend": "nccl"}}


def child_parse_vs_build(size: float) -> dict:
    from tracekit.core.run import load_run
    from tracekit.graph.build import build_graph
    from tracekit.graph.synthetic import synthetic_events

    events = synthetic_events(**_shape(size))
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(RANKS):
            Path(tmp, f"rank{r}.json.gz").write_bytes(
                gzip.compress(json.dumps(_kineto(events, r)).encode(), compresslevel=1))
        t = time.perf_counter()
        run = load_run(tmp)
        t_parse = time.perf_counter() - t
        t = time.perf_counter()
        g = build_graph(run)
        t_build = time.perf_counter() - t
    return {"events": len(run.events), "nodes": g.n_nodes, "parse_s": t_parse,
            "build_s": t_build}


def _in_child(kind: str, size: float, repeat: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--sizes", str(size),
           "--repeat", str(repeat)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="graph sizes (nodes)")
    p.add_argument("--assembly-sizes", default="1e4,1e5,1e6",
                   help="event-table sizes for assembly (nodes)")
    p.add_argument("--parse-size", default="3e5", help="nodes of the 64-rank JSON run")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        size = float(a.sizes)
        fn = {"replay": lambda: child_replay(size, a.repeat),
              "assembly": lambda: child_assembly(size, a.repeat),
              "parse": lambda: child_parse_vs_build(size)}[a.child]
        print(json.dumps(fn()))
        return
    print(f"replay (engine), {RANKS} ranks, median of {a.repeat}")
    print(f"{'nodes':>11} {'edges':>11} {'wall s':>8} {'best':>7} {'Mnodes/s':>9} "
          f"{'cpu s':>7} {'Mnodes/cpu-s':>13} {'rounds':>7} {'graph MB':>9} {'peak RSS MB':>12}")
    for size in [float(s) for s in a.sizes.split(",")]:
        r = _in_child("replay", size, a.repeat)
        print(f"{r['nodes']:>11,} {r['edges']:>11,} {r['seconds']:>8.2f} {r['best']:>7.2f} "
              f"{r['nodes'] / r['seconds'] / 1e6:>9.2f} {r['cpu']:>7.2f} "
              f"{r['nodes'] / r['cpu'] / 1e6:>13.2f} {r['rounds']:>7} "
              f"{r['graph_mb']:>9.0f} {r['peak_mb']:>12.0f}")
    print()
    print(f"assembly (build_graph on event tables), {RANKS} ranks, median of {a.repeat}")
    print(f"{'events':>11} {'nodes':>11} {'wall s':>8} {'Mnodes/s':>9} {'cpu s':>7} "
          f"{'peak RSS MB':>12}")
    for size in [float(s) for s in a.assembly_sizes.split(",")]:
        r = _in_child("assembly", size, a.repeat)
        print(f"{r['events']:>11,} {r['nodes']:>11,} {r['seconds']:>8.2f} "
              f"{r['nodes'] / r['seconds'] / 1e6:>9.2f} {r['cpu']:>7.2f} {r['peak_mb']:>12.0f}")
    print()
    r = _in_child("parse", float(a.parse_size), 1)
    print(f"{RANKS}-rank run from Kineto JSON: {r['events']:,} events, {r['nodes']:,} nodes; "
          f"parse {r['parse_s']:.2f}s, build graph {r['build_s']:.2f}s "
          f"(build / parse = {r['build_s'] / r['parse_s']:.2f})")


if __name__ == "__main__":
    main()
