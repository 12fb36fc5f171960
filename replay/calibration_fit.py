"""Fitting ``tracekit calibrate``'s raw measurements: the worker's every call on every
rank (:mod:`collectors.calibrate_worker`) -> the ``collectives`` section of ``comm.json``
(per collective and size the measured points, and one line per size range through them),
which :class:`replay.calibration.CalibratedCostModel` reads."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from replay.cost_model import _line_fit, _quality, comm_volume


def _isotonic(values: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the closest non-decreasing sequence (least squares)."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([[s / c] * int(c) for s, c in blocks])


def _segments(points: pd.DataFrame, group_size: int, coll: str) -> list[dict[str, Any]]:
    """One line per pair of neighbouring measured sizes through the points' ``fit_ns``
    (the medians made non-decreasing in size, since a larger buffer never costs less:
    a dip is noise): exact there, linear in between. Outside the measured range the end
    segments extend."""
    pts = points.sort_values("bytes").reset_index(drop=True)
    pairs = [(i, i + 1) for i in range(len(pts) - 1)] or [(0, 0)]
    out = []
    for s, e in pairs:
        seg = pts.iloc[s : e + 1]
        fit = _line(coll, seg["bytes"].to_numpy(), seg["fit_ns"].to_numpy(dtype=float),
                    group_size)
        out.append({"min_bytes": int(seg["bytes"].min()), "max_bytes": int(seg["bytes"].max()),
                    **fit, "n_points": len(seg)})
    return out


def _line(coll: str, nbytes: np.ndarray, t: np.ndarray, group_size: int) -> dict[str, Any]:
    vols = [comm_volume(coll, b, group_size) for b in nbytes]
    steps = np.array([v.steps for v in vols])
    moved = np.array([v.moved_bytes for v in vols])
    if len(set(moved)) >= 2:
        alpha, inv_beta = _line_fit(steps, moved, t)
    else:
        alpha, inv_beta = float(t.mean() / max(steps[0], 1.0)), 0.0
    r2, med_rel, _ = _quality(steps * alpha + moved * inv_beta, t)
    return {"alpha_ns": alpha, "beta_bytes_per_s": (1e9 / inv_beta) if inv_beta > 0 else None,
            "r2": None if math.isnan(r2) else r2, "median_rel_residual": med_rel}


def _last_rank(per_rank: np.ndarray, issue: np.ndarray, end: list,
               transfer_ns: float) -> dict[str, float]:
    """When the last rank had a call's result, counted from the last rank's issue (the
    transfer cannot start before): ``last_ns`` (median over calls) and ``last_ratio``
    against the shortest rank's transfer ``transfer_ns``. On a link the ranks share, one
    rank's all-gather completes before the other's: 4 Gbit/s, 5 MB, 2 ranks, 20 calls
    back to back, the first rank done after 7.6 ms, the other 3.0 ms later, where the
    link moves the 5 MB in 10.5 ms. A caller that blocks on a call (FSDP2 on CPU) waits
    for the last rank at its next collective, so a chain of them costs ``last_ns`` each.

    Before/after (ns; ranks x calls; a call issued at ``end - per_rank + issue``)::

        per_rank [[9000, 9000], [8000, 8500]]  issue [[0, 0], [0, 0]]
        end      [[20000, 40000], [21000, 41500]]      transfer_ns 8000
        -> issued [[11000, 31000], [13000, 33000]]; last [8000, 8500]
        -> {"last_ns": 8250.0, "last_ratio": 1.03125}
    """
    end_ns = np.asarray(end, dtype=float)
    issued = end_ns - per_rank + issue
    last = end_ns.max(axis=0) - issued.max(axis=0)
    last_ns = float(np.median(last))
    return {"last_ns": last_ns,
            "last_ratio": max(last_ns / transfer_ns, 1.0) if transfer_ns > 0 else 1.0}


def fit_measurements(raw: dict[str, Any]) -> dict[str, Any]:
    """The worker's raw document -> the ``collectives`` section of ``comm.json``.

    Per call, the transfer time is the shortest rank's duration (the rank that left the
    barrier last waited for no one) after its issue time; per size, the median over calls
    (``median_ns``), then made non-decreasing in size (``fit_ns``, what the segments pass
    through). When the worker recorded issue times (how long the calling thread took to
    issue the call: host work before the transfer, a gloo reduce-scatter's clone of its
    input), ``issue_ns`` is their median over calls of the ranks' mean.
    When the worker recorded CPU times, ``cpu_ns`` is the median over calls of the ranks'
    mean process CPU time and ``cpu_share`` = ``cpu_ns / median_ns``: the share of a core
    the transfer keeps busy while it runs alone (at most the recorded ``cpu_cores``). When
    it timed calls two at a time,
    ``pair_ns`` is their median and ``pair_ratio`` = ``pair_ns / median_ns`` (1: side by
    side cost nothing, 2: they took turns). When every rank ran on one host and the
    worker recorded when each call was done (``per_rank_end_ns``, one clock), ``last_ns``
    is the median over calls of the time from the last rank's issue until the last rank
    had the result, and ``last_ratio`` = ``last_ns / median_ns`` (:func:`_last_rank`).
    When it timed calls back to back (``per_rank_chain_ns``), ``chain_ns`` is their mean
    period over calls and ranks, and ``chain_ratio`` = ``chain_ns / median_ns``: what one
    call costs a caller that blocks on each, against the transfer alone. The mean, not
    the median: a chain pays every call's tail (4 Gbit/s, 2 ranks, 256 KB all-reduces:
    median 0.91 ms, mean 2.27 ms after a barrier).
    """
    world = int(raw["world_size"])
    hosts = raw.get("hosts") or []
    one_clock = len(hosts) > 0 and len(set(hosts)) == 1  # end times comparable
    by_coll: dict[str, list[dict[str, Any]]] = {}
    for m in raw["measurements"]:
        per_rank = np.asarray(m["per_rank_ns"], dtype=float)  # [rank, iteration]
        issue = (np.asarray(m["per_rank_issue_ns"], dtype=float)
                 if m.get("per_rank_issue_ns") else None)
        # the transfer starts once the call is issued (on gloo a reduce-scatter's clone)
        transfer = (per_rank if issue is None else np.maximum(per_rank - issue, 0)).min(axis=0)
        point = {
            "bytes": int(m["bytes"]), "median_ns": float(np.median(transfer)),
            "p10_ns": float(np.percentile(transfer, 10)),
            "p90_ns": float(np.percentile(transfer, 90)), "iters": int(m["iters"]),
        }
        if issue is not None:
            point["issue_ns"] = float(np.median(issue.mean(axis=0)))
            if one_clock and m.get("per_rank_end_ns"):
                point.update(_last_rank(per_rank, issue, m["per_rank_end_ns"],
                                        point["median_ns"]))
        if m.get("per_rank_chain_ns") and point["median_ns"] > 0:
            chain = float(np.mean(np.asarray(m["per_rank_chain_ns"], dtype=float)))
            point["chain_ns"] = chain
            point["chain_ratio"] = chain / point["median_ns"]
        if m.get("per_rank_pair_ns"):
            pair = float(np.median(np.asarray(m["per_rank_pair_ns"], dtype=float).min(axis=0)))
            point["pair_ns"] = pair
            point["pair_ratio"] = pair / point["median_ns"] if point["median_ns"] > 0 else 1.0
        if m.get("per_rank_cpu_ns"):
            cpu = float(np.median(np.asarray(m["per_rank_cpu_ns"], dtype=float).mean(axis=0)))
            point["cpu_ns"] = cpu
            # a process cannot keep more cores busy than it may run on: a short call's
            # ratio can exceed that (CPU time its other threads spent around the call)
            share = cpu / point["median_ns"] if point["median_ns"] > 0 else 0.0
            point["cpu_share"] = min(share, float(raw.get("cpu_cores") or share))
        by_coll.setdefault(m["collective"], []).append(point)
    out = {}
    for coll, points in by_coll.items():
        points.sort(key=lambda p: p["bytes"])
        for p, f in zip(points, _isotonic(np.array([p["median_ns"] for p in points]))):
            p["fit_ns"] = float(f)
        df = pd.DataFrame(points)
        out[coll] = {"group_size": world, "points": points,
                     "segments": _segments(df, world, coll),
                     # one line over every size: how far a single alpha/beta is from the
                     # measurements (the segments are what replay uses)
                     "overall": _line(coll, df["bytes"].to_numpy(),
                                      df["fit_ns"].to_numpy(dtype=float), world)}
    return out
