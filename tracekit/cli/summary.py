"""``tracekit summary``: per rank and step, where the time went."""

from __future__ import annotations

import json

import click

from tracekit.analysis.breakdown import Summary, summarize
from tracekit.analysis.collectives import collective_table, format_collective_table
from tracekit.cli.loading import ingest_from_context, ingest_options
from tracekit.core.run import load_run

_EPILOG = """\b
Examples:
  tracekit summary runs/mlp
  tracekit summary traces/                       # any folder of Kineto traces
  tracekit summary rank0.json.gz rank1.json.gz --json

\b
Definitions (per rank and step; unions of intervals, nothing counted twice):
  step      the ProfilerStep#N window on the host; on a GPU rank extended to the
            end of the last GPU event launched in the step. No ProfilerStep: the
            whole trace is one window, step 0.
  compute   GPU rank: kernels, memcpys and memsets on any stream (NCCL excluded).
            CPU rank: operators on the main training thread (the one holding
            ProfilerStep), minus ops that only wait for comm (c10d::barrier,
            c10d::wait, wait_tensor). DDP's bucket waits record no op in gloo
            traces: they are gaps, not compute.
  comm      collective transfers: NCCL kernels, gloo:* events on gloo threads.
  exposed   comm minus compute: communication nothing hides.
  overlap   comm that runs while compute runs.
  idle      window minus (compute or comm).
  compute + exposed + idle = step;  comm = exposed + overlap.

\b
--json prints one object:
  {"world_size": 2, "ranks_present": [0, 1], "step_ms": 23.6,
   "ranks": [{"rank": 0, "steps": [{"step": 2, "ms": 23.56, "compute_ms": 4.81,
     "comm_ms": 19.31, "exposed_comm_ms": 17.14, "idle_ms": 1.61,
     "overlap_ms": 2.17}]}],
   "stragglers": [{"rank": 1, "excess_ms": 8.1, "excess_pct": 16.8, "compute_ms": 56.2,
     "fastest_rank": 0, "fastest_ms": 48.1,
     "top_ops": [{"name": "aten::addmm", "excess_ms": 6.2}]}],
   "notes": [...], "warnings": [...]}
  step_ms is the median over steps of the slowest rank's step time. A straggler is a
  rank whose median compute per step exceeds the fastest rank's by more than 5%; its
  top_ops are the ops with the most excess time per step. warnings: what was left out
  reading the run (dropped events, incomplete steps, ...), also on stderr.
  "collectives" (runs with NCCL kernels): one row per collective, algorithm and protocol:
  {"collective": "all_reduce", "algorithm": "ring", "protocol": "ll", "calls": 36,
   "median_bytes": 1048576, "channels": 16, "total_ms": 12.5, "source": "NCCL log"}
  (algorithm / protocol from NCCL's log in the run folder, else the kernel name).
"""


@click.command(epilog=_EPILOG)
@click.argument("path", nargs=-1, required=True, type=click.Path())
@ingest_options(dask=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (see below).")
def summary(path: tuple[str, ...], as_json: bool) -> None:
    """Step time, compute, communication, exposed communication, overlap and idle time
    per rank and step of PATH: a run folder, a folder of Kineto traces, or trace files."""
    run = load_run(list(path) if len(path) > 1 else path[0], progress=True,
                   ingest=ingest_from_context("graph"))
    result = summarize(run)
    collectives = collective_table(run)
    if as_json:
        doc = result.to_json()
        if collectives:
            doc["collectives"] = collectives
        doc["warnings"] = list(run.warnings)
        click.echo(json.dumps(doc))
    else:
        text = format_summary(result)
        if collectives:
            head, sep, notes = text.partition("\nnote: ")
            text = "\n".join([head, *format_collective_table(collectives)]) + (
                sep + notes if sep else "")
        click.echo(text)


def format_summary(result: Summary) -> str:
    """The text table ``tracekit summary`` prints."""
    ranks = result.ranks_present
    lines = [
        f"world size {result.world_size}, ranks present: {_compact(ranks)}; "
        f"step time {result.step_ms:.3f} ms (median over steps of the slowest rank)",
        "",
        f"{'rank':>4} {'step':>6} {'basis':>5} {'step ms':>10} {'compute':>10} {'comm':>10} "
        f"{'exposed':>10} {'overlap':>10} {'idle':>10}",
    ]
    for r in result.steps.itertuples(index=False):
        lines.append(
            f"{r.rank:>4} {r.step:>6} {r.basis:>5} {r.ms:>10.3f} {r.compute_ms:>10.3f} "
            f"{r.comm_ms:>10.3f} {r.exposed_comm_ms:>10.3f} {r.overlap_ms:>10.3f} "
            f"{r.idle_ms:>10.3f}"
        )
    lines.append("")
    lines.append("times in ms; compute + exposed + idle = step; comm = exposed + overlap "
                 "(tracekit summary --help for the definitions)")
    for s in result.stragglers:
        ops = ", ".join(f"{name} +{ms:.2f}" for name, ms in s.top_ops) or "no single op"
        lines.append(f"straggler: rank {s.rank} computes {s.excess_ms:.2f} ms per step more "
                     f"than rank {s.fastest_rank} (+{s.excess_ms / s.fastest_ms * 100:.0f}%); "
                     f"most of it in {ops}")
    lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines)


def _compact(ranks: list[int]) -> str:
    if len(ranks) <= 8:
        return ", ".join(str(r) for r in ranks)
    return f"{ranks[0]}..{ranks[-1]} ({len(ranks)} ranks)"
