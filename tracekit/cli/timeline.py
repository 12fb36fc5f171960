"""``tracekit timeline``: measured vs predicted timeline as one offline HTML file."""

from __future__ import annotations

import json

import click

from tracekit.cli.loading import ingest_options
from tracekit.cli.options import (
    WhatIfCommand,
    open_session,
    parse_ranks,
    prediction_options,
)


@click.command(cls=WhatIfCommand, epilog="""\b
Examples:
  tracekit timeline runs/mlp -o mlp.html
  tracekit timeline runs/mlp --what-if dear --step 3 --ranks 0,1 -o mlp_dear.html
  tracekit timeline traces/*.json.gz --measured-only -o measured.html

The upper panel is the measured run, the lower one the replayed (or what-if) run, on a
shared time axis in ms since the step start. Bars are colored by kind (forward, backward,
optimizer, communication, launch, sync, idle); the critical path has a red outline; ops
shorter than about a pixel are aggregated (the legend says how many). Opens offline.
""")
@click.argument("path", nargs=-1, required=True, type=click.Path(exists=True))
@ingest_options
@click.option("--what-if", "what_if", metavar="SPEC",
              help="Draw this what-if's prediction instead of the baseline replay "
                   "(e.g. dear, fusion=4MB, overlap=off).")
@click.option("--ranks", metavar="LIST", default=None,
              help="Draw only these ranks, e.g. 0,1 or 0-3,8 (default: all).")
@click.option("-o", "--output", default="timeline.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--measured-only", is_flag=True,
              help="Draw the measured run alone (no replay).")
@click.option("--export-trace", type=click.Path(dir_okay=False), default=None,
              help="Also write the predicted timeline as a Chrome/Perfetto trace (.json "
                   "or .json.gz).")
@prediction_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def timeline(path, what_if, ranks, output, measured_only, export_trace, steps, comm_model,
             interference, as_json):
    """Draw the measured and the predicted run of PATH (a run folder, a folder of Kineto
    traces, or trace files) one above the other, and write FILE.html."""
    from tracekit.views.perfetto import write_chrome_trace
    from tracekit.views.timeline import (
        headline_from,
        run_name,
        timeline_figure,
        write_timeline_html,
    )

    if measured_only and (what_if or export_trace):
        raise click.UsageError("--measured-only draws no prediction; drop --what-if / "
                               "--export-trace, or drop --measured-only")
    session = open_session(path, steps, comm_model, interference)
    run = session.run
    rank_list = parse_ranks(ranks)
    step = steps[0] if len(steps) == 1 else None
    baseline = chosen = None
    if not measured_only:
        baseline = session.baseline
        if what_if:
            chosen = session.what_ifs([what_if])[0]
    predicted = chosen.result if chosen is not None else baseline
    name = run_name(run)
    tf = timeline_figure(run.events, predicted.timeline if predicted is not None else None,
                         headline=headline_from(name, baseline, chosen, step=step),
                         step=step, ranks=rank_list)
    size = write_timeline_html(tf, output)
    trace_path = None
    if export_trace and predicted is not None:
        trace_path = str(write_chrome_trace(
            predicted.timeline, export_trace,
            name=f"tracekit {chosen.spec if chosen else 'baseline replay'}"))

    if as_json:
        click.echo(json.dumps({
            "output": str(output), "bytes": size, "rows": len(tf.rows),
            "threshold_ms": tf.threshold_ms,
            "panels": [{"name": p.name, "ops": p.n_ops, "bars": p.n_bars,
                        "aggregated_ops": p.n_aggregated_ops, "idle_bars": p.n_idle,
                        "critical_bars": p.n_critical, "window_ms": p.window_ms,
                        "steps": p.steps} for p in tf.panels],
            "measured_step_ms": baseline.median_measured_ms if baseline else None,
            "predicted_step_ms": predicted.median_step_ms if predicted else None,
            "speedup": chosen.speedup if chosen else None,
            "baseline_error_pct": baseline.error_pct if baseline else None,
            "export_trace": trace_path,
            "warnings": list(run.warnings),
        }))
        return
    click.echo(f"wrote {output} ({size / 1e6:.1f} MB, opens offline): "
               + ", ".join(p.name for p in tf.panels)
               + f"; {len(tf.rows)} lanes of {_plural(len({r.rank for r in tf.rows}), 'rank')}")
    for p in tf.panels:
        agg = (f", {p.n_aggregated_ops:,} ops under {tf.threshold_ms * 1e3:.3g} us aggregated"
               if p.n_aggregated_ops else "")
        click.echo(f"  {p.name}: {p.n_ops:,} ops in {p.n_bars:,} bars{agg}; "
                   f"{p.window_ms:.2f} ms shown")
    if baseline is not None:
        line = (f"  measured {baseline.median_measured_ms:.2f} ms/step, predicted "
                f"{predicted.median_step_ms:.2f} ms/step")
        if chosen is not None:
            line += f" ({chosen.spec}), speedup {chosen.speedup:.2f}x"
        click.echo(line + f"; baseline replay error {baseline.error_pct:+.1f}%")
    if trace_path:
        click.echo(f"  predicted trace: {trace_path} (open in https://ui.perfetto.dev)")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
