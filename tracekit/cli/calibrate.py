"""``tracekit calibrate``: measure the cluster's collectives once and save a cost model."""

from __future__ import annotations

import json
import math

import click

from replay.calibration import (
    COLLECTIVES,
    DEFAULT_BUDGET_S,
    DEFAULT_ITERS,
    DEFAULT_SIZES,
    calibration_table,
    load_comm_model,
    parse_sizes,
    run_calibration,
    write_comm_model,
)


def _fmt_bytes(n: int) -> str:
    from replay.whatif.values import format_size

    return format_size(int(n))


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog="""\b
Examples:
  tracekit calibrate -- torchrun --nproc_per_node 2
  tracekit calibrate --out comm.json --sizes 1KB..64MB --iters 10 -- torchrun --nproc_per_node 8
  tracekit replay runs/mlp --comm-model comm.json --what-if dear
""",
)
@click.option("--out", "out", default="comm.json", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the cost model.")
@click.option("--sizes", default=DEFAULT_SIZES, show_default=True,
              help="Buffer sizes: a doubling range (1KB..256MB) or a list (1KB,1MB,64MB).")
@click.option("--iters", default=DEFAULT_ITERS, show_default=True, type=click.IntRange(1),
              help="Timed calls per size (large sizes run fewer, at least 3, within --budget).")
@click.option("--budget", default=DEFAULT_BUDGET_S, show_default=True, type=float,
              help="Seconds of timed calls per collective and size.")
@click.option("--collectives", default=",".join(COLLECTIVES), show_default=True,
              help="Comma-separated collectives to measure.")
@click.option("--backend", default="", help="gloo or nccl (default: nccl when CUDA is present).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.argument("launcher", nargs=-1, type=click.UNPROCESSED, required=True)
def calibrate(out: str, sizes: str, iters: int, budget: float, collectives: str, backend: str,
              as_json: bool, launcher: tuple[str, ...]) -> None:
    """Measure all-reduce, reduce-scatter, all-gather, all-to-all and broadcast over a range
    of sizes under LAUNCHER (e.g. `-- torchrun --nproc_per_node 2`), nccl-tests style, and
    save per-collective fits for `tracekit replay --comm-model`."""
    colls = tuple(c.strip() for c in collectives.split(",") if c.strip())
    doc = run_calibration(list(launcher), sizes=parse_sizes(sizes), iters=iters,
                          collectives=colls, budget_s=budget, backend=backend)
    path = write_comm_model(doc, out)
    model = load_comm_model(path)
    table = calibration_table(model)
    if as_json:
        click.echo(json.dumps({
            "out": str(path), "backend": model.backend, "world_size": doc["world_size"],
            "median_us": {c: {str(int(b)): round(float(v), 3) for b, v in table[c].items()
                              if not math.isnan(v)} for c in model.collectives},
            "rs_over_half_ar": {str(int(b)): round(float(v), 3) for b, v in
                                table.get("rs_over_half_ar", {}).items() if not math.isnan(v)},
        }))
        return
    short = {"all_reduce": "AR", "reduce_scatter": "RS", "all_gather": "AG",
             "all_to_all": "A2A", "broadcast": "BC", "rs_over_half_ar": "RS/(AR/2)"}
    cols = list(table.columns)
    click.echo(f"median transfer time, us ({model.backend}, {doc['world_size']} ranks)")
    click.echo(f"{'size':>8} " + " ".join(f"{short.get(c, c):>10}" for c in cols))
    for size, row in table.iterrows():
        cells = [f"{row[c]:>10.2f}" if c == "rs_over_half_ar" else f"{row[c]:>10.1f}"
                 for c in cols]
        click.echo(f"{_fmt_bytes(size):>8} " + " ".join(cells))
    for line in model.notes[1:]:
        click.echo(f"  {line}")
    click.echo(f"wrote {path}")
