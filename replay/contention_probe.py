"""The time a collective cannot go below while the training threads keep every core busy.

The core-sharing model (:mod:`replay.interference.cores`) slows a transfer by the part of
it that is CPU work: ``1 + share * (met - 1)``, where ``share`` is its CPU time over its
wall time (calibrated) and ``met`` the load its thread meets. On a wire-bound link that
share is small (0.09-0.16 of a core at 2 Gbit/s), so that formula gave a 1 MB all-reduce
beside a backward on both cores 1.08x. Measured, it took 1.5x (this machine, 2 cores, 2
ranks, 2 Gbit/s emulated link, rank 0's median of 12 calls: 8.49 / 8.30 ms with the
calling threads waiting, 13.13 / 12.58 ms with them computing).

Why, and why a ratio is the wrong shape for it: gloo's ring is a chain of short steps,
each of which waits for its thread to get a core. Beside busy cores that chain takes
about the same time whatever the wire (a 1 MB all-reduce beside compute took 7-15 ms at
2, 4 and 8 Gbit/s, so its ratio grew from 1.2-1.6 to 3-4), and the link's token bucket
refills while the thread waits, so a transfer whose wire time is longer than the chain
loses nothing (8 MB: 0.98x at 2 Gbit/s, 1.02x at 4, 1.43x at 8, where its wire time
falls below the chain's). So a transfer beside busy cores takes::

    max(base * (1 + share * (met - 1)),   its wire path, its CPU part slowed
        C(bytes, met))                     its chain of steps, each waiting for a core

    C(bytes, met) = (a + b * bytes) * (met - 1)       (0 on cores with room to spare)

``tracekit calibrate`` measures it (``contention`` in the worker's raw document,
:mod:`collectors.calibrate_worker`): an all-reduce on a busy link, timed alternately with
every rank's calling thread waiting (``quiet``) and computing until the call completes
(``busy``), at several sizes. A size is *chain bound* when its busy time exceeds what its
CPU part explains (``quiet * (1 + share * (met_probe - 1))``) by more than
:data:`BOUND_MARGIN`; its busy time over ``met_probe - 1`` is a point of ``a + b * bytes``,
fitted by least squares (a, b >= 0; one point: b = 0). A size the wire bounds says the
chain took at most its busy time there, which caps ``b``. With no chain-bound size, the
CPU part is all there is. Example (2 ranks on 2 cores, share 0.2: met_probe 1.6)::

    {"bytes": 1 MB, "quiet_ms": [8.0, 8.0], "busy_ms": [12.8, 12.8]}   12.8 > 8 * 1.12: bound
    {"bytes": 4 MB, "quiet_ms": [32, 32],   "busy_ms": [33.0, 33.0]}   wire bound
    -> a = 12.8 / 0.6 = 21.3 ms per unit of load, b = 0
    -> a 1 MB transfer meeting load 1.3 cannot take less than 21.3 * 0.3 = 6.4 ms
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: a probed size is chain bound when its busy time exceeds what its CPU part explains by
#: more than this (the probe's repeat noise: per-rank medians of 8-12 calls moved by up to
#: ~10% between calibrations)
BOUND_MARGIN = 0.10


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


def probe_met(share: float | None, ranks_per_pool: float, cores: float) -> float:
    """The load the probe's transfer met: each rank of the pool runs its computing thread
    and its transfer (CPU ``share``, None: 1), and while the transfer's CPU work runs its
    thread is one whole runnable thread (the core model's own rule)."""
    s = min(max(share if share is not None else 1.0, 0.0), 1.0)
    busy = ranks_per_pool * (1.0 + s)
    return max(1.0, busy / cores, busy / cores + (1.0 - s) / cores)


@dataclass(frozen=True, kw_only=True)
class ContendedChain:
    """``C(bytes, met) = (a + b * bytes) * (met - 1)`` (module doc), fitted on the probe."""

    #: ns per unit of load above 1, at zero bytes
    fixed_ns: float
    #: ns per byte per unit of load above 1
    per_byte_ns: float
    #: the probed sizes that were chain bound (what the fit read)
    bound_bytes: tuple[int, ...]

    def per_load_ns(self, nbytes: float) -> float:
        """``a + b * bytes``: the chain's time per unit of load above 1."""
        return self.fixed_ns + self.per_byte_ns * max(float(nbytes), 0.0)

    def floor_ns(self, nbytes: float, met: float) -> float:
        """The least time a transfer of ``nbytes`` takes when its thread meets ``met``."""
        return self.per_load_ns(nbytes) * max(met - 1.0, 0.0)


def fit_chain(entries: list[dict[str, Any]] | None, shares: list[float | None],
              ranks_per_pool: float, cores: float) -> ContendedChain | None:
    """:class:`ContendedChain` from the probe's ``entries`` and each size's calibrated CPU
    ``shares``; None without entries or cores, or when nothing in the probe shared a
    core. A fit with no chain-bound size has ``a = b = 0``."""
    if not entries or not cores:
        return None
    bound, caps = [], []
    for e, s in zip(entries, shares):
        try:
            quiet = float(np.mean(e["quiet_ms"])) * 1e6
            busy = float(np.mean(e["busy_ms"])) * 1e6
            nbytes = float(e["bytes"])
        except (KeyError, TypeError, ValueError):
            continue
        met = probe_met(s, ranks_per_pool, cores)
        if met <= 1.0:
            continue
        cpu = min(max(s if s is not None else 1.0, 0.0), 1.0)
        explained = quiet * (1.0 + cpu * (met - 1.0))
        point = (nbytes, busy / (met - 1.0))
        (bound if busy > explained * (1.0 + BOUND_MARGIN) else caps).append(point)
    if not bound and not caps:
        return None
    a, b = _fit_line(bound)
    # where the wire bounded the probe, the chain took at most the busy time there
    for nbytes, most in caps:
        if bound and nbytes > max(x for x, _ in bound) and a + b * nbytes > most:
            b = max(0.0, (most - a) / nbytes)
    return ContendedChain(fixed_ns=a, per_byte_ns=b,
                          bound_bytes=tuple(int(x) for x, _ in bound))


def _fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b x`` with ``a, b >= 0`` (one point: ``b = 0``)."""
    if not points:
        return 0.0, 0.0
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    if len(points) == 1 or np.ptp(x) == 0:
        return float(y.mean()), 0.0
    b, a = np.polyfit(x, y, 1)
    if b < 0:
        return float(y.mean()), 0.0
    if a < 0:
        return 0.0, float((x @ y) / (x @ x))
    return float(a), float(b)


def contention_note(entries: list[dict[str, Any]] | None,
                    chain: ContendedChain | None) -> str | None:
    """One line for the comm model's notes (None: not measured)."""
    if not entries or chain is None:
        return None
    ms = lambda v: "/".join(f"{x:.1f}" for x in v)  # noqa: E731
    sizes = "; ".join(f"{_mb(e['bytes'])} {ms(e['quiet_ms'])} -> {ms(e['busy_ms'])} ms"
                      for e in entries)
    if not chain.bound_bytes:
        return (f"contention: all-reduces beside compute on every core ({sizes}, per rank) "
                "slowed no more than their CPU part")
    return (f"contention: all-reduces beside compute on every core ({sizes}, per rank): "
            f"gloo's chain of steps takes at least {chain.fixed_ns / 1e6:.1f} ms + "
            f"{chain.per_byte_ns * 2**20 / 1e6:.2f} ms/MB per unit of load above the cores "
            f"(fitted on {', '.join(_mb(b) for b in chain.bound_bytes)})")


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:g} MB"
