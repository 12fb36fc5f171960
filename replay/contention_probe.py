"""How much a collective slows when the training threads keep every core busy.

The core-sharing model (:mod:`replay.interference.cores`) slows a transfer by the part of
it that is CPU work: ``1 + share * (met - 1)``, where ``share`` is its CPU time over its
wall time (calibrated) and ``met`` the load its thread meets. On a wire-bound link that
share is small (0.09-0.16 of a core at 2 Gbit/s), so the model gave a 1 MB all-reduce
beside a backward on both cores 1.08x. Measured, it took 1.5x: gloo's ring runs many
short steps, each of which waits for its thread to get a core, so the transfer loses
time to every runnable thread beside it however little CPU it uses (this machine, 2
cores, 2 ranks, 2 Gbit/s emulated link, rank 0's median of 12 calls, two runs: 8.49 / 8.30
ms with the calling threads waiting, 13.13 / 12.58 ms with them computing; an ad hoc
script, of which the probe below is the re-runnable form). The ranks do not slow alike: in
a third run rank 0 took 8.3 -> 9.4 ms and rank 1 8.4 -> 12.2 ms.

``tracekit calibrate`` measures it (``contention`` in the worker's raw document,
:mod:`collectors.calibrate_worker`): one all-reduce on a busy link, timed alternately with
every rank's calling thread waiting and computing until the call completes. The
*sensitivity* ``k`` is the weight that makes the model's formula give the measured ratio
under the probe's own load (every rank's computing thread plus its transfer)::

    ratio = busy / quiet = 1 + k * (met - 1)   ->   k = (ratio - 1) / (met - 1)

and the model then slows every transfer by ``1 + max(share, k) * (met - 1)``: never less
than its CPU part, as before, and as much as the probe showed. Before/after (the figures
above: share 0.16, 2 ranks on 2 cores: met 1.58)::

    {"per_rank_quiet_ns": [[8.3e6, ...], [8.4e6, ...]],
     "per_rank_busy_ns": [[9.4e6, ...], [12.2e6, ...]]}
    -> {"bytes": 1048576, "quiet_ms": [8.3, 8.4], "busy_ms": [9.4, 12.2], "ratio": 1.29}
    k = 0.50
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the sensitivity is kept within [the transfer's CPU share, this]. A bound, not a
#: measurement: the probe times one size (1 MB), and beside busy cores that transfer took
#: about the same 7-15 ms at 2, 4 and 8 Gbit/s (ratios 1.6 / 1.8-2.7 / 3.0-4.2), so the
#: extra time is not a fixed multiple of every size's. Extrapolated unbounded (k 4-5 at 8
#: Gbit/s) it made DeAR with 4 MB buckets 16-26% too slow on the 2026-12-07 campaign's
#: cells; bounded at 2 it gave 12-16%. A probe at two sizes would say how the extra
#: time grows with size; until then this bound limits the extrapolation.
MAX_SENSITIVITY = 2.0


def summarize_contention(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The ``contention`` entry of ``comm.json`` from the worker's raw one: each rank's
    median time per call both ways, and the mean over ranks of their ratio (a rank's
    collective ends when its own last step ran, so under contention the ranks end apart:
    each rank's node in a trace is its own); None when there is none or it cannot be
    read."""
    try:
        quiet = np.median(np.asarray(raw["per_rank_quiet_ns"], dtype=float), axis=1)
        busy = np.median(np.asarray(raw["per_rank_busy_ns"], dtype=float), axis=1)
    except (KeyError, TypeError, ValueError, np.exceptions.AxisError):
        return None
    if quiet.size == 0 or quiet.size != busy.size or float(quiet.min()) <= 0:
        return None
    return {"collective": raw.get("collective", "all_reduce"), "bytes": int(raw.get("bytes", 0)),
            "quiet_ms": (quiet / 1e6).round(4).tolist(), "busy_ms": (busy / 1e6).round(4).tolist(),
            "ratio": float(np.mean(busy / quiet))}


def sensitivity(entry: dict[str, Any] | None, share: float | None, ranks_per_pool: float,
                cores: float) -> float | None:
    """``k`` (module doc) from a ``contention`` entry, the probe transfer's CPU ``share``
    (None: 1) and how many ranks share a pool of ``cores``; None without an entry."""
    if not entry or not cores:
        return None
    try:
        ratio = float(entry["ratio"])
    except (KeyError, TypeError, ValueError):
        return None
    s = min(max(share if share is not None else 1.0, 0.0), 1.0)
    busy = ranks_per_pool * (1.0 + s)  # each rank: its computing thread and its transfer
    met = max(1.0, busy / cores, busy / cores + (1.0 - s) / cores)
    if met <= 1.0:
        return None
    return float(min(max((ratio - 1.0) / (met - 1.0), s), MAX_SENSITIVITY))


def contention_note(entry: dict[str, Any] | None, k: float | None) -> str | None:
    """One line for the comm model's notes (None: not measured)."""
    if not entry or k is None:
        return None
    ms = lambda v: "/".join(f"{x:.1f}" for x in v)  # noqa: E731
    return (f"contention: a {entry['bytes'] / 2**20:.0f} MB all-reduce took "
            f"{ms(entry['busy_ms'])} ms (per rank) beside compute on every core, "
            f"{ms(entry['quiet_ms'])} ms without (x{entry['ratio']:.2f}): transfers slow as "
            f"a thread {k:.2f} busy would")
