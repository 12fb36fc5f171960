"""What-if SPEC strings -> registered what-ifs (:mod:`replay.whatif.registry`).

A spec names one variant, several what-ifs combined with ``+``, or a sweep::

    fusion=4MB                    one variant: DDP buckets of 4 MiB
    fusion=64MB+dear              one variant, two what-ifs applied together
    fusion=1MB..256MB             a sweep: 1, 2, 4, ... 256 MiB (a range doubles)
    fusion=1MB,4MB,16MB           a sweep over an explicit list
    workers=2..16                 a sweep: 2, 4, 8, 16 workers
    fusion=1MB..16MB+overlap=off  a sweep where every point also turns overlap off

Grammar (case-insensitive keys and units)::

    spec      := what_if ('+' what_if)*
    what_if   := bare_key | key '=' values          (keys: see registry.known())
    values    := value | value '..' value | value (',' value)+

Units are those of :mod:`replay.whatif.values`. Before/after::

    >>> parse_spec("fusion=1MB..4MB+dear").variants
    (Variant(spec='fusion=1MB+dear', ...), Variant(spec='fusion=2MB+dear', ...),
     Variant(spec='fusion=4MB+dear', ...))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

from replay.whatif.registry import WhatIf, known, lookup
from tracekit.errors import TracekitError

#: a sweep is refused beyond this many points (a typo like 1KB..1TB would be slow)
MAX_SWEEP_POINTS = 256


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One point to predict: what-ifs applied together."""

    #: canonical text, e.g. 'fusion=4MB+dear'
    spec: str
    transforms: tuple[WhatIf, ...]

    def get(self, kind: type) -> WhatIf | None:
        """The what-if of type ``kind`` in this variant, or None."""
        return next((t for t in self.transforms if isinstance(t, kind)), None)


@dataclass(frozen=True, kw_only=True)
class WhatIfSpec:
    """One ``--what-if`` option: a single variant, or a sweep (``is_sweep``)."""

    #: the text as the user gave it
    text: str
    variants: tuple[Variant, ...]
    is_sweep: bool


def _range(lo: WhatIf, hi: WhatIf, text: str) -> list[WhatIf]:
    """Doubling from ``lo`` up to ``hi`` (``hi`` included when it lands on a doubling)."""
    key, example = lo.key, lo.range_example
    if not lo.same_kind_of_value(hi):
        raise TracekitError(f"range {key}={text} mixes kinds of values; e.g. {example}")
    a, b = lo.scalar(), hi.scalar()
    if not a < b:
        raise TracekitError(f"range {key}={text} must go from small to large; e.g. {example}")
    n = int(math.floor(math.log2(b / a) + 1e-9)) + 1
    if n > MAX_SWEEP_POINTS:
        raise TracekitError(f"range {key}={text} has {n} points (max {MAX_SWEEP_POINTS}); "
                            "narrow it")
    points = [lo.with_scalar(a * 2**i) for i in range(n)]
    if not math.isclose(a * 2 ** (n - 1), b, rel_tol=1e-9):
        points.append(hi)
    return points


def _parse_what_if(part: str) -> list[WhatIf]:
    """One ``key=value`` or bare key -> its values (several for a range or list)."""
    p = part.strip()
    key, has_value, value = p.partition("=")
    cls = lookup(key)
    if not has_value:
        if cls is not None and cls.bare:
            return [cls()]
        raise TracekitError(f"cannot read what-if {p!r}; expected one of: {known()}")
    if cls is None:
        raise TracekitError(f"unknown what-if {key.strip().lower()!r}; expected one of: "
                            f"{known()}")
    value = value.strip()
    if not value:
        raise TracekitError(f"what-if {cls.key}= has no value; e.g. {cls.example}")
    if ".." in value:
        if cls.range_example is None:
            raise TracekitError(f"{cls.key} takes {cls.syntax.partition('=')[2]}, not a range; "
                                "use separate --what-if options")
        lo, _, hi = value.partition("..")
        return _range(cls.parse(lo), cls.parse(hi), value)
    if "," in value:
        items = value.split(",")
        if any(not v.strip() for v in items):
            raise TracekitError(f"empty item in list {cls.key}={value}; e.g. "
                                f"{cls.range_example or cls.example}")
        return [cls.parse(v) for v in items]
    return [cls.parse(value)]


def _check_combination(what_ifs: Iterable[WhatIf], text: str) -> None:
    seen: list[WhatIf] = []
    for t in what_ifs:
        if any(type(s) is type(t) for s in seen):
            raise TracekitError(
                f"what-if {text!r} sets {t.key} twice; give each what-if once per variant "
                "(use separate --what-if options for separate variants)")
        seen.append(t)
    for a, b in itertools.permutations(seen, 2):
        reason = a.conflict(b)
        if reason:
            raise TracekitError(f"what-if {text!r} combines {a.label} with {b.label}, but "
                                f"{reason}; drop one of them")


def parse_spec(text: str) -> WhatIfSpec:
    """Parse one ``--what-if`` value. Raises :class:`TracekitError` saying what was
    expected, with an example, on any mistake."""
    if not text or not text.strip():
        raise TracekitError(f"empty what-if; expected one of: {known()}")
    parts = text.split("+")
    if any(not p.strip() for p in parts):
        raise TracekitError(f"what-if {text!r} has an empty part around '+'; "
                            "e.g. fusion=64MB+dear")
    axes = [_parse_what_if(p) for p in parts]
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
