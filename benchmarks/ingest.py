"""How fast tracekit reads Kineto traces, and (optionally) how that compares with
Holistic Trace Analysis.

    .venv/bin/python benchmarks/ingest.py ../shared/traces/gpu/world2_rank1_2020_allreduce_large.json.gz
    .venv/bin/python benchmarks/ingest.py TRACE --compare-hta /tmp/hta-venv/bin/python --rounds 5
    .venv/bin/python benchmarks/ingest.py TRACE --compare-hta auto --whole-process --rounds 5

Per file it prints: duration events, events/s, MB/s of decompressed JSON, wall seconds of
``parse_trace`` (median), and the peak RSS of a fresh process that imported tracekit and
parsed the file once (absolute, and above the process's RSS after the imports), next to
the decompressed size. (The parent process never loads a trace: a child inherits its
parent's RSS high-water mark.)

Every round runs in fresh processes: one that parses the file ``--repeat`` times, then,
with ``--compare-hta PYTHON``, one that times ``TraceAnalysis(trace_dir=<a folder holding
only that file>)`` in that interpreter (install HTA in its own venv: it needs pandas < 3).
Rounds alternate the two so that a busy machine slows both alike; the ratio reported is
the median of the per-round ratios, beside the ratio of the medians.

With ``--whole-process`` each round also times whole processes, one after the other:
``tracekit summary TRACE --json`` with an empty cache folder (cold: import, parse, write
the cache entry, summarize), the same command again (warm: the entry is read instead of
the JSON), and a fresh interpreter importing HTA and running ``TraceAnalysis``; it
prints HTA's time over each (median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_TRACEKIT_CHILD = r"""
import json, resource, sys, time
path, repeat = sys.argv[1], int(sys.argv[2])
from tracekit.core import kineto, kineto_json
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
walls, cpus = [], []
for i in range(repeat):
    w, c = time.perf_counter(), time.process_time()
    events, meta = kineto.parse_trace(path)
    walls.append(time.perf_counter() - w)
    cpus.append(time.process_time() - c)
    if i == 0:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del events
size = len(kineto_json.read_trace_bytes(kineto.Path(path)))  # after the peak was taken
print(json.dumps({"walls": walls, "cpus": cpus, "events": meta.n_events, "size": size,
                  "base_rss_kb": base, "peak_rss_kb": peak,
                  "gunzip": kineto_json._inflate.__name__}))
"""

_TRACEMALLOC_CHILD = r"""
import json, sys, tracemalloc
from tracekit.core import kineto
tracemalloc.start()
kineto.parse_trace(sys.argv[1])
print(json.dumps({"tracemalloc_peak": tracemalloc.get_traced_memory()[1]}))
"""

_HTA_CHILD = r"""
import json, os, sys, tempfile, time, logging
logging.disable(logging.CRITICAL)
from hta.trace_analysis import TraceAnalysis
path = os.path.abspath(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    os.symlink(path, os.path.join(folder, os.path.basename(path)))
    w, c = time.perf_counter(), os.times()
    analysis = TraceAnalysis(trace_dir=folder)
    wall, c2 = time.perf_counter() - w, os.times()
cpu = sum(c2[:4]) - sum(c[:4])  # user + system, this process and its children
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


_HTA_PROCESS = r"""
import logging, os, sys, tempfile
logging.disable(logging.CRITICAL)
from hta.trace_analysis import TraceAnalysis
path = os.path.abspath(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    os.symlink(path, os.path.join(folder, os.path.basename(path)))
    TraceAnalysis(trace_dir=folder)
"""


def _wall(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd[:5])}\n{proc.stderr[-2000:]}")
    return wall


def whole_process(path: Path, *, rounds: int, hta_python: str | None) -> dict:
    """Wall time of whole processes, interleaved per round: ``tracekit summary PATH --json``
    with an empty cache folder (cold: parses and writes the cache), the same again (warm:
    reads the cache), and HTA's ``TraceAnalysis`` in a fresh interpreter. tracekit's
    modules are byte-compiled first (one untimed run), as an installed package's are."""
    cold, warm, hta, r_cold, r_warm = [], [], [], [], []
    root = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-m", "tracekit", "summary", str(path), "--json"]
    with tempfile.TemporaryDirectory() as pycache:
        # as installed (HTA's modules in site-packages have their bytecode): compiled once,
        # untimed, even where PYTHONDONTWRITEBYTECODE is set
        base = {k: v for k, v in os.environ.items()
                if k not in ("TRACEKIT_NO_CACHE", "PYTHONDONTWRITEBYTECODE")}
        base.update(PYTHONPATH=root, PYTHONPYCACHEPREFIX=pycache)
        with tempfile.TemporaryDirectory() as cache:
            _wall(cmd, {**base, "TRACEKIT_CACHE_DIR": cache})
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as cache:
                env = {**base, "TRACEKIT_CACHE_DIR": cache}
                cold.append(_wall(cmd, env))
                warm.append(_wall(cmd, env))
            if hta_python:
                hta.append(_wall([hta_python, "-c", _HTA_PROCESS, str(path)]))
                r_cold.append(hta[-1] / cold[-1])
                r_warm.append(hta[-1] / warm[-1])
    out = {"summary_cold_s": statistics.median(cold), "summary_warm_s": statistics.median(warm),
           "cold_walls": cold, "warm_walls": warm}
    if hta:
        out.update(hta_process_s=statistics.median(hta), hta_walls=hta,
                   hta_over_cold=statistics.median(r_cold),
                   hta_over_warm=statistics.median(r_warm))
    return out


