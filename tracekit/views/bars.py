"""Turn one timeline's events into the bars one panel draws (ms on the panel's clock).

Ops shorter than ``threshold_ns`` (about a pixel at the default zoom) that follow each
other on a lane with gaps under the threshold are merged into one "N small ops" bar, so
that a 64-rank, 100k-op step draws a few tens of thousands of bars, not 100k. Ops on the
critical path are never merged. Gaps between bars on lanes that mostly compute become
``idle`` bars.

Before (bar rows of one lane, threshold 10 us)::

    name     ts_ns   dur_ns  bar kind
    k1       0       3000    backward
    k2       3500    2000    backward
    k3       6000    4000    forward
    big      20000   90000   backward

After::

    row start_ms  end_ms   kind      n_ops  name  busy_ms  (+ critical, rank, step, bytes)
    0   0.0000    0.0100   backward  3      k1    0.009
    0   0.0200    0.1100   backward  1      big   0.090

Hover labels are formatted in the browser from these columns (see
:mod:`tracekit.views.timeline`), which keeps a 100k-op page small.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracekit.views.classify import CODE, KIND_LIST
from tracekit.views.styling import HOVER_NAME_CHARS, BarKind

BAR_COLUMNS = ["row", "start_ms", "end_ms", "kind", "n_ops", "critical", "name", "rank",
               "step", "bytes", "busy_ms"]
_COMPUTE_CODES = [CODE[k] for k in (BarKind.FORWARD, BarKind.BACKWARD, BarKind.OPTIMIZER,
                                    BarKind.OTHER, BarKind.MEMCPY)]


def fmt_duration_ns(ns: float) -> str:
    """1234567 -> '1.23 ms'; 4500 -> '4.5 us'; 800 -> '800 ns'."""
    if ns >= 1e9:
        return f"{ns / 1e9:.3g} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} us"
    return f"{ns:.0f} ns"


def _frame(row, start_ms, end_ms, kind, n_ops, critical, name, rank, step, nbytes,
           busy_ms) -> pd.DataFrame:
    return pd.DataFrame({
        "row": np.asarray(row, np.int32), "start_ms": np.asarray(start_ms, np.float64),
        "end_ms": np.asarray(end_ms, np.float64), "kind": np.asarray(kind, np.int8),
        "n_ops": np.asarray(n_ops, np.int32), "critical": np.asarray(critical, bool),
        "name": np.asarray(name, object), "rank": np.asarray(rank, np.int32),
        "step": np.asarray(step, np.int32), "bytes": np.asarray(nbytes, np.int64),
        "busy_ms": np.asarray(busy_ms, np.float64),
    })


def empty_bars() -> pd.DataFrame:
    """A bar table with no rows."""
    z = np.zeros(0)
    return _frame(z, z, z, z, z, z, z, z, z, z, z)


def build_bars(
    events: pd.DataFrame,
    *,
    row: np.ndarray,
    codes: np.ndarray,
    origin_ns: int,
    threshold_ns: int,
) -> tuple[pd.DataFrame, int]:
    """Bars of one panel (columns :data:`BAR_COLUMNS`), and how many ops were merged into
    aggregated bars.

    Args:
        events: the bar rows of one timeline (see :func:`tracekit.views.lanes.bar_mask`).
        row: row index of every event (-1: not shown).
        codes: BarKind code of every event (see :func:`tracekit.views.classify.classify`).
        origin_ns: the panel's time zero (its first step's start).
        threshold_ns: ops shorter than this may be aggregated.
    """
    keep = row >= 0
    if not keep.any():
        return empty_bars(), 0
    ev = events[keep]
    r = row[keep].astype(np.int32)
    k = codes[keep].astype(np.int8)
    ts = ev["ts_ns"].to_numpy()
    end = ev["end_ns"].to_numpy()
    crit = (ev["critical"].to_numpy().astype(bool) if "critical" in ev.columns
            else np.zeros(len(ev), dtype=bool))
    order = np.lexsort((ts, r))
    ev, r, k, ts, end, crit = ev.iloc[order], r[order], k[order], ts[order], end[order], crit[order]
    dur = end - ts
    names = ev["name"].astype(str).to_numpy()
    ranks = ev["rank"].to_numpy()
    steps = ev["step"].to_numpy()
    nbytes = ev["comm_bytes"].to_numpy() if "comm_bytes" in ev.columns else np.full(len(ev), -1)

    small = (dur < threshold_ns) & ~crit
    joins = np.zeros(len(ts), dtype=bool)
    if len(ts) > 1:
        gap = ts[1:] - end[:-1]
        joins[1:] = small[1:] & small[:-1] & (r[1:] == r[:-1]) & (gap < threshold_ns)
    cluster = np.cumsum(~joins) - 1
    first = np.flatnonzero(~joins)
    size = np.diff(np.append(first, len(ts)))
    single = size[cluster] == 1

    parts = [_frame(r[single], (ts[single] - origin_ns) / 1e6, (end[single] - origin_ns) / 1e6,
                    k[single], np.ones(int(single.sum())), crit[single], names[single],
                    ranks[single], steps[single], nbytes[single], dur[single] / 1e6)]
    multi = size > 1
    n_merged = int(size[multi].sum())
    if multi.any():
        f = first[multi]
        start = np.minimum.reduceat(ts, first)[multi]
        stop = np.maximum.reduceat(end, first)[multi]
        busy = np.add.reduceat(dur, first)[multi]
        by_kind = np.zeros((len(first), len(KIND_LIST)), dtype=np.int64)
        np.add.at(by_kind, (cluster, k), dur + 1)
        kind = by_kind.argmax(axis=1)[multi]
        parts.append(_frame(r[f], (start - origin_ns) / 1e6, (stop - origin_ns) / 1e6, kind,
                            size[multi], np.zeros(len(f), bool), names[f], ranks[f], steps[f],
                            np.full(len(f), -1), busy / 1e6))
    return pd.concat(parts, ignore_index=True), n_merged


def idle_bars(bars: pd.DataFrame, *, window_ms: tuple[float, float],
              min_gap_ms: float) -> pd.DataFrame:
    """Gaps of at least ``min_gap_ms`` between bars (and to the window's edges) on rows
    whose busy time is mostly compute (not comm, launches or syncs)."""
    if not len(bars):
        return empty_bars()
    b = bars.sort_values(["row", "start_ms"])
    busy = (b["end_ms"] - b["start_ms"]).to_numpy()
    is_compute = np.isin(b["kind"].to_numpy(), _COMPUTE_CODES)
    per_row = pd.DataFrame({"row": b["row"].to_numpy(), "busy": busy,
                            "compute": np.where(is_compute, busy, 0.0)}).groupby("row").sum()
    compute_rows = per_row.index[per_row["compute"] >= 0.5 * per_row["busy"]].to_numpy()
    lo, hi = window_ms
    out = []
    for rw, g in b[b["row"].isin(compute_rows)].groupby("row"):
        starts = g["start_ms"].to_numpy()
        reach = np.maximum.accumulate(g["end_ms"].to_numpy())
        gap_s = np.concatenate([[lo], reach])
        gap_e = np.concatenate([starts, [hi]])
        ok = (gap_e - gap_s) >= min_gap_ms
        if ok.any():
            n = int(ok.sum())
            out.append(_frame(np.full(n, rw), gap_s[ok], gap_e[ok], np.full(n, CODE[BarKind.IDLE]),
                              np.zeros(n), np.zeros(n, bool), np.full(n, "idle", object),
                              np.full(n, g["rank"].iloc[0]), np.full(n, -1), np.full(n, -1),
                              gap_e[ok] - gap_s[ok]))
    return pd.concat(out, ignore_index=True) if out else empty_bars()


def clip_name(name: str) -> str:
    """An op name safe and short enough for a hover label."""
    name = name.replace("<", "&lt;").replace(">", "&gt;")
    return name if len(name) <= HOVER_NAME_CHARS else name[: HOVER_NAME_CHARS - 1] + "…"
