"""Values in what-if specs: sizes and rates (:mod:`tracekit.core.units`) and factors.

Sizes (``fusion``) are binary like DDP's ``bucket_cap_mb``: ``1MB`` = ``1MiB`` = 1048576
bytes, ``KB`` = 1024, ``GB`` = 2**30; a bare number is bytes (``1048576``). Rates
(``bandwidth``) are decimal like network links and nccl-tests: ``100Gbps`` = 1e11 bit/s =
12.5e9 bytes/s, ``10GB/s`` = 1e10 bytes/s (``GiB/s`` is binary). Factors are positive
numbers with an optional ``x``.

Every value is range-checked, so no arithmetic downstream can overflow into a plausible
number (an error names the accepted range):

- sizes: 1 byte .. 1 TiB, ``1024GB`` (:data:`MAX_SIZE`). One byte puts every gradient in its own
  bucket; no model has a gradient bucket of more than a TiB per rank.
- rates: 1 Mbps .. 1 Pbps (:data:`MIN_RATE`, :data:`MAX_RATE`): from a slow WAN link to
  a hundred times today's fastest GPU interconnects.
- factors: 1e-6 .. 1e6 (:data:`MIN_FACTOR`, :data:`MAX_FACTOR`): a million times faster
  or slower is past any real change of hardware and keeps every re-timed duration within
  years, not ages.
- world sizes (``workers=``): 1 .. 1,000,000 ranks (:data:`MAX_WORKERS`).

:func:`duration_ns` turns re-timed durations back into int64 nanoseconds and refuses any
beyond :data:`MAX_DURATION_NS` (combined extreme what-ifs: ``comm-scale=1e6+bandwidth=1e-6x``).
"""

from __future__ import annotations

import math
import re

import numpy as np

from tracekit.core import units
from tracekit.core.units import NUMBER, SIZE_UNITS, format_rate, format_size
from tracekit.errors import TracekitError

__all__ = ["format_float", "format_rate", "format_size", "is_factor", "parse_factor",
           "parse_rate", "parse_size", "parse_workers", "duration_ns", "check_total_ns"]

#: bytes: the largest size (``fusion=``), 1 TiB
MAX_SIZE = 2**40
#: bytes/s: the slowest and the fastest rate (``bandwidth=``): 1 Mbps and 1 Pbps
MIN_RATE, MAX_RATE = 1e6 / 8, 1e15 / 8
#: the smallest and the largest factor (``bandwidth=Nx``, ``comm-scale=``, ...)
MIN_FACTOR, MAX_FACTOR = 1e-6, 1e6
#: the largest world size (``workers=``)
MAX_WORKERS = 1_000_000
#: ns: the longest duration one re-timed operation may get (about 2.3 years); a variant
#: whose durations add up beyond 2**60 ns (36 years) is refused as a whole
MAX_DURATION_NS = 2**56
MAX_TOTAL_NS = 2**60

_FACTOR_RE = re.compile(rf"^({NUMBER})\s*x?$", re.IGNORECASE)
_SIZE_RE = re.compile(rf"^({NUMBER})\s*([a-z]*)$", re.IGNORECASE)


def format_float(x: float) -> str:
    return f"{x:g}"


def parse_size(text: str, key: str = "fusion") -> int:
    """:func:`tracekit.core.units.parse_size` within 1 byte .. :data:`MAX_SIZE`."""
    m = _SIZE_RE.match(text.strip())
    if m and m.group(3).lower() in SIZE_UNITS:
        value = float(m.group(1)) * SIZE_UNITS[m.group(3).lower()]
        if not 1 <= value <= MAX_SIZE:
            raise TracekitError(f"{key}={text.strip()} is out of range: sizes go from 1B to "
                                "1024GB (1 TiB); e.g. fusion=25MB")
    return units.parse_size(text)


