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
:mod:`collectors.calibrate_worker`): an all-reduce on a busy link, timed alternately with
every rank's calling thread waiting and computing until the call completes, at four
sizes (256 KB, 1, 4 and 16 MB; 12 pairs each). The *sensitivity* ``k`` is the weight that
makes the model's formula give the measured ratio under the probe's own load (every
rank's computing thread plus its transfer): the transfer's CPU part weighs all the load
it meets (``met``), the rest of ``k`` only the computing threads' and its own
(``met_c``)::

    ratio = busy / quiet = 1 + share * (met - 1) + (k - share) * (met_c - 1)
        ->   k = share + (ratio - 1 - share * (met - 1)) / (met_c - 1)

and the model then slows every transfer that way under its own schedule's load
(:mod:`replay.interference.cores`): never less than its CPU part, and as much as the
probe showed beside computing threads, with ``k`` taken in log size between the probed
sizes (the nearest one outside them). Several sizes, because the extra time does not grow
in proportion: beside busy cores a 1 MB all-reduce took about the same 7-15 ms at 2, 4
and 8 Gbit/s (ratios 1.6 / 1.8-2.7 / 3.0-4.2, k up to 5), so a single 1 MB ``k`` applied
to every size made DeAR with 4 MB buckets 25-26% too slow at 8 Gbit/s (mlp and
embed_mlp, 2026-12-07 campaign; `benchmarks/predict_cell.py CELL`).

A shape that was tried and measured, and not kept: since the contended time stays about
the same at every rate, a *floor* ``max(base * cpu part, (a + b * bytes) * (met - 1))``
fitted on the sizes the CPU part does not explain (commits f6fee1e..0688d0e, with the
run's own 1 MB buckets rescaling it). On the twelve cells of the second 2026-12-07
campaign it scored a mean over cells of 4.9% mean / 11.8% worst |error| for the DDP
what-ifs, where this ratio scored 4.3% / 10.3% on the same measured speedups and
calibrations (4.7 / 11.3 against 4.0 / 10.5 with fresh ones); its 2-point slope is as
noisy as the probe (0 to 12.5 ms per MB per unit of load over the 15 calibrations).

Before/after (the third run above: share 0.16, 2 ranks on 2 cores: met 1.58, met_c 1.5)::

    {"per_rank_quiet_ns": [[8.3e6, ...], [8.4e6, ...]],
     "per_rank_busy_ns": [[9.4e6, ...], [12.2e6, ...]]}
    -> {"bytes": 1048576, "quiet_ms": [8.3, 8.4], "busy_ms": [9.4, 12.2], "ratio": 1.29}
    k = 0.16 + (0.29 - 0.16 * 0.58) / 0.5 = 0.55
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the sensitivity is kept within [the transfer's CPU share, this] (a sanity bound: the
#: largest measured here was 5, a 1 MB all-reduce at 8 Gbit/s)
MAX_SENSITIVITY = 10.0


def summarize_contention(raw: dict[str, Any] | list[dict[str, Any]]
                         ) -> list[dict[str, Any]] | None:
    """The ``contention`` entries of ``comm.json`` (one per probed size, by size) from the
    worker's raw ones (:func:`summarize_probe`); None when there are none to read."""
    probes = raw if isinstance(raw, list) else [raw]
    out = [e for e in (summarize_probe(p) for p in probes if isinstance(p, dict)) if e]
    return sorted(out, key=lambda e: e["bytes"]) or None


def summarize_probe(raw: dict[str, Any]) -> dict[str, Any] | None:
    """One size's entry: each rank's median time per call both ways, and the mean over
    ranks of their ratio (a rank's collective ends when its own last step ran, so under
    contention the ranks end apart: each rank's node in a trace is its own); None when it
    cannot be read."""
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
    met_compute = max(1.0, (ranks_per_pool + 1.0) / cores)  # the computing threads + its own
    if met_compute <= 1.0:
        return None
    k = s + (ratio - 1.0 - s * (met - 1.0)) / (met_compute - 1.0)
    return float(min(max(k, s), MAX_SENSITIVITY))


def contention_note(entries: list[dict[str, Any]] | None, ks: list[float | None]) -> str | None:
    """One line for the comm model's notes (None: not measured)."""
    if not entries or all(k is None for k in ks):
        return None
    ms = lambda v: "/".join(f"{x:.1f}" for x in v)  # noqa: E731
    parts = [f"{e['bytes'] / 2**20:g} MB took {ms(e['busy_ms'])} ms, {ms(e['quiet_ms'])} "
             f"without (x{e['ratio']:.2f}, k {k:.2f})"
             for e, k in zip(entries, ks) if k is not None]
    return ("contention: an all-reduce of " + "; ".join(parts)
            + " (per rank, beside compute on every core and without): a transfer slows as "
            "a thread k busy would (k in log size between them)")
