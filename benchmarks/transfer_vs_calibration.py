"""How much slower a run's collectives transferred than the calibration says, per size, and
how much of that the interference model explains.

    python benchmarks/transfer_vs_calibration.py RUN comm.json

Per collective and size in RUN's graph: the median transfer time (waiting for peers taken
out), the calibrated time, their ratio, and the median slowdown core and link sharing
reads from the baseline replay (:class:`replay.interference.cores.CoreSharing`). What the
ratio has beyond the modelled slowdown is what ``--comm-model`` anchors to the run.
"""

from __future__ import annotations

import argparse

import numpy as np

from tracekit.api import PredictionOptions, Session
from tracekit.graph.model import NodeKind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("comm_model")
    args = ap.parse_args()
    s = Session(args.run, PredictionOptions(comm_model=args.comm_model))
    ctx = s.context
    g, model = ctx.graph, ctx.comm
    cal = getattr(model, "calibrated", model)
    modelled = getattr(ctx.interference, "base_slowdown", np.ones(g.n_nodes))
    comm = np.flatnonzero(g.kind == NodeKind.COMM)
    names = np.array(g.names, dtype=object)[g.name[comm]]
    for name in sorted(set(names)):
        nodes = comm[names == name]
        for nbytes in sorted(set(g.bytes[nodes].tolist())):
            sel = nodes[g.bytes[nodes] == nbytes]
            ran = float(np.median(g.dur_ns[sel])) / 1e6
            want = cal.time_ns(name.split(":")[-1], nbytes, ctx.world) / 1e6
            print(f"{name:22} {nbytes:>11} B  {len(sel):4} calls  transfer {ran:8.2f} ms  "
                  f"calibrated {want:8.2f} ms  x{ran / want:.2f}  modelled sharing "
                  f"x{float(np.median(modelled[sel])):.2f}")


if __name__ == "__main__":
    main()
