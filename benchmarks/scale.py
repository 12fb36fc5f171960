"""How tracekit's cost grows with the world: time per stage and peak memory for N ranks.

    python benchmarks/scale.py TRACE.json.gz                      # N = 4, 32, 128, 256
    python benchmarks/scale.py TRACE.json.gz --ranks 4,32 --out /tmp/scale
    python benchmarks/scale.py TRACE.json.gz --ratio-rounds 3    # the 4/32-rank timing targets

Builds an N-rank world from one real trace (each copy renumbered as rank r of N in its
``distributedInfo``, written as plain JSON like the profiler writes), then, each in a
fresh process and with a fresh, empty cache folder (``TRACEKIT_CACHE_DIR``) for every
*cold* run (the first command on a run: traces parsed, cache written) that the *warm*
run after it reuses:

- per stage, in process, as ``tracekit replay`` runs them: ingest (``load_run``, the
  compact table), graph assembly (``build_graph``, typical latencies included), baseline
  replay, one what-if (``compute-scale=0.5``: the interference model re-times every
  node); cold and warm;
- whole process: ``tracekit replay DIR --json`` and ``tracekit summary DIR --json``, cold
  and warm.

Memory: the peak PSS of the measured process *and its worker processes* (sampled from
outside every 50 ms, :mod:`memwatch`), beside the process's own ``ru_maxrss``; both
divided by the world's JSON bytes.

Prints the figures and the targets (issue 13): t(32)/t(4) <= 8.8 for ``tracekit replay
--json`` and 32 ranks in <= 60 s, peak memory <= 0.6x the JSON bytes at 32 ranks, 256
ranks complete, a warm ``tracekit summary`` of 32 ranks >= 10x faster than the cold one.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memwatch import run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

STAGES = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
t0 = time.perf_counter()
from tracekit.core.run import load_run
from tracekit.core.ingest import IngestOptions
from tracekit.graph.build import build_graph
from replay.timeline import replay
from replay.whatif import evaluate
if __name__ == "__main__":
    run = load_run(sys.argv[1], ingest=IngestOptions(events="graph")); t1 = time.perf_counter()
    graph = build_graph(run); t2 = time.perf_counter()
    base = replay(run, graph); t3 = time.perf_counter()
    evaluate(run, graph, base, ["compute-scale=0.5"]); t4 = time.perf_counter()
    print(json.dumps({"ingest_s": t1 - t0, "graph_s": t2 - t1, "replay_s": t3 - t2,
                      "whatif_s": t4 - t3, "nodes": int(graph.n_nodes),
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
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


def _run(cmd: list[str], cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACEKIT_CACHE_DIR": str(cache)}
    env.pop("TRACEKIT_NO_CACHE", None)
    r = run_measured(cmd, env=env, cwd=ROOT)
    if r["rc"] != 0:
        raise SystemExit(f"error: {' '.join(cmd[:4])} failed:\n{r['stderr'][-2000:]}")
    return r


def measure(world: Path, scratch: Path) -> dict:
    out: dict = {}
    commands = {
        "stages": [PY, "-c", STAGES, str(world), str(ROOT)],
        "replay": [PY, "-m", "tracekit", "replay", str(world), "--json"],
        "summary": [PY, "-m", "tracekit", "summary", str(world), "--json"],
    }
    for name, cmd in commands.items():
        cache = Path(tempfile.mkdtemp(prefix=f"cache-{name}-", dir=scratch))
        try:
            for temp in ("cold", "warm"):
                r = _run(cmd, cache)
                m = {"wall_s": r["wall_s"], "peak_mb": r["peak_mb"]}
                if name == "stages":
                    m.update(json.loads(r["stdout"].strip().splitlines()[-1]))
                out[f"{name}_{temp}"] = m
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return out


def ratio_rounds(trace: Path, out: Path, rounds: int) -> None:
    """The two timing targets on a shared machine: 4- and 32-rank ``tracekit replay
    --json`` (cold and warm) and 32-rank ``tracekit summary --json`` (cold, then warm),
    alternated round by round, so that a busy machine slows both alike; medians of the
    per-round ratios."""
    worlds = {n: out / f"world{n}" for n in (4, 32)}
    for n, w in worlds.items():
        build_world(trace, n, w)
    ratios: dict[str, list[float]] = {"cold": [], "warm": [], "summary": []}
    walls: dict[str, list[float]] = {}
    for i in range(rounds):
        t = {}
        for n, w in worlds.items():
            for name in ("replay", "summary") if n == 32 else ("replay",):
                cache = Path(tempfile.mkdtemp(prefix="cache-", dir=out))
                cmd = [PY, "-m", "tracekit", name, str(w), "--json"]
                try:
                    t[f"{name}{n}_cold"] = _run(cmd, cache)["wall_s"]
                    t[f"{name}{n}_warm"] = _run(cmd, cache)["wall_s"]
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
        for k, v in t.items():
            walls.setdefault(k, []).append(v)
        ratios["cold"].append(t["replay32_cold"] / t["replay4_cold"])
        ratios["warm"].append(t["replay32_warm"] / t["replay4_warm"])
        ratios["summary"].append(t["summary32_cold"] / t["summary32_warm"])
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()), flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"tracekit replay --json over {rounds} rounds (medians): 4 ranks cold "
          f"{med['replay4_cold']:.1f} s, warm {med['replay4_warm']:.1f} s; 32 ranks cold "
          f"{med['replay32_cold']:.1f} s (target <= 60), warm {med['replay32_warm']:.1f} s")
    print(f"t(32)/t(4), median of per-round ratios: cold {statistics.median(ratios['cold']):.2f}"
          f", warm {statistics.median(ratios['warm']):.2f} (target <= 8.8)")
    print(f"tracekit summary --json, 32 ranks: cold {med['summary32_cold']:.1f} s, warm "
          f"{med['summary32_warm']:.2f} s: {statistics.median(ratios['summary']):.1f}x "
          "(median of per-round ratios; target >= 10)")


def _line(n: int, m: dict) -> str:
    sc, sw = m["stages_cold"], m["stages_warm"]
    mb = m["json_mb"]
    return (f"{n:>4} ranks: JSON {mb:,.0f} MB, {sc['nodes']:,} nodes\n"
            f"      stages cold: ingest {sc['ingest_s']:.1f} s, graph {sc['graph_s']:.1f} s, "
            f"replay {sc['replay_s']:.1f} s, what-if {sc['whatif_s']:.1f} s; peak "
            f"{sc['peak_mb']:,.0f} MB with workers ({sc['peak_mb'] / mb:.2f}x the JSON), "
            f"own ru_maxrss {sc['rss_mb']:,.0f} MB ({sc['rss_mb'] / mb:.2f}x)\n"
            f"      stages warm: ingest {sw['ingest_s']:.1f} s, graph {sw['graph_s']:.1f} s, "
            f"replay {sw['replay_s']:.1f} s, what-if {sw['whatif_s']:.1f} s; peak "
            f"{sw['peak_mb']:,.0f} MB ({sw['peak_mb'] / mb:.2f}x)\n"
            f"      tracekit replay --json: cold {m['replay_cold']['wall_s']:.1f} s "
            f"({m['replay_cold']['peak_mb']:,.0f} MB), warm {m['replay_warm']['wall_s']:.1f} s"
            f" ({m['replay_warm']['peak_mb']:,.0f} MB) | tracekit summary --json: cold "
            f"{m['summary_cold']['wall_s']:.1f} s, warm {m['summary_warm']['wall_s']:.2f} s "
            f"({m['summary_cold']['wall_s'] / m['summary_warm']['wall_s']:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace", type=Path, help="one real Kineto trace (.json or .json.gz)")
    ap.add_argument("--ranks", default="4,32,128,256")
    ap.add_argument("--out", type=Path, default=Path("/tmp/tracekit-scale"))
    ap.add_argument("--keep", action="store_true", help="keep the generated worlds")
    ap.add_argument("--json", action="store_true", help="also print every figure as JSON")
    ap.add_argument("--ratio-rounds", type=int, default=0, metavar="R",
                    help="instead: time only the 4- and 32-rank targets, alternating R rounds")
    args = ap.parse_args()
    print(f"# machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}", flush=True)
    if args.ratio_rounds:
        try:
            ratio_rounds(args.trace, args.out, args.ratio_rounds)
        finally:
            if not args.keep:
                for n in (4, 32):
                    shutil.rmtree(args.out / f"world{n}", ignore_errors=True)
        return
    rows = {}
    for n in (int(x) for x in args.ranks.split(",")):
        world = args.out / f"world{n}"
        nbytes = build_world(args.trace, n, world)
        try:
            m = measure(world, args.out)
        finally:
            if not args.keep:
                shutil.rmtree(world, ignore_errors=True)
        m["json_mb"] = nbytes / 1e6
        rows[n] = m
        print(_line(n, m), flush=True)
        if args.json:
            print(json.dumps({"ranks": n, **m}), flush=True)
    if 4 in rows and 32 in rows:
        for temp in ("cold", "warm"):
            t4, t32 = rows[4][f"replay_{temp}"]["wall_s"], rows[32][f"replay_{temp}"]["wall_s"]
            print(f"tracekit replay --json, {temp}: t(32)/t(4) = {t32 / t4:.2f} (target <= 8.8);"
                  f" 32 ranks {t32:.1f} s (target <= 60)")
    if 32 in rows:
        m = rows[32]
        print(f"32 ranks, peak memory / JSON bytes: {m['stages_cold']['peak_mb'] / m['json_mb']:.2f}"
              f" cold with workers, {m['stages_warm']['peak_mb'] / m['json_mb']:.2f} warm "
              f"(target <= 0.6); warm summary {m['summary_cold']['wall_s'] / m['summary_warm']['wall_s']:.1f}x"
              " faster than cold (target >= 10)")
    for n in (128, 256):
        if n in rows:
            print(f"{n} ranks completed: peak {rows[n]['stages_cold']['peak_mb'] / 1024:.1f} GB")


if __name__ == "__main__":
    main()