def parse_rate(text: str) -> float:
    """:func:`tracekit.core.units.parse_rate` within :data:`MIN_RATE` .. :data:`MAX_RATE`."""
    value = units.parse_rate(text)
    if not MIN_RATE <= value <= MAX_RATE:
        raise TracekitError(f"bandwidth={text.strip()} is out of range: rates go from 1Mbps "
                            "to 1000Tbps; e.g. bandwidth=100Gbps")
    return value


def parse_factor(text: str, key: str, example: str | None = None,
                 spec: str | None = None) -> float:
    """``'0.5'`` or ``'2x'`` -> the factor, within :data:`MIN_FACTOR` .. :data:`MAX_FACTOR`;
    ``example`` (default ``KEY=0.5``) is the valid spec the error suggests, ``spec`` the
    user's spec it names (default ``KEY=TEXT``)."""
    example = example or f"{key}=0.5"
    spec = spec or f"{key}={text.strip()}"
    m = _FACTOR_RE.match(text.strip())
    if not m:
        raise TracekitError(f"cannot read {spec!r}; expected a positive number, "
                            f"e.g. {example}")
    value = float(m.group(1))
    if not MIN_FACTOR <= value <= MAX_FACTOR:
        raise TracekitError(f"{spec} is out of range: factors go from "
                            f"{MIN_FACTOR:g} to {MAX_FACTOR:g}; e.g. {example}")
    return value


def parse_workers(text: str, key: str = "workers") -> int:
    """``'8'`` -> 8 ranks, within 1 .. :data:`MAX_WORKERS`."""
    t = text.strip()
    try:
        n = int(t) if t.isdigit() else float(t) if _FACTOR_RE.match(t) and "x" not in t.lower() \
            else None
    except ValueError:
        n = None
    if n is None or n != int(n):
        raise TracekitError(f"cannot read {key}={text!r}; expected a whole number of "
                            "ranks >= 1, e.g. workers=8")
    if not 1 <= n <= MAX_WORKERS:
        raise TracekitError(f"{key}={t} is out of range: world sizes go from 1 to "
                            f"{MAX_WORKERS:,} ranks; e.g. workers=8")
    return int(n)


def duration_ns(values: np.ndarray, what: str) -> np.ndarray:
    """Re-timed durations (float ns) -> int64 ns; a :class:`TracekitError` when any is
    not finite or beyond :data:`MAX_DURATION_NS` (the cast would wrap around into a
    plausible, wrong number)."""
    values = np.asarray(values, dtype=np.float64)
    worst = float(np.max(values, initial=0.0)) if len(values) else 0.0
    if not np.isfinite(values).all() or worst > MAX_DURATION_NS:
        raise TracekitError(f"{what} makes an operation last {_years(worst)}, beyond what "
                            "can be replayed; choose less extreme values (factors "
                            f"{MIN_FACTOR:g}..{MAX_FACTOR:g}, and not several at their limits)")
    return np.rint(values).astype(np.int64)


def check_total_ns(dur_ns: np.ndarray, what: str) -> None:
    """Refuse a variant whose durations add up beyond :data:`MAX_TOTAL_NS` or went
    negative: its replayed times could overflow int64."""
    d = np.asarray(dur_ns)
    total = float(np.sum(d, dtype=np.float64)) if len(d) else 0.0
    if total > MAX_TOTAL_NS or (len(d) and int(d.min()) < 0):
        raise TracekitError(f"{what}: the predicted durations add up to {_years(total)}, "
                            "beyond what can be replayed; choose less extreme values")


def _years(ns: float) -> str:
    if not math.isfinite(ns):
        return "forever"
    years = ns / (365.25 * 86400e9)
    return f"{years:.3g} years" if years >= 1 else f"{ns / 86400e9:.3g} days"


def is_factor(text: str) -> bool:
    """``'2x'`` is a factor; ``'2'`` or ``'100Gbps'`` is not."""
    t = text.strip()
    return bool(_FACTOR_RE.match(t)) and t.lower().endswith("x")
