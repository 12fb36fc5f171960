"""The graph for people who want to explore it: networkx and GraphML.

Before: a :class:`Graph` (numpy arrays). After: a ``networkx.MultiDiGraph`` whose nodes are
the graph's node ids with readable attributes, and whose edges carry their kind::

    G.nodes[41] == {'name': 'aten::linear', 'rank': 0, 'lane': 'rank0 cpu python3 2394',
                    'kind': 'compute', 'step': 2, 'start_ns': ..., 'dur_ns': 343400,
                    'wait_ns': 0, 'bytes': -1, 'coll_id': -1}
    G.edges[41, 42, 0] == {'kind': 'LANE_ORDER', 'delay_ns': 8100, 'inferred': False}

Participants of one collective instance are joined by ``COLLECTIVE`` edges (a ring from
each participant to the next, ``virtual=True``): they are not "cannot start before"
edges, so the exported graph is no longer acyclic when collectives span ranks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracekit.core.atomic import atomic_output
from tracekit.graph.model import EdgeKind, Graph, NodeKind


def to_networkx(graph: Graph, *, collective_edges: bool = True):
    """A ``networkx.MultiDiGraph`` copy of ``graph`` (see module doc)."""
    import networkx as nx

    G = nx.MultiDiGraph()
    labels = [ln.label for ln in graph.lanes]
    kinds = {k.value: k.name.lower() for k in NodeKind}
    G.add_nodes_from(
        (int(v), {
            "name": graph.names[int(graph.name[v])],
            "rank": int(graph.rank[v]),
            "lane": labels[int(graph.lane[v])],
            "kind": kinds[int(graph.kind[v])],
            "step": int(graph.step[v]),
            "start_ns": int(graph.start_ns[v]),
            "dur_ns": int(graph.dur_ns[v]),
            "wait_ns": int(graph.wait_ns[v]),
            "bytes": int(graph.bytes[v]),
            "coll_id": int(graph.coll_id[v]),
        })
        for v in range(graph.n_nodes)
    )
    ek = {k.value: k.name for k in EdgeKind}
    G.add_edges_from(
        (int(s), int(d), {"kind": ek[int(k)], "delay_ns": int(dl), "inferred": bool(i),
                          "virtual": False})
        for s, d, k, dl, i in zip(graph.src, graph.dst, graph.edge_kind, graph.delay_ns,
                                  graph.inferred)
    )
    if collective_edges:
        members = np.flatnonzero(graph.coll_id >= 0)
        order = members[np.argsort(graph.coll_id[members], kind="stable")]
        cid = graph.coll_id[order]
        for c in np.unique(cid):
            ring = order[cid == c]
            if len(ring) < 2:
                continue
            for a, b in zip(ring, np.roll(ring, -1)):
                G.add_edge(int(a), int(b), kind=EdgeKind.COLLECTIVE.name, delay_ns=0,
                           inferred=False, virtual=True)
    G.graph["notes"] = " | ".join(graph.notes)
    return G


def write_graphml(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` as GraphML (via :func:`to_networkx`); returns the path written."""
    import networkx as nx

    path = Path(path)
    G = to_networkx(graph)
    with atomic_output(path, what="GraphML",
                       fix="check the folder exists and is writable") as fh:
        nx.write_graphml(G, fh)
    return path


def graph_summary(graph: Graph) -> dict:
    """Counts for people and for ``tracekit graph --json``: nodes and edges by kind, lanes
    (with their node counts), inferred edges, collectives, the graph's notes."""
    node_kinds = {k.name.lower(): int(c) for k, c in
                  ((NodeKind(i), c) for i, c in enumerate(np.bincount(graph.kind, minlength=6)))
                  if c}
    edge_kinds = {EdgeKind(i).name: int(c) for i, c in
                  enumerate(np.bincount(graph.edge_kind, minlength=len(EdgeKind))) if c}
    per_lane = np.bincount(graph.lane, minlength=len(graph.lanes))
    coll = graph.coll_id[graph.coll_id >= 0]
    _, sizes = np.unique(coll, return_counts=True)
    return {
        "nodes": graph.n_nodes,
        "edges": graph.n_edges,
        "nodes_by_kind": node_kinds,
        "edges_by_kind": edge_kinds,
        "inferred_edges": int(np.sum(graph.inferred)),
        "lanes": [{"id": ln.id, "rank": ln.rank, "kind": ln.kind, "name": ln.name,
                   "nodes": int(per_lane[ln.id]), "main": ln.is_main} for ln in graph.lanes],
        "collectives": {"instances": int(len(sizes)), "matched": int(np.sum(sizes > 1))},
        "notes": list(graph.notes),
    }
