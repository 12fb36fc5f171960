"""Chrome / Perfetto trace export (tracekit.views.perfetto), checked by parsing it back
with tracekit's own Kineto parser."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from test_views_timeline import fake_prediction

from tracekit.core.kineto import parse_trace
from tracekit.core.run import load_run
from tracekit.errors import TracekitError
from tracekit.views.perfetto import write_chrome_trace

KEY = ["rank", "lane_kind", "lane", "ts_ns", "name"]


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    out = df.assign(rank=df["rank"].astype(np.int64), lane_kind=df["lane_kind"].astype(str),
                    name=df["name"].astype(str))
    return out.sort_values(KEY + ["dur_ns"]).reset_index(drop=True)


def _roundtrip(timeline: pd.DataFrame, path) -> pd.DataFrame:
    write_chrome_trace(timeline, path)
    back, meta = parse_trace(path)
    back = back.assign(rank=back["pid"])  # pid is the rank
    return back


@pytest.mark.parametrize("fixture", ["gloo_2rank_dir", "a100_trace"])
def test_roundtrip_keeps_every_event_and_time(request, fixture, tmp_path):
    run = load_run(request.getfixturevalue(fixture))
    pred = fake_prediction(run.events, critical_every=11)
    back = _roundtrip(pred, tmp_path / "pred.json")
    assert len(back) == len(pred)
    a, b = _sorted(pred), _sorted(back)
    assert (a["name"] == b["name"]).all()
    assert (a["lane"].to_numpy() == b["lane"].to_numpy()).all()
    assert (a["lane_kind"] == b["lane_kind"]).all()
    assert np.abs(a["ts_ns"].to_numpy() - b["ts_ns"].to_numpy()).max() <= 1000  # within 1 us
    assert np.abs(a["dur_ns"].to_numpy() - b["dur_ns"].to_numpy()).max() <= 1000
    # event kinds survive too (the parser re-derives them from cat and correlation)
    assert (a["kind"].astype(str) == b["kind"].astype(str)).mean() > 0.99


def test_args_metadata_and_critical_flows(tmp_path, gloo_2rank_dir):
    run = load_run(gloo_2rank_dir)
    pred = fake_prediction(run.events, critical_every=5)
    path = write_chrome_trace(pred, tmp_path / "pred.json.gz", name="tracekit dear")
    doc = json.loads(gzip.decompress(path.read_bytes()))
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in xs} == {0, 1}
    by_node = {e["args"]["node"]: e for e in xs}
    assert sorted(by_node) == sorted(pred["node"].tolist())
    crit_nodes = set(pred.loc[pred["critical"], "node"])
    assert {n for n, e in by_node.items() if e["args"]["critical"]} == crit_nodes
    comm = pred[(pred["comm_bytes"] > 0)]
    assert len(comm) and all(by_node[n]["args"]["bytes"] == b
                             for n, b in zip(comm["node"], comm["comm_bytes"]))
    names = {(e["pid"], e["args"]["name"]) for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {(0, "rank 0 (tracekit dear)"), (1, "rank 1 (tracekit dear)")}
    threads = [e for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"]
    assert len(threads) == pred.groupby(["rank", "lane"]).ngroups
    starts = [e for e in doc["traceEvents"] if e["ph"] == "s"]
    ends = [e for e in doc["traceEvents"] if e["ph"] == "f"]
    assert starts and len(starts) == len(ends)
    assert {e["id"] for e in starts} == {e["id"] for e in ends}


def test_real_replay_exports_and_parses_back(tmp_path, gloo_2rank_dir):
    from tracekit.api import Session

    res = Session(load_run(gloo_2rank_dir)).baseline
    back = _roundtrip(res.timeline, tmp_path / "replay.json")
    assert len(back) == len(res.timeline)
    a, b = _sorted(res.timeline), _sorted(back)
    assert np.abs(a["ts_ns"].to_numpy() - b["ts_ns"].to_numpy()).max() <= 1000


def test_empty_timeline_is_refused(tmp_path, gloo_2rank_dir):
    run = load_run(gloo_2rank_dir)
    with pytest.raises(TracekitError, match="nothing to export"):
        write_chrome_trace(run.events.iloc[:0], tmp_path / "x.json")
