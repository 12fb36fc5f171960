"""A link's burst credit: how much faster a collective runs after the link sat idle.

A link shaped by a token bucket (``tc tbf``, cloud instances' burst networking, the
emulated cluster of ``benchmarks/cluster.py`` with its 1 MB bucket) lets an idle link's
first bytes through at once and the rest at its rate. ``tracekit calibrate`` times its
curves on a busy link (each call right after an untimed all-reduce, as in a training
step where buckets follow each other), then times one large all-reduce both ways
(``link_credit`` in the worker's raw document, :mod:`collectors.calibrate_worker`): on a
busy link and after an idle pause long enough to refill the bucket. The difference is
what a full bucket is worth, in seconds of transfer (``burst_s``): a collective that
follows an idle gap of at least that long runs up to ``burst_s`` faster than the
calibrated curve says. On an unshaped link it is small but need not be 0: on plain
loopback, where gloo is CPU-bound, an 8 MB all-reduce right after another took 18.6 ms
and 11.9 ms after 0.25 s idle (this machine, 2 cores).

Before/after (illustrative figures, those of ``tests/test_calibration.py``: 5 calls
each of an 8 MB all-reduce; ms, the fastest rank's time per call, as the curves read
it)::

    drained  [36.1, 35.8, 36.4, 36.0, 35.9]   idle (0.25 s)  [34.2, 34.0, 34.3, 33.9, 34.1]
    -> {"busy_ms": 36.0, "idle_ms": 34.1, "burst_s": 0.0019, "lower_bound": False}

The credit is the median over the pairs (each busy call and the idle call after it) of
what the idle call saved, counted only when the idle call was the faster one in at least
75% of the pairs (a sign test: on a link without credit, 5 of 5 pairs once in 32 runs, 5
of 6 once in 9, 6 of 8 once in 7, and then a saving at the noise's size); ``lower_bound`` says the idle call was mostly within the burst (under
a quarter of the busy time), so the bucket may hold more than the probe measured. On the
emulated link the busy calls themselves vary (a 4 MB all-reduce at 200 Mbit/s: 276-336
ms), so it takes several pairs: six gave 49-66 ms where the bucket alone is worth 42 ms.

The replay does not use it yet: it is printed by ``tracekit calibrate`` and stored in
``comm.json`` (``link_credit``), and the comm model's notes say when the curves may be
slow for collectives that follow idle gaps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: an idle call under this share of the busy one was mostly inside the burst
_SATURATED = 0.25
#: the share of (busy, idle) pairs in which the idle call must be the faster one (at least)
_SIGN_SHARE = 0.75


def summarize_link_credit(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The ``link_credit`` entry of ``comm.json`` from the worker's raw one (module doc);
    None when the raw document has none or it cannot be read."""
    try:
        busy = np.asarray(raw["per_rank_drained_ns"], dtype=float).min(axis=0)
        idle = np.asarray(raw["per_rank_idle_ns"], dtype=float).min(axis=0)
    except (KeyError, TypeError, ValueError):
        return None
    if busy.size == 0 or idle.size == 0:
        return None
    n = min(busy.size, idle.size)
    saved = busy[:n] - idle[:n]  # each busy call and the idle call after it
    busy_ns, idle_ns = float(np.median(busy)), float(np.median(idle))
    counted = bool((saved > 0).mean() >= _SIGN_SHARE)
    burst_s = max(float(np.median(saved)), 0.0) / 1e9 if counted else 0.0
    return {"collective": raw.get("collective", "all_reduce"), "bytes": int(raw.get("bytes", 0)),
            "idle_wait_s": float(raw.get("idle_s", 0.0)), "busy_ms": busy_ns / 1e6,
            "idle_ms": idle_ns / 1e6, "burst_s": burst_s,
            "lower_bound": bool(burst_s > 0 and idle_ns < _SATURATED * busy_ns)}


def credit_note(credit: dict[str, Any] | None) -> str | None:
    """One line about the link's burst credit for the comm model's notes (None: not
    measured)."""
    if not credit:
        return None
    timed = (f"a {credit['bytes'] / 2**20:.0f} MB all-reduce took {credit['busy_ms']:.1f} ms "
             f"on a busy link, {credit['idle_ms']:.1f} ms after {credit['idle_wait_s']:.2f} s "
             "idle")
    if credit.get("burst_s", 0.0) <= 0:
        return f"link: no burst credit ({timed})"
    least = "at least " if credit.get("lower_bound") else ""
    return (f"link: a burst credit worth {least}{credit['burst_s'] * 1e3:.1f} ms of transfer "
            f"({timed}; a token-bucket link lets its burst through at once); the curves are "
            "for a busy link, so collectives after idle gaps may run faster than predicted "
            "(the replay does not model the credit yet)")
