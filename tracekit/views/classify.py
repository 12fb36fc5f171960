"""Decide the :class:`~tracekit.views.styling.BarKind` (the color) of every event.

The event kind says most of it (comm, launch, sync, memcpy); compute is split into
forward / backward / optimizer from, in order of precedence:

1. the op's own name: ``autograd::engine::evaluate_function: ...``, ``*Backward*``,
   ``tracekit.bwd:`` -> backward; ``Optimizer.*``, ``tracekit.opt:`` -> optimizer;
   ``tracekit.fwd:`` -> forward;
2. the outermost op enclosing it on the same lane (a ``aten::mm`` inside
   ``AddmmBackward0`` is backward);
3. for GPU work, the phase of the host call that launched it (by ``correlation``);
4. the innermost phase annotation of its rank and lane kind whose window contains its
   start (``DistributedDataParallel.forward``, ``## backward ##``, ``Optimizer.step#SGD.step``,
   ``tracekit.fwd:layer1`` ...).

Anything else is ``other compute / host``.

Before / after (the gloo probe run, rank 0)::

    name                                                 kind        ->  bar kind
    aten::linear          (inside DistributedDataParallel.forward)   ->  forward
    autograd::engine::evaluate_function: AddmmBackward0  cpu_op      ->  backward
    aten::add_            (inside Optimizer.step#SGD.step)           ->  optimizer
    gloo:all_reduce                                      comm        ->  communication
    aten::randn           (outside every phase)                      ->  other compute / host
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracekit.core.schema import EventKind
from tracekit.views.styling import BarKind

#: BarKind -> int8 code used in arrays (index into this list)
KIND_LIST: list[BarKind] = list(BarKind)
CODE: dict[BarKind, int] = {k: i for i, k in enumerate(KIND_LIST)}
_NO_PHASE = -1

_FIXED_BY_EVENT_KIND = {
    EventKind.COMM.value: BarKind.COMM,
    EventKind.LAUNCH.value: BarKind.LAUNCH,
    EventKind.RUNTIME.value: BarKind.LAUNCH,
    EventKind.SYNC.value: BarKind.SYNC,
    EventKind.MEMCPY.value: BarKind.MEMCPY,
    EventKind.MEMSET.value: BarKind.MEMCPY,
}
_NOT_DRAWN = (EventKind.STEP.value, EventKind.ANNOTATION.value)
_COMM_HOST_PREFIXES = ("c10d::", "nccl:", "gloo:", "record_param_comms")
_OPTIMIZER_OP_MARKERS = ("_foreach_", "_fused_adam", "_fused_sgd", "fused_adamw")


def op_phase(name: str) -> int:
    """Phase an op's own name implies (a BarKind code), or -1 when the name says nothing."""
    if name.startswith("tracekit.bwd:") or name.startswith("autograd::") or "Backward" in name:
        return CODE[BarKind.BACKWARD]
    if name.startswith("tracekit.opt:") or name.startswith("Optimizer."):
        return CODE[BarKind.OPTIMIZER]
    if name.startswith("tracekit.fwd:"):
        return CODE[BarKind.FORWARD]
    return _NO_PHASE


def annotation_phase(name: str) -> int:
    """Phase an annotation window implies (a BarKind code), or -1.

    ``DistributedDataParallel.forward``, ``## forward ##``, ``tracekit.fwd:x`` -> forward;
    ``## backward ##``, ``tracekit.bwd:x`` -> backward; ``Optimizer.step#SGD.step``,
    ``Optimizer.zero_grad#..``, ``## optimizer ##`` -> optimizer.
    """
    own = op_phase(name)
    if own != _NO_PHASE:
        return own
    low = name.lower()
    if "backward" in low:
        return CODE[BarKind.BACKWARD]
    if "optimizer" in low:
        return CODE[BarKind.OPTIMIZER]
    if "forward" in low:
        return CODE[BarKind.FORWARD]
    return _NO_PHASE


def _per_name(names: pd.Series, fn) -> np.ndarray:
    """Apply ``fn`` once per distinct name, return int8 codes per row."""
    cat = names if isinstance(names.dtype, pd.CategoricalDtype) else names.astype("category")
    table = np.array([fn(str(c)) for c in cat.cat.categories] + [_NO_PHASE], dtype=np.int8)
    codes = cat.cat.codes.to_numpy()
    return table[np.where(codes < 0, len(table) - 1, codes)]


