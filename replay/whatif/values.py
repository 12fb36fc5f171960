"""Values in what-if specs: sizes and rates (:mod:`tracekit.core.units`) and factors.

Sizes (``fusion``) are binary like DDP's ``bucket_cap_mb``: ``1MB`` = ``1MiB`` = 1048576
bytes, ``KB`` = 1024, ``GB`` = 2**30; a bare number is bytes (``1048576``). Rates
(``bandwidth``) are decimal like network links and nccl-tests: ``100Gbps`` = 1e11 bit/s =
12.5e9 bytes/s, ``10GB/s`` = 1e10 bytes/s (``GiB/s`` is binary). Factors are positive
numbers with an optional ``x``.
"""

from __future__ import annotations

import math
import re

from tracekit.core.units import NUMBER, format_rate, format_size, parse_rate, parse_size
from tracekit.errors import TracekitError

__all__ = ["format_float", "format_rate", "format_size", "is_factor", "parse_factor",
           "parse_rate", "parse_size"]

_FACTOR_RE = re.compile(rf"^({NUMBER})\s*x?$", re.IGNORECASE)


def format_float(x: float) -> str:
    return f"{x:g}"


def parse_factor(text: str, key: str) -> float:
    m = _FACTOR_RE.match(text.strip())
    if not m or float(m.group(1)) <= 0 or not math.isfinite(float(m.group(1))):
        raise TracekitError(
            f"cannot read {key}={text!r}; expected a positive number, e.g. {key}=0.5"
        )
    return float(m.group(1))


def is_factor(text: str) -> bool:
    """``'2x'`` is a factor; ``'2'`` or ``'100Gbps'`` is not."""
    t = text.strip()
    return bool(_FACTOR_RE.match(t)) and t.lower().endswith("x")
