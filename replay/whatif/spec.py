"""What-if SPEC strings -> typed transforms.

A spec names one variant, several combined with ``+``, or a sweep::

    fusion=4MB                    one variant: DDP buckets of 4 MiB
    fusion=64MB+dear              one variant, two transforms applied together
    fusion=1MB..256MB             a sweep: 1, 2, 4, ... 256 MiB (a range doubles)
    fusion=1MB,4MB,16MB           a sweep over an explicit list
    workers=2..16                 a sweep: 2, 4, 8, 16 workers
    fusion=1MB..16MB+overlap=off  a sweep where every point also turns overlap off

Grammar (case-insensitive keys and units)::

    spec      := transform ('+' transform)*
    transform := 'dear' | key '=' values
    values    := value | value '..' value | value (',' value)+
    key       := fusion | overlap | bandwidth | comm-scale | compute-scale | workers

Units. Sizes (``fusion``) are binary like DDP's ``bucket_cap_mb``: ``1MB`` = ``1MiB`` =
1048576 bytes, ``KB`` = 1024, ``GB`` = 2**30; a bare number is bytes (``1048576``).
Rates (``bandwidth``) are decimal like network links and nccl-tests: ``100Gbps`` =
1e11 bit/s = 12.5e9 bytes/s, ``10GB/s`` = 1e10 bytes/s (``GiB/s`` is binary); ``2x``
is relative to the bandwidth fitted from the run. ``comm-scale`` and ``compute-scale``
multiply durations: ``compute-scale=0.5`` means compute takes half as long.

Before/after::

    >>> parse_spec("fusion=1MB..4MB+dear").variants
    (Variant(spec='fusion=1MB+dear', ...), Variant(spec='fusion=2MB+dear', ...),
     Variant(spec='fusion=4MB+dear', ...))
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tracekit.errors import TracekitError

#: a sweep is refused beyond this many points (a typo like 1KB..1TB would be slow)
MAX_SWEEP_POINTS = 256

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
}
#: bytes per second per unit
_RATE_UNITS = {
    "bps": 1 / 8, "kbps": 1e3 / 8, "mbps": 1e6 / 8, "gbps": 1e9 / 8, "tbps": 1e12 / 8,
    "b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "tb/s": 1e12,
    "kib/s": 1024.0, "mib/s": 1024.0**2, "gib/s": 1024.0**3, "tib/s": 1024.0**4,
}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_SIZE_RE = re.compile(rf"^({_NUMBER})\s*([a-z]*)$", re.IGNORECASE)
_RATE_RE = re.compile(rf"^({_NUMBER})\s*([a-z/]+)$", re.IGNORECASE)
_FACTOR_RE = re.compile(rf"^({_NUMBER})\s*x?$", re.IGNORECASE)


# --------------------------------------------------------------------------- transforms


@dataclass(frozen=True, kw_only=True)
class Fusion:
    """``fusion=SIZE``: regroup gradients into DDP buckets of ``bucket_bytes``."""

    bucket_bytes: int

    @property
    def label(self) -> str:
        return f"fusion={format_size(self.bucket_bytes)}"


@dataclass(frozen=True, kw_only=True)
class Overlap:
    """``overlap=on|off``: off starts all gradient communication after the last backward op."""

    enabled: bool

    @property
    def label(self) -> str:
        return f"overlap={'on' if self.enabled else 'off'}"


@dataclass(frozen=True, kw_only=True)
class DeAR:
    """``dear``: reduce-scatter in backward, all-gather in the next forward."""

    @property
    def label(self) -> str:
        return "dear"


@dataclass(frozen=True, kw_only=True)
class Bandwidth:
    """``bandwidth=2x`` (``factor``) or ``bandwidth=100Gbps`` (``bytes_per_s``, the bus
    bandwidth every collective would see); exactly one is set."""

    factor: float | None = None
    bytes_per_s: float | None = None
    text: str = ""

    @property
    def label(self) -> str:
        if self.factor is not None:
            return f"bandwidth={_fmt_float(self.factor)}x"
        return f"bandwidth={self.text}" if self.text else f"bandwidth={self.bytes_per_s:g}B/s"


@dataclass(frozen=True, kw_only=True)
class CommScale:
    """``comm-scale=X``: every collective's transfer time multiplied by ``factor``."""

    factor: float

    @property
    def label(self) -> str:
        return f"comm-scale={_fmt_float(self.factor)}"


