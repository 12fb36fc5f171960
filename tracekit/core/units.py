"""Sizes and rates as users write them: ``4MB``, ``0.5MB``, ``100Gbps``, ``10GB/s``.

Sizes are binary, as DDP counts its ``bucket_cap_mb``: ``1MB`` = ``1MiB`` = 1048576
bytes, ``KB`` = 1024, ``GB`` = 2**30, and a bare number is bytes. Rates are decimal, as
network links and nccl-tests count them: ``100Gbps`` = 1e11 bit/s = 12.5e9 bytes/s,
``10GB/s`` = 1e10 bytes/s; ``GiB/s`` is binary. Units are case-insensitive.

Before / after::

    parse_size('4MB')      -> 4194304          format_size(4194304)  -> '4MB'
    parse_size('0.5MB')    -> 524288           format_size(524288)   -> '512KB'
    parse_size('1048576')  -> 1048576          format_size(1000)     -> '1000B'
    parse_rate('100Gbps')  -> 1.25e10          format_rate(1.25e10)  -> '100Gbps'
    parse_rate('10GB/s')   -> 1e10             format_rate(1e10)     -> '80Gbps'
"""

from __future__ import annotations

import math
import re

from tracekit.errors import TracekitError

#: DDP's ``bucket_cap_mb`` unit, and the ``MB`` of every size here
MIB = 1024**2

#: bytes per size unit (lower case; '' is a bare number of bytes)
SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
}
#: bytes per second per rate unit (lower case)
RATE_UNITS: dict[str, float] = {
    "bps": 1 / 8, "kbps": 1e3 / 8, "mbps": 1e6 / 8, "gbps": 1e9 / 8, "tbps": 1e12 / 8,
    "b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "tb/s": 1e12,
    "kib/s": 1024.0, "mib/s": 1024.0**2, "gib/s": 1024.0**3, "tib/s": 1024.0**4,
}
#: a non-negative decimal number, optionally with an exponent (``2``, ``0.5``, ``.5``, ``1e3``)
NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_SIZE_RE = re.compile(rf"^({NUMBER})\s*([a-z]*)$", re.IGNORECASE)
_RATE_RE = re.compile(rf"^({NUMBER})\s*([a-z/]+)$", re.IGNORECASE)


def format_size(nbytes: int) -> str:
    """Bytes -> the spelling in binary units: the largest unit that keeps the value >= 1
    and exact to 3 decimals (``4194304`` -> ``4MB``, ``524288`` -> ``512KB``)."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        value = nbytes / scale
        if value >= 1 and math.isclose(value * 1000, round(value * 1000), abs_tol=1e-6):
            return f"{value:g}{unit}"
    return f"{nbytes}B"


def parse_size(text: str) -> int:
    """``'4MB'`` -> 4194304, ``'0.5MB'`` -> 524288, ``'1048576'`` -> 1048576 (binary units)."""
    m = _SIZE_RE.match(text.strip())
    unit = m.group(3).lower() if m else None
    if not m or unit not in SIZE_UNITS:
        raise TracekitError(
            f"cannot read size {text!r}; expected a number with an optional unit "
            "B, KB, MB or GB (binary, as DDP's bucket_cap_mb), e.g. fusion=25MB or fusion=0.5MB"
        )
    value = float(m.group(1)) * SIZE_UNITS[unit]
    if value < 1:
        raise TracekitError(f"size {text!r} is below one byte; e.g. fusion=4MB")
    return int(round(value))


def parse_rate(text: str) -> float:
    """``'100Gbps'`` -> 1.25e10 bytes/s, ``'10GB/s'`` -> 1e10 (decimal units)."""
    m = _RATE_RE.match(text.strip())
    unit = m.group(3).lower() if m else None
    if not m or unit not in RATE_UNITS:
        raise TracekitError(
            f"cannot read bandwidth {text!r}; expected a factor like 2x or a rate like "
            "100Gbps, 400Mbps or 10GB/s, e.g. bandwidth=2x"
        )
    value = float(m.group(1)) * RATE_UNITS[unit]
    if value <= 0:
        raise TracekitError(f"bandwidth {text!r} must be positive; e.g. bandwidth=100Gbps")
    return value


def format_rate(bytes_per_s: float) -> str:
    """Bytes/s -> bits per second in the largest decimal unit it reaches (``Tbps``,
    ``Gbps``, ``Mbps``), else plain bytes/s (``1.25e10`` -> ``100Gbps``, ``100`` ->
    ``100B/s``)."""
    for unit, scale in (("Tbps", 1e12 / 8), ("Gbps", 1e9 / 8), ("Mbps", 1e6 / 8)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:g}{unit}"
    return f"{bytes_per_s:g}B/s"
