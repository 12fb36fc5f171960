"""Package a replayed schedule as a :class:`~replay.result.ReplayResult`.

:func:`replay` schedules the graph (or takes a schedule already computed) and returns

- ``timeline`` (built when first read): one row per node with the event-table columns (copied from the measured
  event for real nodes, synthesized for nodes a what-if created) and the predicted
  ``ts_ns`` / ``dur_ns`` / ``end_ns``, plus a predicted ``ProfilerStep#N`` row per rank and
  step, so every view draws measured and predicted runs the same way. A collective row
  starts when its rank arrived and ends when the transfer ended (waiting included, like
  the measured event). Extra columns: ``node``, ``critical``, ``measured_ts_ns``.
- ``step_ms`` / ``measured_step_ms``: per step, the slowest rank.
- ``critical_path``: the critical paths of all replayed steps, merged.

Step time, measured: the rank's step window (:func:`tracekit.core.steps.step_windows`,
the host ``ProfilerStep#N`` window without the device tail; a trace without step
annotations is one window per rank, its first event to its last, widened to cover its
graph nodes where a hand-built graph has nodes no event covers). Predicted, the same way:
the window starts where it started relative to the first node of the step on the main
thread (on any lane without a step annotation; same offset), and ends where the next
step's window starts (the measured gap between windows kept); the last replayed step ends
at its last such node's predicted end plus the measured offset.

Example::

    >>> res = replay(run, build_graph(run))              # doctest: +SKIP
    >>> res.measured_step_ms, res.step_ms, round(res.error_pct, 2)   # doctest: +SKIP
    ({2: 28.02, 3: 23.74}, {2: 28.02, 3: 23.74}, 0.0)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from replay.critical_path import critical_paths, merge_paths
from replay.engine import Schedule, schedule_full
from replay.result import ReplayResult
from tracekit.core.collectives import normalize_collective
from tracekit.core.run import Run
from tracekit.core.schema import EVENT_COLUMNS, EventKind
from tracekit.core.steps import step_windows as measured_windows
from tracekit.graph.model import Graph, NodeKind


def replay(run: Run, graph: Graph) -> ReplayResult:
    """Replay ``graph`` (built from ``run``, possibly edited) and package the result."""
    schedule = schedule_full(graph)
    windows = step_windows(run, graph, schedule)
    measured = windows.groupby("step")["measured_ns"].max()
    predicted = windows.groupby("step")["predicted_ns"].max()
    paths = critical_paths(graph, schedule)

    def timeline() -> pd.DataFrame:
        critical = np.zeros(graph.n_nodes, dtype=bool)
        for p in paths.values():
            critical[p.nodes] = True
        return predicted_timeline(run, graph, schedule, critical, windows)

    notes = []
    if not run.complete:
        notes.append(f"incomplete world: {len(run.ranks)} of {run.world_size} ranks replayed; "
                     "step times are those of the ranks present")
    return ReplayResult(
        timeline_factory=timeline,
        step_ms={int(s): float(v) / 1e6 for s, v in predicted.items()},
        measured_step_ms={int(s): float(v) / 1e6 for s, v in measured.items()},
        critical_path=merge_paths([paths[s] for s in sorted(paths)]) if paths else None,
        notes=notes, schedule=schedule, graph=graph,
    )


def step_windows(run: Run, graph: Graph, sched: Schedule) -> pd.DataFrame:
    """Measured and predicted window of every (rank, step) in the graph.

    Columns: rank, step, lane (graph lane of the window), measured_start, measured_end,
    predicted_start, predicted_end, measured_ns, predicted_ns.

    One pass over the nodes, grouped by (rank, step) with a sort (no loop over ranks).
    """
    wins = _measured_windows(run)
    rows = []
    # a (rank, step) window never spans ranks: a chunk of whole ranks at a time, so the
    # scratch arrays stay small however large the world
    for lo, hi in _rank_chunks(np.asarray(graph.rank)):
        part = slice(lo, hi)
        start = np.asarray(graph.start_ns[part], dtype=np.int64)
        mend = start + np.asarray(graph.wait_ns[part]) + np.asarray(graph.dur_ns[part])
        rows += _window_rows(wins, graph, np.asarray(graph.rank[part], dtype=np.int64),
                             np.asarray(graph.step[part], dtype=np.int64),
                             np.asarray(graph.lane[part], dtype=np.int64), start, mend,
                             sched.ready_ns[part], sched.end_ns[part])
    df = pd.DataFrame(rows, columns=["rank", "step", "lane", "measured_start", "measured_end",
                                     "predicted_start", "predicted_end"])
    # a window ends where the next step's window starts (measured gap between them kept)
    df = df.sort_values(["rank", "step"]).reset_index(drop=True)
    nxt = df.groupby("rank")["step"].shift(-1)
    follows = (nxt == df["step"] + 1).to_numpy()
    idx = np.flatnonzero(follows)
    gap = df["measured_start"].to_numpy()[idx + 1] - df["measured_end"].to_numpy()[idx]
    pe = df["predicted_end"].to_numpy().copy()
    pe[idx] = df["predicted_start"].to_numpy()[idx + 1] - gap
    df["predicted_end"] = pe
    df["measured_ns"] = df["measured_end"] - df["measured_start"]
    df["predicted_ns"] = df["predicted_end"] - df["predicted_start"]
    return df


def _measured_windows(run: Run) -> pd.DataFrame:
    """The run's measured step windows, computed once per event table (every replay of a
    run, baseline and what-ifs, asks for the same)."""
    cached = run.__dict__.get("_replay_windows")
    if cached is not None and cached[0] is run.events:
        return cached[1]
    wins = measured_windows(run.events)
    run.__dict__["_replay_windows"] = (run.events, wins)
    return wins


def _first_per_group(group: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """Per group id (sorted ascending in the result), the position with the smallest
    ``order_key``, ties to the smallest position (what ``argmin`` over the group gives)."""
    pos = np.arange(len(group))
    o = np.lexsort((pos, order_key, group))
    first = np.concatenate([[True], group[o][1:] != group[o][:-1]])
    return o[first]


def _rank_chunks(rank: np.ndarray, rows: int = 200_000) -> list[tuple[int, int]]:
    """Node ranges ``(lo, hi)`` of whole ranks, about ``rows`` nodes each (one range when
    the nodes are not sorted by rank; none without nodes)."""
    n = len(rank)
    if n == 0:
        return []
    if n <= rows or not bool((rank[1:] >= rank[:-1]).all()):
        return [(0, n)]
    cuts = np.flatnonzero(rank[1:] != rank[:-1]) + 1
    out, lo = [], 0
    for c in cuts.tolist():
        if c - lo >= rows:
            out.append((lo, c))
            lo = c
    return out + [(lo, n)]


def _window_rows(wins: pd.DataFrame, graph: Graph, rank, step, lane, start, mend,
                 ready_ns: np.ndarray, end_ns: np.ndarray) -> list[tuple]:
    """Rows of :func:`step_windows` before the next-window adjustment, for the nodes given
    (whole ranks; their scheduled ``ready_ns`` and ``end_ns`` beside)."""
    main_lane = {ln.rank: ln.id for ln in graph.lanes if ln.is_main}
    n_steps = int(step.max() - step.min()) + 1
    s0 = int(step.min())
    key = (rank - int(rank.min())) * n_steps + (step - s0)
    ukey, group = np.unique(key, return_inverse=True)
    group = group.ravel()
    g_rank = ukey // n_steps + int(rank.min())
    g_step = ukey % n_steps + s0
    win = {(int(r), int(s)): (int(a), int(b), bool(ann))
           for r, s, a, b, ann in wins.itertuples(index=False)}
    g_win = [win.get((int(r), int(s))) for r, s in zip(g_rank.tolist(), g_step.tolist())]
    g_ann = np.array([w is not None and w[2] for w in g_win], dtype=bool)
    main_of_rank = np.array([main_lane.get(int(r), -1) for r in g_rank], dtype=np.int64)
    on_main = lane == main_of_rank[group]
    has_main = np.bincount(group, weights=on_main, minlength=len(ukey)) > 0
    use = np.where((g_ann & has_main)[group], on_main, True)
    idx = np.flatnonzero(use)
    gu = group[idx]
    a = idx[_first_per_group(gu, start[idx])]
    z = idx[_first_per_group(gu, -mend[idx])]
    ready_min = np.full(len(ukey), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(ready_min, gu, ready_ns[idx])
    end_max = np.full(len(ukey), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(end_max, gu, end_ns[idx])
    rows = []
    for g in range(len(ukey)):
        w_s, w_e = int(start[a[g]]), int(mend[z[g]])  # without events: the nodes
        w = g_win[g]
        if w is not None and w[2]:
            w_s, w_e = w[0], w[1]
        elif w is not None:  # no annotation: the step's events and its nodes
            w_s, w_e = min(w_s, w[0]), max(w_e, w[1])
        # predicted: the window's earliest predicted start and latest predicted end
        # (without ProfilerStep the window spans every lane, and the node that ended
        # last as measured need not end last as predicted)
        p_s = int(ready_min[g]) - (int(start[a[g]]) - w_s)
        p_e = int(end_max[g]) + (w_e - int(mend[z[g]]))
        rows.append((int(g_rank[g]), int(g_step[g]), int(lane[a[g]]), w_s, w_e, p_s, p_e))
    return rows


_EVENT_KIND_OF = {
    NodeKind.COMPUTE: EventKind.CPU_OP, NodeKind.COMM: EventKind.COMM,
    NodeKind.LAUNCH: EventKind.LAUNCH, NodeKind.SYNC: EventKind.RUNTIME,
    NodeKind.HOST: EventKind.CPU_OP, NodeKind.MEMCPY: EventKind.MEMCPY,
}


def predicted_timeline(run: Run, graph: Graph, sched: Schedule, critical: np.ndarray,
                       windows: pd.DataFrame) -> pd.DataFrame:
    """The predicted event table (see module doc)."""
    rows = np.asarray(graph.event_row)
    real = np.flatnonzero(rows >= 0)
    base = run.events.iloc[rows[real]].reset_index(drop=True)
    synth = np.flatnonzero(rows < 0)
    is_comm = np.asarray(graph.kind) == NodeKind.COMM
    ts = np.where(is_comm, sched.ready_ns, sched.start_ns)
    parts = [base]
    order_nodes = [real]
    if len(synth):
        parts.append(_synthetic_rows(run, graph, synth))
        order_nodes.append(synth)
    if len(windows):
        parts.append(_step_rows(run, graph, windows))
        order_nodes.append(np.full(len(windows), -1, dtype=np.int64))
    table = _concat(parts)
    node = np.concatenate(order_nodes).astype(np.int64)
    has = node >= 0
    new_ts = table["ts_ns"].to_numpy().copy()
    new_end = table["end_ns"].to_numpy().copy()
    new_ts[has] = ts[node[has]]
    new_end[has] = sched.end_ns[node[has]]
    meas = np.full(len(table), -1, dtype=np.int64)
    meas[: len(real)] = run.events["ts_ns"].to_numpy()[rows[real]]
    if len(windows):
        meas[len(table) - len(windows):] = windows["measured_start"].to_numpy()
        new_ts[len(table) - len(windows):] = windows["predicted_start"].to_numpy()
        new_end[len(table) - len(windows):] = windows["predicted_end"].to_numpy()
    table["ts_ns"] = new_ts.astype(np.int64)
    table["end_ns"] = new_end.astype(np.int64)
    table["dur_ns"] = (new_end - new_ts).astype(np.int64)
    table["node"] = node
    crit = np.zeros(len(table), dtype=bool)
    crit[has] = critical[node[has]]
    table["critical"] = crit
    table["measured_ts_ns"] = meas
    order = np.lexsort((table["ts_ns"].to_numpy(), table["lane"].to_numpy(),
                        (table["lane_kind"].astype(str) == "gpu").to_numpy(),
                        table["rank"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def _lane_templates(run: Run, graph: Graph) -> dict[int, dict]:
    """Per graph lane: lane_kind, lane, lane_name, pid (from a real node of that lane)."""
    out = {}
    rows = np.asarray(graph.event_row)
    lanes = np.asarray(graph.lane)
    real = np.flatnonzero(rows >= 0)
    _, first = np.unique(lanes[real], return_index=True)
    ev = run.events
    for i in real[first]:
        r = int(rows[i])
        out[int(lanes[i])] = {"lane_kind": str(ev["lane_kind"].iat[r]),
                              "lane": int(ev["lane"].iat[r]),
                              "lane_name": str(ev["lane_name"].iat[r]),
                              "pid": int(ev["pid"].iat[r])}
    for ln in graph.lanes:
        out.setdefault(ln.id, {"lane_kind": "gpu" if ln.kind == "gpu" else "cpu",
                               "lane": ln.local_id, "lane_name": ln.name, "pid": -1})
    return out


def _synthetic_rows(run: Run, graph: Graph, nodes: np.ndarray) -> pd.DataFrame:
    """Event-table rows for nodes a what-if created (no measured event)."""
    tmpl = _lane_templates(run, graph)
    recs = []
    for v in nodes:
        t = tmpl[int(graph.lane[v])]
        k = NodeKind(int(graph.kind[v]))
        ek = _EVENT_KIND_OF[k]
        if k == NodeKind.COMPUTE and t["lane_kind"] == "gpu":
            ek = EventKind.KERNEL
        name = graph.node_name(int(v))
        recs.append({**t, "rank": int(graph.rank[v]), "name": name, "cat": "replay",
                     "kind": ek.value, "step": int(graph.step[v]),
                     "collective": normalize_collective(name) if k == NodeKind.COMM else "",
                     "comm_bytes": int(graph.bytes[v])})
    return _frame(recs)


def _step_rows(run: Run, graph: Graph, windows: pd.DataFrame) -> pd.DataFrame:
    """Predicted ``ProfilerStep#N`` rows, one per (rank, step) window."""
    tmpl = _lane_templates(run, graph)
    recs = [{**tmpl[int(w.lane)], "rank": int(w.rank), "name": f"ProfilerStep#{int(w.step)}",
             "cat": "user_annotation", "kind": EventKind.STEP.value, "step": int(w.step)}
            for w in windows.itertuples(index=False)]
    return _frame(recs)


def _frame(recs: list[dict]) -> pd.DataFrame:
    data = {}
    for col, (dt, _) in EVENT_COLUMNS.items():
        default = "" if dt == "category" else -1
        vals = [r.get(col, default) for r in recs]
        data[col] = pd.Categorical(vals) if dt == "category" else np.asarray(vals, dtype=dt)
    return pd.DataFrame(data)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate event tables keeping categorical columns categorical."""
    if len(parts) == 1:
        return parts[0].copy()
    cats = {}
    for col, (dt, _) in EVENT_COLUMNS.items():
        if dt == "category":
            arrays = [p[col].array if isinstance(p[col].dtype, pd.CategoricalDtype)
                      else pd.Categorical(p[col].astype(str)) for p in parts]
            cats[col] = pd.api.types.union_categoricals(arrays, ignore_order=True).categories
    fixed = []
    for p in parts:
        p = p.copy()
        for col, c in cats.items():
            if isinstance(p[col].dtype, pd.CategoricalDtype):
                p[col] = p[col].cat.set_categories(c)
            else:
                p[col] = pd.Categorical(p[col].astype(object), categories=c)
        fixed.append(p)
    return pd.concat(fixed, ignore_index=True)