@dataclass(frozen=True, kw_only=True)
class ComputeScale:
    """``compute-scale=X``: every compute duration multiplied by ``factor``."""

    factor: float

    @property
    def label(self) -> str:
        return f"compute-scale={_fmt_float(self.factor)}"


@dataclass(frozen=True, kw_only=True)
class Workers:
    """``workers=N``: the same job on ``n`` ranks, collectives re-timed by formula."""

    n: int

    @property
    def label(self) -> str:
        return f"workers={self.n}"


Transform = Fusion | Overlap | DeAR | Bandwidth | CommScale | ComputeScale | Workers


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One point to predict: transforms applied together, in the order given."""

    #: canonical text, e.g. 'fusion=4MB+dear'
    spec: str
    transforms: tuple[Transform, ...]

    def get(self, kind: type) -> Transform | None:
        """The transform of type ``kind`` in this variant, or None."""
        return next((t for t in self.transforms if isinstance(t, kind)), None)


@dataclass(frozen=True, kw_only=True)
class WhatIfSpec:
    """One ``--what-if`` option: a single variant, or a sweep (``is_sweep``)."""

    #: the text as the user gave it
    text: str
    variants: tuple[Variant, ...]
    is_sweep: bool


# --------------------------------------------------------------------------- units


def _fmt_float(x: float) -> str:
    return f"{x:g}"


def format_size(nbytes: int) -> str:
    """Bytes -> the spelling in the spec's binary units: the largest unit that keeps the
    value >= 1 and exact to 3 decimals (``4194304`` -> ``4MB``, ``524288`` -> ``512KB``)."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        value = nbytes / scale
        if value >= 1 and math.isclose(value * 1000, round(value * 1000), abs_tol=1e-6):
            return f"{value:g}{unit}"
    return f"{nbytes}B"


def parse_size(text: str) -> int:
    """``'4MB'`` -> 4194304, ``'0.5MB'`` -> 524288, ``'1048576'`` -> 1048576 (binary units)."""
    m = _SIZE_RE.match(text.strip())
    unit = m.group(3).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise TracekitError(
            f"cannot read size {text!r}; expected a number with an optional unit "
            "B, KB, MB or GB (binary, as DDP's bucket_cap_mb), e.g. fusion=25MB or fusion=0.5MB"
        )
    value = float(m.group(1)) * _SIZE_UNITS[unit]
    if value < 1:
        raise TracekitError(f"size {text!r} is below one byte; e.g. fusion=4MB")
    return int(round(value))


def parse_rate(text: str) -> float:
    """``'100Gbps'`` -> 1.25e10 bytes/s, ``'10GB/s'`` -> 1e10 (decimal units)."""
    m = _RATE_RE.match(text.strip())
    unit = m.group(3).lower() if m else None
    if not m or unit not in _RATE_UNITS:
        raise TracekitError(
            f"cannot read bandwidth {text!r}; expected a factor like 2x or a rate like "
            "100Gbps, 400Mbps or 10GB/s, e.g. bandwidth=2x"
        )
    value = float(m.group(1)) * _RATE_UNITS[unit]
    if value <= 0:
        raise TracekitError(f"bandwidth {text!r} must be positive; e.g. bandwidth=100Gbps")
    return value


