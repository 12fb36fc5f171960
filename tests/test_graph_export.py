"""networkx / GraphML export and structural checks."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from test_replay_engine import make_graph

from replay.checks import check_graph
from tracekit.core.run import load_run
from tracekit.errors import TracekitError
from tracekit.graph.build import build_graph
from tracekit.graph.export import graph_summary, to_networkx, write_graphml
from tracekit.graph.model import EdgeKind, NodeKind

PROBE = [Path(__file__).parent / "data" / "graph" / f"gloo_probe_rank{r}.json.gz"
         for r in (0, 1)]
L = EdgeKind.LANE_ORDER


@pytest.fixture(scope="module")
def graph():
    return build_graph(load_run(PROBE))


def test_to_networkx_keeps_every_node_and_edge(graph):
    G = to_networkx(graph, collective_edges=False)
    assert G.number_of_nodes() == graph.n_nodes
    assert G.number_of_edges() == graph.n_edges
    assert nx.is_directed_acyclic_graph(G)
    v = int(np.flatnonzero(graph.kind == NodeKind.COMM)[0])
    attrs = G.nodes[v]
    assert attrs["kind"] == "comm" and attrs["name"] == "gloo:all_reduce"
    assert attrs["lane"].startswith(f"rank{attrs['rank']} comm pt_gloo_runloop")
    kinds = {d["kind"] for _, _, d in G.edges(data=True)}
    assert kinds == {"LANE_ORDER", "ISSUE", "HOST_WAIT"}


def test_collective_ring_edges(graph):
    G = to_networkx(graph)
    ring = [(a, b) for a, b, d in G.edges(data=True) if d["kind"] == "COLLECTIVE"]
    assert len(ring) == 16  # 8 instances x 2 participants
    assert all(graph.coll_id[a] == graph.coll_id[b] and graph.rank[a] != graph.rank[b]
               for a, b in ring)


def test_graphml_round_trip(graph, tmp_path):
    path = write_graphml(graph, tmp_path / "g.graphml")
    H = nx.read_graphml(path)
    assert H.number_of_nodes() == graph.n_nodes
    assert H.number_of_edges() == graph.n_edges + 16
    with pytest.raises(TracekitError, match="cannot write GraphML"):
        write_graphml(graph, tmp_path / "missing" / "g.graphml")


def test_summary_counts(graph):
    s = graph_summary(graph)
    assert s["nodes"] == graph.n_nodes and s["edges"] == graph.n_edges
    assert sum(s["nodes_by_kind"].values()) == graph.n_nodes
    assert sum(s["edges_by_kind"].values()) == graph.n_edges
    assert s["collectives"] == {"instances": 8, "matched": 8}
    assert sum(ln["nodes"] for ln in s["lanes"]) == graph.n_nodes


def test_checks_find_dangling_edges_and_broken_lanes():
    g = make_graph(lanes=[(0, "cpu"), (0, "gpu")], lane=[0, 0, 1], dur=[1, 1, 1],
                   edges=[(0, 1, L, 0), (1, 2, L, 0)])
    problems = check_graph(g)
    assert any("different lanes" in p for p in problems)
    g = make_graph(lanes=[(0, "cpu")], lane=[0, 0], dur=[1, -4], edges=[(0, 5, L, 0)])
    problems = check_graph(g)
    assert problems == ["dangling edge 0: 0 -> 5 (LANE_ORDER) but nodes are 0..1"]
    with pytest.raises(TracekitError, match="dangling edge 0"):
        check_graph(g, raise_on_error=True)


def test_checks_name_the_nodes_of_a_cycle():
    g = make_graph(lanes=[(0, "cpu"), (0, "gpu")], lane=[0, 0, 0, 1], dur=[1, 1, 1, 1],
                   edges=[(0, 1, L, 0), (1, 2, L, 0), (1, 3, EdgeKind.LAUNCH, 0),
                          (3, 1, EdgeKind.HOST_WAIT, 0)])
    (problem,) = check_graph(g)
    assert "cycle" in problem
    assert "node 1 (n1, rank0 cpu l0)" in problem and "node 3 (n3, rank0 gpu l1)" in problem
    assert "node 0" not in problem and "node 2" not in problem  # not on the cycle
