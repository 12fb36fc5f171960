"""How tracekit's cost grows with the world: time per stage and peak memory for N ranks.

    python benchmarks/scale.py TRACE.json.gz                      # N = 4, 32, 128, 256
    python benchmarks/scale.py TRACE.json.gz --ranks 4,32 --out /tmp/scale

Builds an N-rank world from one real trace (each copy renumbered as rank r of N in its
``distributedInfo``, written as plain JSON like the profiler writes), then, in a fresh
process per N:

- per stage, in process: ingest (``load_run``), graph assembly (``build_graph``, which
  includes the typical dependency latencies), baseline replay, one what-if
  (``compute-scale=0.5``: the interference model re-times every node), with the process's peak RSS;
- whole process: ``tracekit replay DIR --json`` wall time.

Prints the figures and the targets (issue 13): t(32)/t(4) <= 8.8 for ``tracekit replay
--json``, 32 ranks in <= 60 s, peak RSS <= 0.6x the JSON bytes, 256 ranks complete.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

STAGES = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
t0 = time.perf_counter()
from tracekit.core.run import load_run
from tracekit.graph.build import build_graph
from replay.timeline import replay
from replay.whatif import evaluate
run = load_run(sys.argv[1]); t1 = time.perf_counter()
graph = build_graph(run); t2 = time.perf_counter()
base = replay(run, graph); t3 = time.perf_counter()
evaluate(run, graph, base, ["compute-scale=0.5"]); t4 = time.perf_counter()
print(json.dumps({"ingest_s": t1 - t0, "graph_s": t2 - t1, "replay_s": t3 - t2,
                  "whatif_s": t4 - t3, "nodes": int(graph.n_nodes),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_world(trace: Path, n: int, out: Path) -> int:
    """``n`` copies of ``trace`` as ranks 0..n-1 in ``out``; returns the JSON bytes."""
    out.mkdir(parents=True, exist_ok=True)
    raw = gzip.decompress(trace.read_bytes()) if trace.suffix == ".gz" else trace.read_bytes()
    doc = msgspec.json.decode(raw)
    info = doc.setdefault("distributedInfo", {})
    total = 0
    for r in range(n):
        path = out / f"rank{r}.json"
        if not path.exists():
            info.update(rank=r, world_size=n)
            path.write_bytes(msgspec.json.encode(doc))
        total += path.stat().st_size
    return total


def measure(world: Path) -> dict:
    stages = subprocess.run([PY, "-c", STAGES, str(world), str(ROOT)], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if stages.returncode != 0:
        raise SystemExit(f"error: the stages of {world} failed:\n{stages.stderr[-2000:]}")
    out = json.loads(stages.stdout.strip().splitlines()[-1])
    t0 = time.perf_counter()
    subprocess.run([PY, "-m", "tracekit", "replay", str(world), "--json"], cwd=ROOT,
                   capture_output=True, check=True)
    out["replay_cli_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace", type=Path, help="one real Kineto trace (.json or .json.gz)")
    ap.add_argument("--ranks", default="4,32,128,256")
    ap.add_argument("--out", type=Path, default=Path("/tmp/tracekit-scale"))
    ap.add_argument("--keep", action="store_true", help="keep the generated worlds")
    args = ap.parse_args()
    rows = {}
    for n in (int(x) for x in args.ranks.split(",")):
        world = args.out / f"world{n}"
        nbytes = build_world(args.trace, n, world)
        m = measure(world)
        m["json_mb"] = nbytes / 1e6
        rows[n] = m
        print(f"{n:>4} ranks: JSON {m['json_mb']:.0f} MB, {m['nodes']:,} nodes | ingest "
              f"{m['ingest_s']:.1f} s, graph {m['graph_s']:.1f} s, replay {m['replay_s']:.1f} s, "
              f"what-if {m['whatif_s']:.1f} s | tracekit replay --json {m['replay_cli_s']:.1f} s"
              f" | peak RSS {m['peak_rss_mb']:.0f} MB ({m['peak_rss_mb'] / m['json_mb']:.2f}x "
              "the JSON)", flush=True)
        if not args.keep:
            for f in world.iterdir():
                f.unlink()
            world.rmdir()
    if 4 in rows and 32 in rows:
        ratio = rows[32]["replay_cli_s"] / rows[4]["replay_cli_s"]
        print(f"t(32)/t(4) = {ratio:.2f} (target <= 8.8); 32 ranks "
              f"{rows[32]['replay_cli_s']:.1f} s (target <= 60)")
    worst = max(m["peak_rss_mb"] / m["json_mb"] for m in rows.values())
    print(f"peak RSS / JSON bytes, worst: {worst:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
