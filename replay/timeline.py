"""Package a replayed schedule as a :class:`~replay.result.ReplayResult`.

:func:`replay` schedules the graph (or takes a schedule already computed) and returns

- ``timeline``: one row per node with the event-table columns (copied from the measured
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
    critical = np.zeros(graph.n_nodes, dtype=bool)
    for p in paths.values():
        critical[p.nodes] = True
    timeline = predicted_timeline(run, graph, schedule, critical, windows)
    notes = []
    if not run.complete:
        notes.append(f"incomplete world: {len(run.ranks)} of {run.world_size} ranks replayed; "
                     "step times are those of the ranks present")
    return ReplayResult(
        timeline=timeline,
        step_ms={int(s): float(v) / 1e6 for s, v in predicted.items()},
        measured_step_ms={int(s): float(v) / 1e6 for s, v in measured.items()},
        critical_path=merge_paths([paths[s] for s in sorted(paths)]) if paths else None,
        notes=notes,
    )


def step_windows(run: Run, graph: Graph, sched: Schedule) -> pd.DataFrame:
    """Measured and predicted window of every (rank, step) in the graph.

    Columns: rank, step, lane (graph lane of the window), measured_start, measured_end,
    predicted_start, predicted_end, measured_ns, predicted_ns.
    """
    step_win = {(int(r), int(s)): (int(a), int(b), bool(ann))
                for r, s, a, b, ann in measured_windows(run.events).itertuples(index=False)}
    mend = np.asarray(graph.start_ns) + np.asarray(graph.wait_ns) + np.asarray(graph.dur_ns)
    main_lane = {ln.rank: ln.id for ln in graph.lanes if ln.is_main}
    rows = []
    rank_arr = np.asarray(graph.rank)
    step_arr = np.asarray(graph.step)
    lane_arr = np.asarray(graph.lane)
    for r in sorted(set(rank_arr.tolist())):
        of_rank = rank_arr == r
        steps = sorted(set(step_arr[of_rank].tolist()))
        for s in steps:
            nodes = np.flatnonzero(of_rank & (step_arr == s))
            win = step_win.get((r, s))
            on_main = nodes[lane_arr[nodes] == main_lane.get(r, -1)]
            if win is not None and win[2] and len(on_main):
                nodes = on_main
            a = nodes[np.argmin(graph.start_ns[nodes])]
            z = nodes[np.argmax(mend[nodes])]
            w_s, w_e = int(graph.start_ns[a]), int(mend[z])  # without events: the nodes
            if win is not None and win[2]:
                w_s, w_e = win[0], win[1]
            elif win is not None:  # no annotation: the step's events and its nodes
                w_s, w_e = min(w_s, win[0]), max(w_e, win[1])
            # predicted: the window's earliest predicted start and latest predicted end
            # (without ProfilerStep the window spans every lane, and the node that ended
            # last as measured need not end last as predicted)
            p_s = int(sched.ready_ns[nodes].min()) - (int(graph.start_ns[a]) - w_s)
            p_e = int(sched.end_ns[nodes].max()) + (w_e - int(mend[z]))
            rows.append((r, s, int(graph.lane[a]), w_s, w_e, p_s, p_e))
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
