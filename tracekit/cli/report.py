"""``tracekit report``: one HTML page with the summary, what-ifs and timeline of a run."""

from __future__ import annotations

import json
from pathlib import Path

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
  tracekit report runs/mlp -o mlp_report.html
  tracekit report runs/mlp --what-if dear --what-if "fusion=1MB..256MB" -o report.html

One self-contained page (opens offline, plotly.js embedded once): the per-rank summary,
the breakdown (compute / exposed communication / idle per rank), the what-if table with
the baseline replay's error, a chart per sweep with the best setting marked, and the
measured-vs-predicted timeline of the best what-if.
""")
@click.argument("path", nargs=-1, required=True, type=click.Path(exists=True))
@ingest_options
@click.option("--what-if", "what_ifs", metavar="SPEC", multiple=True,
              help="A what-if to predict (repeatable; a range sweeps).")
@click.option("--timeline", "timeline_spec", metavar="SPEC", default=None,
              help="Which what-if the timeline draws (default: the best one).")
@click.option("--ranks", metavar="LIST", default=None, help="Timeline of these ranks only.")
@click.option("-o", "--output", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--measured-only", is_flag=True, help="No replay: summary and measured timeline.")
@prediction_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def report(path, what_ifs, timeline_spec, ranks, output, measured_only, steps, comm_model,
           interference, as_json):
    """Write one HTML report of PATH (a run folder, a folder of Kineto traces, or trace
    files) to send to a colleague."""
    from tracekit.views.report import build_report, write_report

    if measured_only and what_ifs:
        raise click.UsageError("--measured-only predicts nothing; drop --what-if or "
                               "--measured-only")
    session = open_session(path, steps, comm_model, interference)
    baseline = None
    results = []
    if not measured_only:
        baseline = session.baseline
        results = session.what_ifs(list(what_ifs))
    rep = build_report(session.run, baseline=baseline, whatifs=results,
                       summary=session.summary(), step=steps[0] if len(steps) == 1 else None,
                       ranks=parse_ranks(ranks), timeline_spec=timeline_spec)
    size = write_report(rep, output)
    if as_json:
        click.echo(json.dumps({
            "output": str(output), "bytes": size, "summary": rep.has_summary,
            "what_ifs": [{"spec": w.spec, "step_ms": w.result.median_step_ms,
                          "speedup": w.speedup, "best": w.best_spec or None} for w in results],
            "timeline": rep.timeline_spec or ("baseline" if baseline else "measured"),
            "warnings": list(session.run.warnings),
        }))
        return
    click.echo(f"wrote {output} ({size / 1e6:.1f} MB, opens offline)")
    if baseline is not None:
        click.echo(f"  measured {baseline.median_measured_ms:.2f} ms/step, baseline replay "
                   f"{baseline.median_step_ms:.2f} ms/step ({baseline.error_pct:+.1f}%)")
    for w in results:
        best = f", best {w.best_spec}" if w.best_spec else ""
        click.echo(f"  {w.spec}: {w.result.median_step_ms:.2f} ms/step, speedup "
                   f"{w.speedup:.2f}x{best}")
    click.echo(f"  timeline: {rep.timeline_spec or ('baseline replay' if baseline else 'measured')}"
               f" ({Path(output).name})")
