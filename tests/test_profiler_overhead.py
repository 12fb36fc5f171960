"""The profiler's own cost, taken out before what-ifs are predicted
(replay/profiler_overhead.py), and the compact table's nested_events column it reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from replay.profiler_overhead import estimate, events_per_node, host_nodes
from tracekit.api import Session
from tracekit.cli import main
from tracekit.core.ingest import IngestOptions
from tracekit.core.reduce import droppable, nested_counts
from tracekit.core.run import load_run
from tracekit.core.schema import events_from_rows
from tracekit.graph.build import build_graph

DATA = Path(__file__).parent / "data"


def test_a_kept_op_counts_the_ops_left_out_inside_it():
    rows = [dict(rank=0, lane_kind="cpu", lane=1, kind="step", name="ProfilerStep#1",
                 ts_ns=0, dur_ns=300, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="aten::linear",
                 ts_ns=0, dur_ns=50, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="aten::t",
                 ts_ns=1, dur_ns=2, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="aten::transpose",
                 ts_ns=4, dur_ns=2, step=1),
            dict(rank=0, lane_kind="cpu", lane=2, kind="cpu_op", name="aten::add_",
                 ts_ns=5, dur_ns=20, step=1),
            dict(rank=0, lane_kind="cpu", lane=1, kind="cpu_op", name="aten::relu",
                 ts_ns=60, dur_ns=10, step=1)]
    ev = events_from_rows(rows)
    drop = droppable(ev)
    names = ev["name"].astype(str).tolist()
    assert {names[i] for i in np.flatnonzero(drop)} == {"aten::t", "aten::transpose"}
    got = dict(zip(names, nested_counts(ev, drop).tolist()))
    # linear holds t and transpose; the op on another thread and relu hold nothing; the
    # step window holds what was left out inside it too; dropped rows count 0
    assert got == {"ProfilerStep#1": 2, "aten::linear": 2, "aten::t": 0,
                   "aten::transpose": 0, "aten::add_": 0, "aten::relu": 0}


@pytest.fixture
def overhead_run(tmp_path) -> Path:
    """A real 2-rank gloo run folder whose manifest says the profiled step took 2 ms more
    than the unprofiled one."""
    run = tmp_path / "run"
    shutil.copytree(DATA / "whatif_ddp_2rank", run)
    doc = json.loads((run / "manifest.json").read_text())
    prof = doc["overhead"]["profiled_step_ms"]
    doc["overhead"].update(unprofiled_step_ms=prof - 2.0, ratio=prof / (prof - 2.0))
    (run / "manifest.json").write_text(json.dumps(doc))
    return run


def test_the_overhead_is_spread_over_every_recorded_host_event(overhead_run):
    run = load_run(overhead_run, ingest=IngestOptions(jobs=1, cache=False, events="graph"))
    graph = build_graph(run)
    got, why = estimate(run, graph)
    assert got is not None and why == ""
    host = host_nodes(graph)
    count = events_per_node(run.events, graph, host)
    assert (count[host] >= 1).all() and (count[~host] == 0).all()
    assert (count[host] > 1).any()  # ops with nested ops stand for more than one event
    # 2 ms a rank and step in all, per recorded event, where no node is cut below 10%
    rank_steps = len({(int(r), int(s)) for r, s in zip(graph.rank[host], graph.step[host])
                      if s >= 0})
    in_steps = host & (graph.step >= 0)
    assert got.per_event_ns * count[in_steps].sum() / rank_steps == pytest.approx(2e6)
    uncut = host & (got.removed_ns < 0.9 * graph.dur_ns - 1)
    assert np.allclose(got.removed_ns[uncut], got.per_event_ns * count[uncut], atol=1)
    assert (got.removed_ns[~host] == 0).all()
    # the compact table's column gives what counting in the full table gives
    full = load_run(overhead_run, ingest=IngestOptions(jobs=1, cache=False, events="all"))
    gfull = build_graph(full)
    assert np.array_equal(events_per_node(full.events.assign(nested_events=0), gfull,
                                          host_nodes(gfull)), count)


def test_speedups_are_against_the_baseline_without_the_profiler(overhead_run):
    s = Session(overhead_run)
    (same,) = s.what_ifs(["compute-scale=1"])
    assert same.speedup == pytest.approx(1.0)
    assert same.baseline_ms < s.baseline.median_step_ms - 0.5  # about 2 ms come out
    assert any("profiler overhead taken out" in n for n in same.shared_notes)


def test_no_overhead_figure_no_change(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(DATA / "whatif_ddp_2rank", run)  # profiled 20.0 ms < unprofiled 22.7
    s = Session(run)
    (same,) = s.what_ifs(["compute-scale=1"])
    assert same.baseline_ms == pytest.approx(s.baseline.median_step_ms)
    assert any("not slower than the unprofiled one" in n for n in same.shared_notes)
    rc = main(["replay", str(run), "--what-if", "compute-scale=1", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["what_if_baseline_ms"] == pytest.approx(doc["baseline"]["step_ms"])


def test_the_cli_says_what_the_speedups_are_against(overhead_run, capsys):
    rc = main(["replay", str(overhead_run), "--what-if", "fusion=4MB", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["what_if_baseline_ms"] < doc["baseline"]["step_ms"] - 0.5
    rc = main(["replay", str(overhead_run), "--what-if", "fusion=4MB"])
    text = capsys.readouterr().out
    assert "against the baseline replayed without the profiler's cost" in text