def _hta_python(arg: str | None) -> str | None:
    """``auto``: this interpreter when it can import HTA, else None."""
    if arg != "auto":
        return arg
    ok = subprocess.run([sys.executable, "-c", "import hta.trace_analysis"],
                        capture_output=True, check=False).returncode == 0
    return sys.executable if ok else None


def _child(python: str, code: str, *args: str) -> dict:
    proc = subprocess.run([python, "-c", code, *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed ({python}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_file(path: Path, *, repeat: int, rounds: int, hta_python: str | None) -> dict:
    walls, cpus, hta, hta_cpu, ratios = [], [], [], [], []
    first = None
    for _ in range(rounds):
        r = _child(sys.executable, _TRACEKIT_CHILD, str(path), str(repeat))
        first = first or r
        walls += r["walls"]
        cpus += r["cpus"]
        if hta_python:
            h = _child(hta_python, _HTA_CHILD, str(path))
            hta.append(h["wall"])
            hta_cpu.append(h["cpu"])
            ratios.append(h["wall"] / statistics.median(r["walls"]))
    mem = _child(sys.executable, _TRACEMALLOC_CHILD, str(path))
    wall = statistics.median(walls)
    size = first["size"]
    out = {
        "file": str(path), "events": first["events"], "decompressed_mb": size / 1e6,
        "wall_s": wall, "cpu_s": statistics.median(cpus), "walls": walls,
        "events_per_s": first["events"] / wall, "mb_per_s": size / 1e6 / wall,
        "peak_rss_mb": first["peak_rss_kb"] / 1024,
        "rss_above_imports_mb": (first["peak_rss_kb"] - first["base_rss_kb"]) / 1024,
        "tracemalloc_peak_mb": mem["tracemalloc_peak"] / 1e6,
        "gunzip": first["gunzip"],
    }
    if hta_python:
        out.update(hta_s=statistics.median(hta), hta_walls=hta,
                   hta_cpu_s=statistics.median(hta_cpu),
                   ratio_of_medians=statistics.median(hta) / wall,
                   median_ratio=statistics.median(ratios),
                   cpu_ratio=statistics.median(hta_cpu) / statistics.median(cpus))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--repeat", type=int, default=3,
                        help="parses per round, in one process (default 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="fresh-process rounds, interleaved with HTA (default 1)")
    parser.add_argument("--compare-hta", metavar="PYTHON", default=None,
                        help="python of a venv with HolisticTraceAnalysis installed ('auto': "
                             "this one, if it has HTA)")
    parser.add_argument("--whole-process", action="store_true",
                        help="also time whole processes, interleaved: tracekit summary cold "
                             "(empty cache) and warm, and HTA's TraceAnalysis (with "
                             "--compare-hta)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    args = parser.parse_args(argv)
    args.compare_hta = _hta_python(args.compare_hta)
    print(f"# machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}", flush=True)
    for path in args.paths:
        r = bench_file(path, repeat=args.repeat, rounds=args.rounds,
                       hta_python=args.compare_hta)
        if args.whole_process:
            r["whole_process"] = whole_process(path, rounds=args.rounds,
                                               hta_python=args.compare_hta)
        if args.json:
            print(json.dumps(r))
            continue
        print(f"{path}")
        print(f"  events {r['events']:,}   decompressed {r['decompressed_mb']:.1f} MB   "
              f"gunzip: {r['gunzip']}")
        print(f"  wall {r['wall_s']:.3f} s (median of {len(r['walls'])}, fastest "
              f"{min(r['walls']):.3f} s; cpu {r['cpu_s']:.3f} s)   "
              f"{r['events_per_s']:,.0f} events/s   {r['mb_per_s']:.1f} MB/s")
        print(f"  peak RSS {r['peak_rss_mb']:.0f} MB ({r['rss_above_imports_mb']:.0f} MB above "
              f"the imports; {r['peak_rss_mb'] / r['decompressed_mb']:.1f}x the decompressed "
              f"size), tracemalloc peak {r['tracemalloc_peak_mb']:.0f} MB")
        if args.compare_hta:
            print(f"  HTA TraceAnalysis {r['hta_s']:.2f} s (median of {len(r['hta_walls'])}): "
                  f"{r['median_ratio']:.1f}x slower (median of per-round ratios; "
                  f"ratio of medians {r['ratio_of_medians']:.1f}x; CPU time "
                  f"{r['hta_cpu_s']:.2f} s, {r['cpu_ratio']:.1f}x)")
        if "whole_process" in r:
            w = r["whole_process"]
            line = (f"  whole process: tracekit summary cold {w['summary_cold_s']:.2f} s, warm "
                    f"{w['summary_warm_s']:.2f} s (median of {len(w['cold_walls'])})")
            if "hta_process_s" in w:
                line += (f"; HTA TraceAnalysis {w['hta_process_s']:.2f} s: "
                         f"{w['hta_over_cold']:.1f}x slower than cold, "
                         f"{w['hta_over_warm']:.1f}x slower than warm (median of per-round "
                         "ratios; target >= 10x)")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
