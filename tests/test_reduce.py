"""The compact per-rank table (tracekit/core/reduce.py): summary, replay (baseline and
what-ifs) and graph print the same numbers from it as from every event, on every recorded
run and real trace in the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracekit.analysis.breakdown import summarize
from tracekit.analysis.collectives import collective_table
from tracekit.api import PredictionOptions, Session
from tracekit.cli.replay import replay_json
from tracekit.core.ingest import IngestOptions
from tracekit.core.reduce import droppable, reduce_events
from tracekit.core.run import load_run
from tracekit.core.schema import check_schema, events_from_rows
from tracekit.errors import TracekitError
from tracekit.graph.build import build_graph
from tracekit.graph.export import graph_summary

DATA = Path(__file__).parent / "data"
CORPUS = sorted((DATA / "corpus").glob("*/*.json.gz"))
RUNS = {
    "gloo_2rank": (DATA / "gloo_2rank", ["fusion=4MB", "overlap=off"]),
    "whatif_ddp_2rank": (DATA / "whatif_ddp_2rank", ["fusion=4MB", "dear", "compute-scale=0.5"]),
    "graph_probe": ([DATA / "graph" / f"gloo_probe_rank{r}.json.gz" for r in (0, 1)], []),
    "a100": (DATA / "a100_world2_rank0_nccl_args.json.gz", ["bandwidth=2x"]),
    "world128": ([DATA / f"world128_rank{r}_sendrecv.json.gz" for r in (0, 1)], []),
    "alexnet": (DATA / "single_gpu_alexnet.json.gz", []),
    "gloo300": (DATA / "cpu_only_gloo_world300_rank34.json.gz", []),
    "v100": (DATA / "v100_world2_rank1_step2.json.gz", ["compute-scale=0.5"]),
    **{f"corpus/{p.parent.name}/{p.name}": (p, []) for p in CORPUS},
}


def _documents(source, what_ifs, events: str) -> dict:
    ingest = IngestOptions(jobs=1, cache=False, events=events)
    try:
        run = load_run(source, ingest=ingest)
    except TracekitError as exc:  # a format that is not Kineto: refused either way
        return {"error": str(exc)}, None
    doc = {"summary": summarize(run).to_json(), "collectives": collective_table(run)}
    try:
        s = Session(run, PredictionOptions())
        doc["replay"] = replay_json(run, s.baseline, s.what_ifs(what_ifs),
                                    graph_notes=s.graph.notes)
        doc["graph"] = graph_summary(build_graph(run, delays="measured"))
    except TracekitError as exc:  # the same refusal either way
        doc["error"] = str(exc)
    return json.loads(json.dumps(doc, default=str)), run


@pytest.mark.parametrize("name", sorted(RUNS))
def test_compact_table_prints_the_same_numbers(name, recording_machine_cores):
    source, what_ifs = RUNS[name]
    full, run_all = _documents(source, what_ifs, "all")
    compact, run_graph = _documents(source, what_ifs, "graph")
    assert compact == full
    if run_all is not None:
        check_schema(run_graph.events)
        assert len(run_graph.events) <= len(run_all.events)


def test_gpu_traces_lose_their_nested_host_ops(a100_trace):
    full = load_run(a100_trace, ingest=IngestOptions(cache=False, jobs=1))
    compact = load_run(a100_trace, ingest=IngestOptions(cache=False, jobs=1, events="graph"))
    assert len(compact.events) < 0.9 * len(full.events)
    assert compact.traces == full.traces


def test_the_rule_on_a_small_thread():
    rows = [dict(rank=0, lane_kind="cpu", lane=1, kind="step", name="ProfilerStep#1",
                 ts_ns=0, dur_ns=100, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="aten::linear",
                 ts_ns=0, dur_ns=50, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="aten::t",
                 ts_ns=1, dur_ns=2, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="aten::addmm",
                 ts_ns=60, dur_ns=30, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="launch", name="cudaLaunchKernel",
                 ts_ns=70, dur_ns=5, step=1, correlation=9),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="aten::empty",
                 ts_ns=62, dur_ns=2, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="c10d::wait",
                 ts_ns=10, dur_ns=5, step=1)]
    ev = events_from_rows(sorted(rows, key=lambda r: r["ts_ns"]))
    names = ev["name"].astype(str).tolist()
    dropped = {names[i] for i in droppable(ev).nonzero()[0]}
    # aten::t is inside aten::linear; aten::empty is inside aten::addmm, which launches
    # (holds an anchor) so it covers nothing; the wait op is an anchor (and splits linear)
    assert dropped == set()
    rows[6]["ts_ns"] = 200  # move the wait out of aten::linear: linear covers aten::t
    rows[0]["dur_ns"] = 300
    ev = events_from_rows(sorted(rows, key=lambda r: r["ts_ns"]))
    names = ev["name"].astype(str).tolist()
    assert {names[i] for i in droppable(ev).nonzero()[0]} == {"aten::t"}
    assert len(reduce_events(ev)) == len(ev) - 1
    no_steps = ev[ev["kind"].astype(str) != "step"].reset_index(drop=True)
    assert not droppable(no_steps).any()