def _parse_factor(text: str, key: str) -> float:
    m = _FACTOR_RE.match(text.strip())
    if not m or float(m.group(1)) <= 0 or not math.isfinite(float(m.group(1))):
        raise TracekitError(
            f"cannot read {key}={text!r}; expected a positive number, e.g. {key}=0.5"
        )
    return float(m.group(1))


# --------------------------------------------------------------------------- one transform


def _bandwidth(text: str) -> Bandwidth:
    t = text.strip()
    if _FACTOR_RE.match(t) and t.lower().endswith("x"):
        return Bandwidth(factor=_parse_factor(t, "bandwidth"))
    return Bandwidth(bytes_per_s=parse_rate(t), text=t)


def _workers(text: str) -> Workers:
    t = text.strip()
    if not t.isdigit() or int(t) < 1:
        raise TracekitError(
            f"cannot read workers={text!r}; expected a whole number of ranks >= 1, e.g. workers=8"
        )
    return Workers(n=int(t))


def _overlap(text: str) -> Overlap:
    t = text.strip().lower()
    if t not in ("on", "off"):
        raise TracekitError(f"cannot read overlap={text!r}; expected overlap=on or overlap=off")
    return Overlap(enabled=t == "on")


_BUILDERS = {
    "fusion": lambda v: Fusion(bucket_bytes=parse_size(v)),
    "overlap": _overlap,
    "bandwidth": _bandwidth,
    "comm-scale": lambda v: CommScale(factor=_parse_factor(v, "comm-scale")),
    "compute-scale": lambda v: ComputeScale(factor=_parse_factor(v, "compute-scale")),
    "workers": _workers,
}
_ALIASES = {"comm_scale": "comm-scale", "compute_scale": "compute-scale", "bucket": "fusion",
            "world": "workers", "world-size": "workers"}
KNOWN = "fusion=SIZE, overlap=on|off, dear, bandwidth=X, comm-scale=X, compute-scale=X, workers=N"


def _scalar(t: Transform) -> float:
    """The number a range steps over, for each sweepable transform."""
    if isinstance(t, Fusion):
        return float(t.bucket_bytes)
    if isinstance(t, Workers):
        return float(t.n)
    if isinstance(t, Bandwidth):
        return t.factor if t.factor is not None else float(t.bytes_per_s)
    return t.factor  # CommScale / ComputeScale


def _with_scalar(t: Transform, x: float) -> Transform:
    if isinstance(t, Fusion):
        return Fusion(bucket_bytes=int(round(x)))
    if isinstance(t, Workers):
        return Workers(n=int(round(x)))
    if isinstance(t, Bandwidth):
        if t.factor is not None:
            return Bandwidth(factor=x)
        return Bandwidth(bytes_per_s=x, text=_format_rate(x))
    return type(t)(factor=x)


def _format_rate(bps: float) -> str:
    for unit, scale in (("Tbps", 1e12 / 8), ("Gbps", 1e9 / 8), ("Mbps", 1e6 / 8)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}B/s"


def _range(lo: Transform, hi: Transform, key: str, text: str) -> list[Transform]:
    """Doubling from ``lo`` up to ``hi`` (``hi`` included when it lands on a doubling)."""
    a, b = _scalar(lo), _scalar(hi)
    if type(lo) is not type(hi) or (
        isinstance(lo, Bandwidth) and (lo.factor is None) != (hi.factor is None)
    ):
        raise TracekitError(f"range {key}={text} mixes kinds of values; "
                           f"e.g. {_RANGE_EXAMPLES[key]}")
    if not a < b:
        raise TracekitError(
            f"range {key}={text} must go from small to large; e.g. {_RANGE_EXAMPLES[key]}"
        )
    n = int(math.floor(math.log2(b / a) + 1e-9)) + 1
    if n > MAX_SWEEP_POINTS:
        raise TracekitError(f"range {key}={text} has {n} points (max {MAX_SWEEP_POINTS}); "
                            "narrow it")
    points = [_with_scalar(lo, a * 2**i) for i in range(n)]
    if not math.isclose(a * 2 ** (n - 1), b, rel_tol=1e-9):
        points.append(hi)
    return points


