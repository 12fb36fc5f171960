"""Record Holistic Trace Analysis's breakdown of every corpus trace (the reference values
that tests/test_corpus.py checks tracekit's summary against). Not a test, not run in CI:
HTA is a reference tool, not a tracekit dependency. To regenerate::

    pip install --no-deps HolisticTraceAnalysis==0.5.0 && pip install psutil pyyaml pydot
    python tests/data/corpus/hta_reference.py > tests/data/corpus/hta_reference.json

(with ``HTA_DISABLE_NS_ROUNDING=1``, which the script sets: HTA otherwise rounds every
event of a fractional-µs trace inward to whole µs, which moves its idle time by up to
1 µs per kernel.)

For each trace HTA loads it as rank 0 (``TraceAnalysis(trace_files={0: name},
trace_dir=folder, include_last_profiler_step=True)``), and the script records

- ``temporal``: the row of ``get_temporal_breakdown()`` (idle, compute, non-compute and
  kernel time in µs: HTA's window runs from the first GPU event to the last);
- ``comm_comp_overlap_pct``: ``get_comm_comp_overlap()`` for the rank;
- ``comm_us`` / ``noncomm_us``: the union of HTA's COMMUNICATION kernels, and of all its
  other GPU events (computation, memory, other), merged with HTA's own
  ``merge_kernel_intervals``; ``window_start_us``: the first GPU event's time on the
  trace's own clock (HTA shifts times to start at 0; its ``min_ts`` is added back).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
#: the Kineto traces of the corpus with GPU events (the rocprofv3 file is not Kineto)
TRACES = sorted(p for p in HERE.glob("*/*.json.gz") if not p.name.startswith("rocprofv3"))


def _union_us(df) -> float:
    from hta.utils.utils import merge_kernel_intervals

    if df.empty:
        return 0.0
    merged = merge_kernel_intervals(df[["ts", "dur"]].copy())
    return float(merged["end"].sum() - merged["ts"].sum())


def _number(x) -> float | None:
    x = float(x)
    return None if x != x else x


def reference(path: Path) -> dict:
    from hta.trace_analysis import TraceAnalysis
    from hta.utils.utils import KernelType, get_kernel_type

    ta = TraceAnalysis(trace_files={0: path.name}, trace_dir=str(path.parent),
                       include_last_profiler_step=True)
    temporal = ta.get_temporal_breakdown(visualize=False).iloc[0].to_dict()
    overlap = ta.get_comm_comp_overlap(visualize=False)
    df = ta.t.get_trace(0)
    sym = ta.t.symbol_table.get_sym_table()
    gpu = df[df["stream"].ne(-1)]
    types = gpu["name"].map(lambda i: get_kernel_type(sym[i]))
    is_comm = types.eq(KernelType.COMMUNICATION.name)
    return {
        "temporal": {k: float(v) for k, v in temporal.items()},
        # NaN (no communication kernel) is written as null
        "comm_comp_overlap_pct": _number(overlap.iloc[0, 1]) if len(overlap) else None,
        "comm_us": _union_us(gpu[is_comm]),
        "noncomm_us": _union_us(gpu[~is_comm]),
        "window_start_us": float(ta.t.min_ts + gpu["ts"].min()),
        "gpu_events": int(len(gpu)),
    }


def _pandas3_compat() -> None:
    """HTA 0.5.0 downcasts the correlation column to the smallest int type, then writes
    row indices into a column derived from it; pandas 2 upcast silently, pandas 3 raises.
    Widen the column first (what pandas 2 did); nothing else changes."""
    import hta.common.trace as trace_mod

    original = trace_mod.transform_correlation_to_index

    def widened(df, symbol_table):
        if "correlation" in df.columns:
            df["correlation"] = df["correlation"].astype("int64")
        return original(df, symbol_table)

    trace_mod.transform_correlation_to_index = widened


def main() -> None:
    logging.disable(logging.WARNING)
    # HTA rounds fractional-µs events inward (ceil start, floor end) unless told not to:
    # keep every trace at its recorded precision, as tracekit reads it
    os.environ["HTA_DISABLE_NS_ROUNDING"] = "1"
    import hta

    _pandas3_compat()

    out = {"tool": f"HolisticTraceAnalysis {getattr(hta, '__version__', '0.5.0')}",
           "command": "HTA_DISABLE_NS_ROUNDING=1 python tests/data/corpus/hta_reference.py",
           "traces": {}}
    for path in TRACES:
        try:
            value = reference(path)
        except Exception as exc:  # noqa: BLE001 - HTA fails on some shapes: record how
            value = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out["traces"][str(path.relative_to(HERE))] = value
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
