"""Compare a JSON document with a checked-in reference, field by field, with tolerances.

Used by ``tests/test_references.py`` (TraceLens-style reference outputs). The documents
compared are the ``--json`` outputs of ``tracekit summary`` and ``tracekit replay`` on the
recorded runs in ``tests/data``.

Rules (:func:`compare`):

- numbers (int or float, not bool) match when ``|got - ref| <= abs_tol + rel * |ref|``
  (defaults ``rel=1e-6``, ``abs_tol=1e-9``): the outputs are deterministic for the same
  input, the tolerance only absorbs floating-point noise between platforms. NaN matches
  NaN, an infinity matches the same infinity.
- strings, bools and None must be equal (notes are compared as-is, word for word).
- objects: missing and extra keys are reported, then every common key is compared.
- lists: item by item; a length difference is reported with the missing / extra items.

Every difference is one line naming the field by its path, e.g.::

    what_ifs[2].speedup: reference 1.0423, got 1.0611 (+1.81%)
    what_ifs[3].best: missing (reference 'fusion=2MB')
    baseline.new_field: extra key (got 3.5)

Normalization (:func:`normalize`), applied to both the fresh output and (already) the
checked-in file: every occurrence of a given absolute path prefix in any string becomes a
placeholder (``<data>``), so output that names an input file does not depend on where
the checkout lives. Nothing else in these documents varies between runs: they hold no
wall-clock times of the run itself, no dates, no tool or library versions, no process
ids other than the recorded traces' own thread ids (fixed by the input). The one input
that depends on the machine, the core count the CPU core-sharing what-if model assumes
when a run's manifest does not record it, is pinned by the test (a fixture), not
normalized away.
"""

from __future__ import annotations

import math
from typing import Any

REL_TOL = 1e-6
ABS_TOL = 1e-9


def normalize(doc: Any, replacements: dict[str, str]) -> Any:
    """``doc`` with every ``old`` substring of every string (keys included) replaced by
    ``new``, for each ``old -> new`` in ``replacements`` (longest ``old`` first)."""
    order = sorted(replacements, key=len, reverse=True)

    def fix(s: str) -> str:
        for old in order:
            s = s.replace(old, replacements[old])
        return s

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return fix(v)
        if isinstance(v, dict):
            return {fix(k): walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(doc)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _show(v: Any) -> str:
    if _is_number(v):
        return f"{v:.10g}"
    text = repr(v)
    return text if len(text) <= 120 else text[:117] + "..."


def numbers_match(ref: float, got: float, rel: float = REL_TOL, abs_tol: float = ABS_TOL) -> bool:
    """The tolerance rule for one pair of numbers (see the module docstring)."""
    if math.isnan(ref) or math.isnan(got):
        return math.isnan(ref) and math.isnan(got)
    if math.isinf(ref) or math.isinf(got):
        return ref == got
    return abs(got - ref) <= abs_tol + rel * abs(ref)


def _number_line(path: str, ref: float, got: float) -> str:
    line = f"{path}: reference {_show(ref)}, got {_show(got)}"
    if ref and math.isfinite(ref) and math.isfinite(got):
        line += f" ({(got - ref) / abs(ref) * 100:+.3g}%)"
    elif math.isfinite(ref) and math.isfinite(got):
        line += f" ({got - ref:+.3g})"
    return line


def compare(ref: Any, got: Any, *, rel: float = REL_TOL, abs_tol: float = ABS_TOL,
            path: str = "") -> list[str]:
    """One line per difference between ``ref`` (the reference) and ``got``; [] if none."""
    where = path or "<document>"
    if _is_number(ref) and _is_number(got):
        return [] if numbers_match(ref, got, rel, abs_tol) else [_number_line(where, ref, got)]
    if isinstance(ref, dict) and isinstance(got, dict):
        out = []
        for k in ref:
            if k not in got:
                out.append(f"{_join(path, k)}: missing (reference {_show(ref[k])})")
        for k in got:
            if k not in ref:
                out.append(f"{_join(path, k)}: extra key (got {_show(got[k])})")
        for k in ref:
            if k in got:
                out += compare(ref[k], got[k], rel=rel, abs_tol=abs_tol, path=_join(path, k))
        return out
    if isinstance(ref, list) and isinstance(got, list):
        out = []
        if len(ref) != len(got):
            out.append(f"{where}: reference has {len(ref)} items, got {len(got)}")
        for i, (a, b) in enumerate(zip(ref, got)):
            out += compare(a, b, rel=rel, abs_tol=abs_tol, path=f"{path}[{i}]")
        for i in range(len(got), len(ref)):
            out.append(f"{path}[{i}]: missing (reference {_show(ref[i])})")
        for i in range(len(ref), len(got)):
            out.append(f"{path}[{i}]: extra item (got {_show(got[i])})")
        return out
    if type(ref) is type(got) and ref == got:
        return []
    if _is_number(ref) or _is_number(got) or type(ref) is not type(got):
        return [f"{where}: reference {_show(ref)} ({type(ref).__name__}), "
                f"got {_show(got)} ({type(got).__name__})"]
    return [f"{where}: reference {_show(ref)}, got {_show(got)}"]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def format_diff(name: str, lines: list[str], limit: int = 60) -> str:
    """A failure message: a header and the first ``limit`` difference lines."""
    head = f"{name}: {len(lines)} field(s) differ from the reference"
    body = lines[:limit]
    if len(lines) > limit:
        body.append(f"... and {len(lines) - limit} more")
    hint = ("(if the change is intended, regenerate with "
            "'pytest tests/test_references.py --update-references' and review the diff)")
    return "\n".join([head, *("  " + ln for ln in body), hint])
