"""``tracekit replay``: baseline replay vs measured, per step, and what-if predictions."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import click

from replay.intervals import step_interval
from replay.result import CriticalPath, ReplayResult
from replay.whatif.spec import parse_spec
from tracekit.cli.loading import ingest_options
from tracekit.cli.options import (
    WhatIfCommand,
    open_session,
    prediction_options,
)
from tracekit.core.run import Run
from tracekit.log import get_logger
from tracekit.views.perfetto import write_chrome_trace

log = get_logger(__name__)

_EPILOG = """\b
Examples:
  tracekit replay runs/mlp
  tracekit replay runs/mlp --step 6 --json
  tracekit replay runs/mlp --what-if fusion=4MB --what-if overlap=off
  tracekit replay runs/mlp --what-if "fusion=1MB..256MB" --export-trace pred.json

\b
Step time, measured: the ProfilerStep#N window of the slowest rank. Predicted: the
same window in the replayed schedule (from the replayed start of the step's first
node on the main thread to the next step's). error = (predicted - measured) / measured.
The baseline replays the recorded op durations through the dataflow graph with every
dependency's latency set to its typical (median) value per rank and edge kind; waiting
(in collectives, in host waits) is recreated from arrival times, never copied. Its error
says how well the graph explains the run, and what-ifs start from this same graph (on a
busy CPU, thread-scheduling noise of a few ms shows up in the error). A what-if predicts
the job as it runs without the profiler: when the run folder records the profiled and
unprofiled step times (``tracekit profile`` does), the profiler's cost per recorded event
is taken out of the host ops first, and speedups are against that baseline
(what_if_baseline_ms in --json).

\b
--json prints one object:
  {"world_size": 2, "measured_step_ms": 23.7,
   "baseline": {"step_ms": 24.1, "error_pct": 1.7, "median_abs_step_error_pct": 1.9,
                "worst_step_error_pct": -3.2},
   "steps": [{"step": 2, "measured_ms": 28.0, "predicted_ms": 28.3, "error_pct": 1.1}],
   "critical_path": {"total_ms": ..., "by_kind_ms": {...}, "by_lane_ms": {...}},
   "what_if_baseline_ms": 22.3,
   "what_ifs": [{"spec": "fusion=4MB", "step_ms": 19.7, "speedup": 1.13,
                 "transforms": [{"what_if": "fusion", "bucket_bytes": 4194304}]}],
   "notes": [...], "warnings": [...]}
warnings: what was left out reading the run (dropped events, incomplete steps, ...).
"""


@click.command(cls=WhatIfCommand, epilog=_EPILOG)
@click.argument("path", nargs=-1, required=True, type=click.Path())
@ingest_options(dask=True)
@prediction_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (see below).")
@click.option("--what-if", "what_ifs", multiple=True, metavar="SPEC",
              help="A what-if to predict, e.g. fusion=4MB, overlap=off, dear, "
                   "'fusion=1MB..256MB' (repeatable; the list is below).")
@click.option("--export-trace", type=click.Path(dir_okay=False), default=None,
              help="Write the predicted baseline timeline as a Chrome/Perfetto trace; each "
                   "what-if goes beside it as NAME.whatif1.json, ...")
def replay(path: tuple[str, ...], steps: tuple[int, ...], as_json: bool,
           what_ifs: tuple[str, ...], comm_model: str | None, interference: str,
           export_trace: str | None) -> None:
    """Replay PATH (a run folder, a folder of Kineto traces, or trace files) through its
    dataflow graph: measured vs predicted step time per step, the error, the critical
    path, and what-if predictions."""
    session = open_session(path, steps, comm_model, interference, events="graph")
    baseline = session.baseline
    results = session.what_ifs(list(what_ifs))
    if export_trace:
        _export(export_trace, baseline, results)
    doc = replay_json(session.run, baseline, results, graph_notes=session.graph.notes)
    click.echo(json.dumps(doc) if as_json else format_replay(doc))


def _export(path: str, baseline: ReplayResult, results: list) -> None:
    write_chrome_trace(baseline.timeline, path)
    p = Path(path)
    stem = p.name[: -len("".join(p.suffixes))] if p.suffixes else p.name
    for i, r in enumerate(results, 1):
        write_chrome_trace(r.result.timeline, p.with_name(f"{stem}.whatif{i}{''.join(p.suffixes)}"))


def _path_json(cp: CriticalPath | None, n_steps: int) -> dict:
    if cp is None:
        return {}
    lanes = sorted(cp.by_lane_ns.items(), key=lambda kv: -kv[1])
    return {
        "total_ms": cp.total_ns / 1e6,
        "per_step_ms": cp.total_ns / 1e6 / max(n_steps, 1),
        "nodes": len(cp.nodes),
        "by_kind_ms": {k: v / 1e6 for k, v in sorted(cp.by_kind_ns.items(), key=lambda kv: -kv[1])},
        "by_lane_ms": {k: v / 1e6 for k, v in lanes[:8]},
        "by_rank_ms": {str(r): v / 1e6 for r, v in sorted(cp.by_rank_ns.items(),
                                                          key=lambda kv: -kv[1])},
    }


def _step_errors(res: ReplayResult) -> dict[int, float]:
    return {s: (res.step_ms[s] - m) / m * 100.0 if m else 0.0
            for s, m in res.measured_step_ms.items()}


def replay_json(run: Run, baseline: ReplayResult, what_ifs: list, *,
                graph_notes: list[str]) -> dict:
    """The ``--json`` document (see the command's help)."""
    steps = sorted(baseline.step_ms)
    errors = _step_errors(baseline)
    band = step_interval(baseline)
    doc = {
        "world_size": run.world_size,
        "ranks_present": run.ranks,
        "measured_step_ms": baseline.median_measured_ms,
        "baseline": {
            "step_ms": baseline.median_step_ms, "step_ms_lo": band.lo, "step_ms_hi": band.hi,
            "error_pct": baseline.error_pct,
            "median_abs_step_error_pct": statistics.median(
                abs(v) for v in errors.values()) if errors else 0.0,
            "worst_step_error_pct": max(errors.values(), key=abs, default=0.0)},
        "steps": [
            {"step": s, "measured_ms": baseline.measured_step_ms[s],
             "predicted_ms": baseline.step_ms[s],
             "error_pct": (baseline.step_ms[s] - baseline.measured_step_ms[s])
             / baseline.measured_step_ms[s] * 100.0 if baseline.measured_step_ms[s] else 0.0}
            for s in steps
        ],
        "critical_path": _path_json(baseline.critical_path, len(steps)),
        "what_ifs": [],
        "what_if_notes": list(what_ifs[0].shared_notes) if what_ifs else [],
        # the baseline step every speedup is against (without the profiler's cost when it
        # was taken out: see the what-if notes)
        "what_if_baseline_ms": what_ifs[0].baseline_ms if what_ifs else None,
        "notes": [*run.notes, *graph_notes, *baseline.notes],
        "warnings": list(run.warnings),
    }
    for w in what_ifs:
        item = {"spec": w.spec, "step_ms": w.result.median_step_ms,
                "step_ms_lo": w.step_ms_lo, "step_ms_hi": w.step_ms_hi, "speedup": w.speedup,
                "speedup_lo": w.speedup_lo, "speedup_hi": w.speedup_hi,
                "transforms": [t.to_json() for t in
                               parse_spec(w.best_spec or w.spec).variants[0].transforms]}
        if w.best_spec:
            item["best"] = w.best_spec
            item["sweep"] = [{"spec": s, "step_ms": ms} for s, ms in w.sweep]
        if w.notes:
            item["notes"] = list(w.notes)
        doc["what_ifs"].append(item)
    return doc


def _table(doc: dict) -> list[str]:
    lines = [f"{'step':>6} {'measured ms':>12} {'predicted ms':>13} {'error':>8}"]
    for s in doc["steps"]:
        lines.append(f"{s['step']:>6} {s['measured_ms']:>12.3f} {s['predicted_ms']:>13.3f} "
                     f"{s['error_pct']:>+7.2f}%")
    b = doc["baseline"]
    lines.append(f"median step time: measured {doc['measured_step_ms']:.3f} ms, predicted "
                 f"{b['step_ms']:.3f} ms [{b['step_ms_lo']:.3f}-{b['step_ms_hi']:.3f}] "
                 f"({b['error_pct']:+.2f}%)")
    lines.append(f"per-step error: median |error| {b['median_abs_step_error_pct']:.2f}%, "
                 f"worst step {b['worst_step_error_pct']:+.2f}%")
    return lines


def _what_if_lines(doc: dict) -> list[str]:
    b = doc["baseline"]
    against = doc.get("what_if_baseline_ms")
    if against is not None and abs(against - b["step_ms"]) > 5e-4:
        head = (f"what-ifs (against the baseline replayed without the profiler's cost, "
                f"{against:.3f} ms/step; with it {b['step_ms']:.3f} ms, error "
                f"{b['error_pct']:+.2f}%; 95% intervals in brackets):")
    else:
        head = (f"what-ifs (from the baseline replay, {b['step_ms']:.3f} ms/step, error "
                f"{b['error_pct']:+.2f}%; 95% intervals in brackets):")
    lines = ["", head,
             f"  {'what-if':<28} {'step ms':>24}  {'speedup':>22}"]
    for w in doc["what_ifs"]:
        best = f"  best: {w['best']}" if "best" in w else ""
        step = f"{w['step_ms']:.3f} [{w['step_ms_lo']:.2f}-{w['step_ms_hi']:.2f}]"
        speed = f"{w['speedup']:.3f}x [{w['speedup_lo']:.3f}-{w['speedup_hi']:.3f}]"
        lines.append(f"  {w['spec']:<28} {step:>24}  {speed:>22}{best}")
        lines.extend(f"      {n}" for n in w.get("notes", []))
    if doc["what_if_notes"]:
        lines.append("  every what-if above assumes:")
        lines.extend(f"      {n}" for n in doc["what_if_notes"])
    return lines


def format_replay(doc: dict) -> str:
    """The text ``tracekit replay`` prints for a :func:`replay_json` document."""
    lines = [f"world size {doc['world_size']}, ranks replayed: {len(doc['ranks_present'])}",
             "", *_table(doc)]
    cp = doc["critical_path"]
    if cp and cp["total_ms"] > 0:
        parts = " · ".join(f"{k} {v / cp['total_ms'] * 100:.0f}%"
                           for k, v in cp["by_kind_ms"].items() if v > 0)
        top = next(iter(cp["by_lane_ms"].items()), None)
        where = f"; busiest lane {top[0]} {top[1] / cp['total_ms'] * 100:.0f}%" if top else ""
        rank = next(iter(cp.get("by_rank_ms", {}).items()), None)
        if rank is not None and len(doc["ranks_present"]) > 1:
            where += (f"; runs through rank {rank[0]} for "
                      f"{rank[1] / cp['total_ms'] * 100:.0f}% of it")
        lines.append("")
        lines.append(f"critical path ({cp['per_step_ms']:.3f} ms per step): {parts}{where}")
    if doc["what_ifs"]:
        lines += _what_if_lines(doc)
    if doc["notes"]:
        lines.append("")
        lines.extend(f"note: {n}" for n in doc["notes"])
    return "\n".join(lines)