def _group_keys(events: pd.DataFrame) -> np.ndarray:
    """A dense int id per (rank, lane_kind, lane)."""
    lk = events["lane_kind"].astype(str).to_numpy()
    keys = pd.MultiIndex.from_arrays([events["rank"].to_numpy(), lk, events["lane"].to_numpy()])
    return pd.factorize(keys)[0]


def _enclosing_phase(events: pd.DataFrame, own: np.ndarray, drawable: np.ndarray) -> np.ndarray:
    """Phase of the outermost drawable op enclosing each row on its lane (-1 if none)."""
    out = np.full(len(events), _NO_PHASE, dtype=np.int8)
    idx = np.flatnonzero(drawable)
    if not len(idx):
        return out
    ts = events["ts_ns"].to_numpy()[idx]
    end = events["end_ns"].to_numpy()[idx]
    gid = _group_keys(events)[idx]
    order = np.lexsort((-(end - ts), ts, gid))
    idx, ts, end, gid = idx[order], ts[order], end[order], gid[order]
    top = outermost_mask_sorted(ts, end, gid)
    # for every row, the latest outermost op of its lane starting at or before it
    last_top = np.maximum.accumulate(np.where(top, np.arange(len(idx)), -1))
    ok = last_top >= 0
    holder = np.where(ok, last_top, 0)
    inside = ok & (gid[holder] == gid) & (ts < end[holder]) & (np.arange(len(idx)) != holder)
    out[idx[inside]] = own[idx[holder[inside]]]
    return out


