"""The floor under a cold ``tracekit summary``: what any design that reads the trace into
DataFrames must spend, against Holistic Trace Analysis loading the same file.

    .venv/bin/python benchmarks/cold_floor.py ../shared/traces/gpu/world2_rank1_2020_allreduce_large.json.gz

Each round times fresh processes, one after the other (then the pair side by side):

- ``import``: ``python -c "import numpy, pandas"``, the libraries the event tables and the
  analyses are built on (the design card: DataFrames for bulk events);
- ``decode``: gunzip and decode the JSON with tracekit's decoder (msgspec, ISA-L), nothing
  else: no numpy, no table;
- ``columns``: the decode, then the part of building the event table that needs no pandas
  (the checks of every event's times and ids, names and categories as codes, the
  ``args`` ids as arrays: what a parser running beside the imports could do);
- ``side by side``: ``import`` and ``columns`` at once, in separate processes (a design
  that parses while it imports), until both are done;
- ``tracekit cold``: ``tracekit summary TRACE --json`` with an empty cache folder;
- ``HTA``: ``TraceAnalysis(trace_dir=...)`` in a fresh interpreter (with ``--hta``).

A cold summary must import, decode and build its columns, so it cannot beat the faster
of "one after the other" and "side by side" (and still has to make its DataFrames, write
the cache entry and summarize). The script
prints the medians and that floor against HTA's time over 10 (issue 13's target).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
IMPORT = [PY, "-c", "import numpy, pandas"]
DECODE = [PY, "-c", "import sys; from pathlib import Path; "
          "from tracekit.core.kineto_json import decode_trace; decode_trace(Path(sys.argv[1]))"]
COLUMNS = [PY, "-c", "import gc, sys; gc.disable(); from pathlib import Path\n"
           "from tracekit.core import kineto_json as kj\n"
           "p = Path(sys.argv[1]); doc = kj.decode_trace(p)\n"
           "import numpy as np\n"
           "from tracekit.core.validate import usable_columns\n"
           "xs = [e for e in doc.traceEvents if e.__class__ is kj.Event]\n"
           "usable_columns(xs, p, 0)\n"
           "def codes(vals):\n"
           "    seen = {}; sd = seen.setdefault\n"
           "    return np.fromiter([sd(v, len(seen)) for v in vals], np.int32, len(vals))\n"
           "codes([e.name for e in xs]); codes([e.cat for e in xs])\n"
           "no = kj.Args(); args = [e.args or no for e in xs]\n"
           "for f in ('stream', 'correlation', 'external_id'):\n"
           "    np.fromiter([v if type(v := getattr(a, f)) is int else -1 for a in args],\n"
           "                np.int64, len(args))"]
HTA = [PY, "-c", "import logging, os, sys, tempfile; logging.disable(logging.CRITICAL)\n"
       "from hta.trace_analysis import TraceAnalysis\n"
       "p = os.path.abspath(sys.argv[1]); d = tempfile.mkdtemp()\n"
       "os.symlink(p, os.path.join(d, os.path.basename(p))); TraceAnalysis(trace_dir=d)"]


def _wall(*cmds: list[str], env: dict | None = None) -> float:
    """Seconds until every command (started together) has finished."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for c in cmds]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"failed: {' '.join(p.args)}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hta", action=argparse.BooleanOptionalAction, default=True,
                    help="also time HTA (needs it importable here)")
    args = ap.parse_args()
    trace = str(args.trace.resolve())
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "tracekit")], check=True)
    times: dict[str, list[float]] = {k: [] for k in ("import", "decode", "columns",
                                                    "side by side", "tracekit cold", "HTA")}
    for _ in range(args.rounds):
        times["import"].append(_wall(IMPORT))
        times["decode"].append(_wall([*DECODE, trace]))
        times["columns"].append(_wall([*COLUMNS, trace]))
        times["side by side"].append(_wall(IMPORT, [*COLUMNS, trace]))
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TRACEKIT_CACHE_DIR": cache}
            times["tracekit cold"].append(_wall([PY, "-m", "tracekit", "summary", trace,
                                                 "--json"], env=env))
        if args.hta:
            times["HTA"].append(_wall([*HTA, trace]))
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"# {os.cpu_count()} cpus, python {sys.version.split()[0]}, {args.rounds} rounds "
          "(medians, seconds of fresh processes)")
    for k, v in med.items():
        print(f"  {k:<14} {v:6.3f} s   {' '.join(f'{x:.2f}' for x in times[k])}")
    floor = min(med["import"] + med["columns"], med["side by side"])
    print(f"  floor: import, decode and the pandas-free columns, the faster of one after "
          f"the other ({med['import'] + med['columns']:.3f} s) and side by side "
          f"({med['side by side']:.3f} s): {floor:.3f} s, before any DataFrame, cache entry "
          "or summary")
    if "HTA" in med:
        print(f"  HTA / 10 = {med['HTA'] / 10:.3f} s: the floor is "
              f"{med['HTA'] / floor:.1f}x faster than HTA, tracekit cold "
              f"{med['HTA'] / med['tracekit cold']:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
