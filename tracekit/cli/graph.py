"""``tracekit graph``: what the global dataflow graph of a run holds, and its export."""

from __future__ import annotations

import json

import click

from replay.checks import check_graph
from tracekit.cli.loading import ingest_from_context, ingest_options
from tracekit.core.run import load_run
from tracekit.graph.build import build_graph
from tracekit.graph.export import graph_summary, write_graphml

_EPILOG = """\b
Examples:
  tracekit graph runs/mlp
  tracekit graph runs/mlp --step 6 --export mlp.graphml     # open in Gephi / networkx
  tracekit graph traces/ --json

\b
--json prints one object:
  {"nodes": 840, "edges": 1302, "nodes_by_kind": {"compute": 776, ...},
   "edges_by_kind": {"LANE_ORDER": 834, ...}, "inferred_edges": 7,
   "lanes": [{"id": 0, "rank": 0, "kind": "cpu", "name": "python3 2394", "nodes": 397,
              "main": true}],
   "collectives": {"instances": 8, "matched": 8}, "problems": [], "notes": [...],
   "warnings": [...]}
"""


@click.command(epilog=_EPILOG)
@click.argument("path", nargs=-1, required=True, type=click.Path())
@ingest_options(dask=True)
@click.option("--step", "steps", type=int, multiple=True,
              help="Only this step (repeatable). Default: every step on every rank.")
@click.option("--export", "export", type=click.Path(dir_okay=False), default=None,
              help="Write the graph as GraphML (nodes and edges with their attributes).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (see below).")
def graph(path: tuple[str, ...], steps: tuple[int, ...], export: str | None,
          as_json: bool) -> None:
    """Build the global dataflow graph of PATH (a run folder, a folder of Kineto traces, or
    trace files): node and edge counts by kind, lanes, inferred edges, structural checks."""
    run = load_run(list(path) if len(path) > 1 else path[0], progress=True,
                   ingest=ingest_from_context("graph"))
    g = build_graph(run, steps=list(steps) or None)
    doc = graph_summary(g)
    doc["problems"] = check_graph(g)
    doc["notes"] = [*run.notes, *doc["notes"]]
    doc["warnings"] = list(run.warnings)
    if export:
        doc["exported"] = str(write_graphml(g, export))
    click.echo(json.dumps(doc) if as_json else format_graph(doc))


def format_graph(doc: dict) -> str:
    """The text ``tracekit graph`` prints."""
    kinds = ", ".join(f"{k} {v}" for k, v in doc["nodes_by_kind"].items())
    edges = ", ".join(f"{k} {v}" for k, v in doc["edges_by_kind"].items())
    lines = [
        f"nodes: {doc['nodes']} ({kinds})",
        f"edges: {doc['edges']} ({edges}); inferred: {doc['inferred_edges']}",
        f"collectives: {doc['collectives']['instances']} instances, "
        f"{doc['collectives']['matched']} matched across ranks",
        "",
        f"{'lane':>4} {'rank':>4} {'kind':>5} {'nodes':>7}  name",
    ]
    for ln in doc["lanes"]:
        main = "  (main)" if ln["main"] else ""
        lines.append(f"{ln['id']:>4} {ln['rank']:>4} {ln['kind']:>5} {ln['nodes']:>7}  "
                     f"{ln['name']}{main}")
    lines.append("")
    if doc["problems"]:
        lines.extend(f"problem: {p}" for p in doc["problems"])
    else:
        lines.append("checks: no cycle, no dangling edge, lanes are chains")
    lines.extend(f"note: {n}" for n in doc["notes"])
    if "exported" in doc:
        lines.append(f"wrote {doc['exported']}")
    return "\n".join(lines)
