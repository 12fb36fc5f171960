"""``tracekit profile``: record a run folder from an unchanged training command."""

from __future__ import annotations

import datetime
import json

import click

from tracekit.errors import TracekitError


def _default_out() -> str:
    return "runs/profile-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog="""\b
Examples:
  tracekit profile --out runs/mlp -- torchrun --nproc_per_node 2 samples/train_ddp.py
  tracekit profile --steps 3 -- python train.py --epochs 1

The command runs unchanged; the exit code is the command's (also when the run folder
could not be finished, which is reported as one error line). One profile at a time
per --out: a folder another profile holds is refused before anything starts. Steps are counted at each
optimizer.step() (or collectors.step() in loops without an optimizer): after the first
one, WAIT steps run unprofiled (timed, for the overhead figure), WARMUP steps warm the
profiler up, and STEPS steps are recorded.""",
)
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Run folder to write [default: runs/profile-<date>-<time>].")
@click.option("--wait", type=click.IntRange(min=0), default=3, show_default=True,
              help="Unprofiled steps after the first, timed as the no-profiler reference.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Profiler warm-up steps (recorded, then discarded).")
@click.option("--steps", "active", type=click.IntRange(min=1), default=5, show_default=True,
              help="Steps to record.")
@click.option("--record-shapes/--no-record-shapes", default=True, show_default=True,
              help="Record operator input shapes (needed for gloo collective sizes).")
@click.option("--annotate/--no-annotate", default=True, show_default=True,
              help="Mark each module's forward and backward in the trace (tracekit.fwd:/"
                   "tracekit.bwd: ranges; turn off for torch.compile'd models, which "
                   "recompile when hooks change).")
@click.option("--overwrite", is_flag=True,
              help="Replace a run already in --out (never one another profile is writing).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the manifest as one JSON object on stdout when done.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def profile(ctx: click.Context, out: str | None, wait: int, warmup: int, active: int,
            record_shapes: bool, annotate: bool, overwrite: bool, as_json: bool,
            command: tuple[str, ...]) -> None:
    """Run COMMAND with the collector in every rank and write a run folder."""
    from collectors.config import CollectorConfig
    from collectors.launch import run_profiled

    if not command:
        raise TracekitError("no command given; usage: tracekit profile [OPTIONS] -- COMMAND...")
    config = CollectorConfig(run_dir=out or _default_out(), wait=wait, warmup=warmup,
                             active=active, record_shapes=record_shapes, annotate=annotate)
    outcome = run_profiled(list(command), config, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(outcome.manifest))
    else:
        _summary(outcome)
    if outcome.error:
        click.echo(f"error: {outcome.error}", err=True)
    ctx.exit(outcome.exit_code)


def _summary(outcome) -> None:
    m = outcome.manifest
    ranks = m.get("ranks", [])
    with_trace = [r["rank"] for r in ranks if r.get("trace")]
    lines = [f"tracekit: run folder {outcome.run_dir}",
             f"tracekit: {len(with_trace)} of {m.get('world_size', 0)} ranks traced "
             f"(backend {m.get('backend') or '?'}), command exited with {outcome.exit_code}"]
    if ranks and ranks[0].get("steps"):
        lines.append(f"tracekit: profiled steps {ranks[0]['steps']}")
    ov = m.get("overhead") or {}
    if ov.get("ratio"):
        lines.append(f"tracekit: step {ov['profiled_step_ms']:.1f} ms profiled vs "
                     f"{ov['unprofiled_step_ms']:.1f} ms unprofiled (x{ov['ratio']:.2f} "
                     "profiler overhead)")
    model = m.get("model") or {}
    if model:
        ddp = model.get("ddp") or {}
        units = (model.get("fsdp") or {}).get("units") or []
        what = (f"{len(units)} FSDP units" if units
                else f"{len(ddp.get('buckets') or [])} DDP buckets")
        lines.append(f"tracekit: model {len(model.get('parameters') or [])} parameters, {what}")
    for e in m.get("errors", []):
        lines.append(f"tracekit: problem: {e}")
    if with_trace and not outcome.error:
        lines.append(f"tracekit: next: tracekit summary {outcome.run_dir}")
    for line in lines:
        click.echo(line, err=True)
