"""Per collective of a run: the idle time on the link before it, its measured transfer and
what the calibration's busy-link curve says it costs (no new runs).

    python benchmarks/collective_gaps.py /tmp/wa_w/mlp-2gbit/baseline-fsdp /tmp/wa_w/mlp-2gbit/comm.json

The evidence for the link's burst credit (:mod:`replay.link_credit`): on a token-bucket
link a collective after an idle gap runs faster than the busy-link curve, by up to what
the bucket holds (``link_credit`` in ``comm.json``). Per collective name and size it
prints the calls, the median idle gap before them on the link (from the end of the
previous collective of any rank, in the baseline replay), the median measured transfer,
the busy-link cost and the median saving (cost - transfer). ``--calls N`` also lists the
first N collectives one by one.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from replay.calibration import load_comm_model
from tracekit.api import Session
from tracekit.core.collectives import normalize_collective
from tracekit.graph.model import NodeKind


def instances(session: Session) -> list[dict]:
    """Every collective instance in start order: name, bytes, step, gap before it on the
    link, transfer (the longest participant's), as replayed."""
    g, sched = session.graph, session.baseline.schedule
    comm = np.flatnonzero(g.kind == NodeKind.COMM)
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for v in comm:
        groups[int(g.coll_id[v]) if g.coll_id[v] >= 0 else -1 - int(v)].append(int(v))
    rows, free = [], None
    for nodes in sorted(groups.values(), key=lambda vs: sched.start_ns[vs].min()):
        start, end = sched.start_ns[nodes].min(), sched.end_ns[nodes].max()
        rows.append({"name": g.names[g.name[nodes[0]]], "bytes": int(g.bytes[nodes[0]]),
                     "step": int(g.step[nodes[0]]),
                     "gap_ms": np.nan if free is None else max(start - free, 0) / 1e6,
                     "transfer_ms": g.dur_ns[nodes].max() / 1e6})
        free = end if free is None else max(free, end)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a run folder (or traces)")
    ap.add_argument("comm_model", help="comm.json of the same link")
    ap.add_argument("--calls", type=int, default=0, help="also list the first N collectives")
    args = ap.parse_args()
    model = load_comm_model(args.comm_model)
    session = Session(args.run)
    world = max(int(session.run.world_size), 1)
    rows = instances(session)
    for r in rows:
        coll = normalize_collective(r["name"]) or "all_reduce"
        r["busy_ms"] = model.time_ns(coll, max(r["bytes"], 0), world) / 1e6
    print(f"link credit: {model.link_burst_ns() / 1e6:.2f} ms (comm.json link_credit)")
    print(f"{'collective':<18} {'bytes':>10} {'calls':>5} {'gap ms':>8} {'transfer ms':>12} "
          f"{'busy-link ms':>13} {'saved ms':>9}")
    by = collections.defaultdict(list)
    for r in rows:
        by[(r["name"], r["bytes"])].append(r)
    for (name, nbytes), rs in by.items():
        gap, transfer, busy = (float(np.nanmedian([r[k] for r in rs]))
                               for k in ("gap_ms", "transfer_ms", "busy_ms"))
        saved = float(np.median([r["busy_ms"] - r["transfer_ms"] for r in rs]))
        print(f"{name:<18} {nbytes:>10} {len(rs):>5} {gap:>8.2f} {transfer:>12.2f} "
              f"{busy:>13.2f} {saved:>9.2f}")
    for r in rows[:args.calls]:
        print(f"  step {r['step']} {r['name']} {r['bytes']} B: gap {r['gap_ms']:.2f} ms, "
              f"transfer {r['transfer_ms']:.2f} ms, busy-link {r['busy_ms']:.2f} ms")


if __name__ == "__main__":
    main()