def outermost_mask_sorted(ts: np.ndarray, end: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """True for rows not nested inside an earlier row of the same group.

    Rows must be sorted by ``(gid, ts, -duration)`` so that a parent precedes the
    children that start with it.
    """
    n = len(ts)
    if n == 0:
        return np.zeros(0, dtype=bool)
    reach = pd.Series(end).groupby(gid).cummax().to_numpy()
    prev_reach = np.empty(n, dtype=np.int64)
    prev_reach[0] = np.iinfo(np.int64).min
    prev_reach[1:] = reach[:-1]
    first = np.ones(n, dtype=bool)
    first[1:] = gid[1:] != gid[:-1]
    return first | (ts >= prev_reach)


def _launch_phase(events: pd.DataFrame, phase: np.ndarray) -> np.ndarray:
    """For each GPU row, the phase of the host row with the same (rank, correlation)."""
    out = np.full(len(events), _NO_PHASE, dtype=np.int8)
    corr = events["correlation"].to_numpy()
    is_gpu = (events["lane_kind"].astype(str) == "gpu").to_numpy()
    host = (~is_gpu) & (corr >= 0) & (phase != _NO_PHASE)
    dev = np.flatnonzero(is_gpu & (corr >= 0))
    if not host.any() or not len(dev):
        return out
    rank = events["rank"].to_numpy().astype(np.int64)
    key_host = pd.MultiIndex.from_arrays([rank[host], corr[host]])
    lookup = pd.Series(phase[host], index=key_host)
    lookup = lookup[~lookup.index.duplicated()]
    key_dev = pd.MultiIndex.from_arrays([rank[dev], corr[dev]])
    got = lookup.reindex(key_dev).to_numpy()
    hit = ~np.isnan(got)
    out[dev[hit]] = got[hit].astype(np.int8)
    return out


def _window_phase(events: pd.DataFrame) -> np.ndarray:
    """Innermost phase annotation window (same rank and lane kind) containing each start."""
    out = np.full(len(events), _NO_PHASE, dtype=np.int8)
    kind = events["kind"].astype(str).to_numpy()
    ann_phase = _per_name(events["name"], annotation_phase)
    is_window = (kind == EventKind.ANNOTATION.value) & (ann_phase != _NO_PHASE)
    if not is_window.any():
        return out
    rank = events["rank"].to_numpy()
    lk = events["lane_kind"].astype(str).to_numpy()
    ts = events["ts_ns"].to_numpy()
    end = events["end_ns"].to_numpy()
    win = pd.DataFrame({"rank": rank[is_window], "lk": lk[is_window], "ts": ts[is_window],
                        "end": end[is_window], "phase": ann_phase[is_window]})
    row_groups = pd.Series(np.arange(len(events))).groupby([rank, lk]).indices
    for (r, k), w in win.groupby(["rank", "lk"]):
        rows = row_groups.get((r, k))
        if rows is None:
            continue
        t = ts[rows]
        # widest first, so inner (narrower) windows overwrite outer ones
        w = w.assign(width=w["end"] - w["ts"]).sort_values("width", ascending=False)
        for ws, we, ph in w[["ts", "end", "phase"]].itertuples(index=False):
            out[rows[(t >= ws) & (t < we)]] = ph
    return out


def classify(events: pd.DataFrame) -> np.ndarray:
    """BarKind code (index into :data:`KIND_LIST`) for every row of an event table.

    Steps and annotations get ``OTHER`` (they are not drawn as bars).
    """
    n = len(events)
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    kind = events["kind"].astype(str).to_numpy()
    drawable = ~np.isin(kind, _NOT_DRAWN)
    own = _per_name(events["name"], op_phase)
    phase = own.copy()
    enclosing = _enclosing_phase(events, own, drawable)
    take = phase == _NO_PHASE
    phase[take] = enclosing[take]
    window = _window_phase(events)
    host_phase = phase.copy()
    take = host_phase == _NO_PHASE
    host_phase[take] = window[take]
    launched = _launch_phase(events, host_phase)
    take = phase == _NO_PHASE
    phase[take] = launched[take]
    take = phase == _NO_PHASE
    phase[take] = window[take]
    opt_ops = _per_name(events["name"], lambda s: CODE[BarKind.OPTIMIZER]
                        if any(m in s for m in _OPTIMIZER_OP_MARKERS) else _NO_PHASE)
    take = phase == _NO_PHASE
    phase[take] = opt_ops[take]

    out = np.where(phase == _NO_PHASE, CODE[BarKind.OTHER], phase).astype(np.int8)
    comm_host = _per_name(events["name"], lambda s: CODE[BarKind.COMM]
                          if s.startswith(_COMM_HOST_PREFIXES) else _NO_PHASE)
    out[comm_host != _NO_PHASE] = CODE[BarKind.COMM]
    sync_names = _per_name(events["name"], lambda s: CODE[BarKind.SYNC]
                           if "Synchronize" in s else _NO_PHASE)
    for ek, bk in _FIXED_BY_EVENT_KIND.items():
        out[kind == ek] = CODE[bk]
    out[(kind == EventKind.RUNTIME.value) & (sync_names != _NO_PHASE)] = CODE[BarKind.SYNC]
    out[~drawable] = CODE[BarKind.OTHER]
    return out


def classify_like(timeline: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """Classify a predicted ``timeline`` the way its measured ``reference`` was classified.

    A predicted row inherits the bar kind of the measured event with the same rank, lane,
    name and start (``measured_ts_ns``): replayed nodes keep their phase even when the
    replay dropped the annotations that told it. Rows without a match (what-if nodes)
    are classified on their own with :func:`classify`.
    """
    own = classify(timeline)
    if "measured_ts_ns" not in timeline.columns or not len(timeline) or not len(reference):
        return own
    ref_codes = classify(reference)
    ref = pd.DataFrame({
        "rank": reference["rank"].to_numpy().astype(np.int64),
        "lane": reference["lane"].to_numpy(),
        "name": reference["name"].astype(str).to_numpy(),
        "ts": reference["ts_ns"].to_numpy(),
        "code": ref_codes,
    }).drop_duplicates(["rank", "lane", "name", "ts"])
    probe = pd.DataFrame({
        "rank": timeline["rank"].to_numpy().astype(np.int64),
        "lane": timeline["lane"].to_numpy(),
        "name": timeline["name"].astype(str).to_numpy(),
        "ts": timeline["measured_ts_ns"].to_numpy(),
    })
    got = probe.merge(ref, how="left", on=["rank", "lane", "name", "ts"])["code"].to_numpy()
    hit = ~np.isnan(got)
    out = own.copy()
    out[hit] = got[hit].astype(np.int8)
    return out
