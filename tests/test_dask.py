"""Parsing on a dask.distributed cluster (tracekit/core/dask_ingest.py, ``--dask``): the
run, its summary and its replay equal the local ones, number for number. A LocalCluster
with processes=False (threads in this process) keeps the test fast; skipped without
dask.distributed (``pip install -e '.[dev]'`` installs it)."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from tracekit.api import PredictionOptions, Session
from tracekit.cli import cli
from tracekit.cli.replay import replay_json
from tracekit.core.ingest import IngestOptions
from tracekit.core.run import load_run
from tracekit.errors import TracekitError

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_run_equals_the_local_run(client, world128_traces, gloo_2rank_dir):
    for source in (world128_traces, gloo_2rank_dir):
        local = load_run(source, ingest=IngestOptions(jobs=1, cache=False))
        remote = load_run(source, ingest=IngestOptions(dask=client, cache=False))
        pd.testing.assert_frame_equal(local.events, remote.events)
        assert local.traces == remote.traces and local.notes == remote.notes


def test_dask_replay_equals_the_local_replay(client, gloo_2rank_dir):
    docs = []
    for ingest in (IngestOptions(jobs=1, cache=False), IngestOptions(dask=client, cache=False)):
        s = Session(gloo_2rank_dir, PredictionOptions(), ingest=ingest)
        docs.append(replay_json(s.run, s.baseline, s.what_ifs(["fusion=4MB"]),
                                graph_notes=s.graph.notes))
        docs[-1]["summary"] = s.summary().to_json()
    assert docs[0] == docs[1]


def test_cli_dask_address(client, world128_traces):
    address = client.scheduler.address
    runner = CliRunner()
    args = [str(p) for p in world128_traces]
    local = runner.invoke(cli, ["summary", *args, "--json", "--no-cache"])
    remote = runner.invoke(cli, ["summary", *args, "--json", "--no-cache", "--dask", address])
    graph = runner.invoke(cli, ["graph", *args, "--json", "--no-cache", "--dask", address])
    assert local.exit_code == remote.exit_code == graph.exit_code == 0, remote.output
    assert json.loads(local.output) == json.loads(remote.output)
    assert json.loads(graph.output)["nodes"] > 0


def test_a_worker_that_cannot_see_the_file(client, tmp_path, gloo_2rank_traces):
    from tracekit.core import dask_ingest
    from tracekit.core.ingest import _Task, parse_task

    missing = _Task(str(tmp_path / "gone.json"), None, False)
    with pytest.raises(TracekitError, match="same path"):
        list(dask_ingest.map_on_dask(parse_task, [missing], client))


def test_without_dask_installed(monkeypatch, gloo_2rank_dir):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(TracekitError, match=r"tracekit\[dask\]"):
        load_run(gloo_2rank_dir, ingest=IngestOptions(dask="tcp://127.0.0.1:1", cache=False))