def _parse_transform(part: str) -> list[Transform]:
    """One ``key=value``/``dear`` -> its values (several for a range or list)."""
    p = part.strip()
    if p.lower() == "dear":
        return [DeAR()]
    if "=" not in p:
        raise TracekitError(f"cannot read what-if {p!r}; expected one of: {KNOWN}")
    key, _, value = p.partition("=")
    key = key.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _BUILDERS:
        raise TracekitError(f"unknown what-if {key!r}; expected one of: {KNOWN}")
    value = value.strip()
    if not value:
        raise TracekitError(f"what-if {key}= has no value; e.g. {_EXAMPLES[key]}")
    build = _BUILDERS[key]
    if ".." in value:
        if key == "overlap":
            raise TracekitError("overlap takes on or off, not a range; use two --what-if options")
        lo, _, hi = value.partition("..")
        return _range(build(lo), build(hi), key, value)
    if "," in value:
        items = [v for v in value.split(",")]
        if any(not v.strip() for v in items):
            raise TracekitError(f"empty item in list {key}={value}; e.g. fusion=1MB,4MB,16MB")
        return [build(v) for v in items]
    return [build(value)]


_RANGE_EXAMPLES = {"fusion": "fusion=1MB..256MB", "bandwidth": "bandwidth=1x..8x",
                   "comm-scale": "comm-scale=0.25..1", "compute-scale": "compute-scale=0.25..1",
                   "workers": "workers=2..16", "overlap": "overlap=off"}
_EXAMPLES = {"fusion": "fusion=25MB", "overlap": "overlap=off", "bandwidth": "bandwidth=2x",
             "comm-scale": "comm-scale=0.5", "compute-scale": "compute-scale=0.5",
             "workers": "workers=8"}


def _check_combination(transforms: Iterable[Transform], text: str) -> None:
    seen: dict[type, Transform] = {}
    for t in transforms:
        if type(t) in seen:
            raise TracekitError(
                f"what-if {text!r} sets {t.label.split('=')[0]} twice; give each transform "
                "once per variant (use separate --what-if options for separate variants)"
            )
        seen[type(t)] = t
    overlap = seen.get(Overlap)
    if DeAR in seen and overlap is not None and not overlap.enabled:
        raise TracekitError(
            f"what-if {text!r} combines dear with overlap=off, but DeAR exists to overlap "
            "communication; drop one of them"
        )


def parse_spec(text: str) -> WhatIfSpec:
    """Parse one ``--what-if`` value. Raises :class:`TracekitError` saying what was
    expected, with an example, on any mistake."""
    if not text or not text.strip():
        raise TracekitError(f"empty what-if; expected one of: {KNOWN}")
    parts = text.split("+")
    if any(not p.strip() for p in parts):
        raise TracekitError(f"what-if {text!r} has an empty part around '+'; "
                            "e.g. fusion=64MB+dear")
    axes = [_parse_transform(p) for p in parts]
    n_points = math.prod(len(a) for a in axes)
    if n_points > MAX_SWEEP_POINTS:
        raise TracekitError(f"what-if {text!r} expands to {n_points} variants "
                            f"(max {MAX_SWEEP_POINTS}); narrow the ranges")
    variants = []
    for combo in itertools.product(*axes):
        _check_combination(combo, text)
        variants.append(Variant(spec="+".join(t.label for t in combo), transforms=combo))
    return WhatIfSpec(text=text.strip(), variants=tuple(variants),
                      is_sweep=any(len(a) > 1 for a in axes))


def parse_specs(texts: Iterable[str]) -> list[WhatIfSpec]:
    """Parse every ``--what-if`` option, in order."""
    return [parse_spec(t) for t in texts]
