"""The model's own error, measured: how far predictions of each kind of what-if have
landed from real runs, so an interval says what tracekit has been shown to know.

A prediction interval made only of the baseline's step-to-step spread and the cost
models' fit residuals says how precisely the *model* is evaluated, not whether the
model is right. ``benchmarks/whatif_accuracy.py`` measures that: predicted against
measured speedups on the emulated cluster link, per model and link rate.
``benchmarks/validated_error.py`` turns its reports into ``validated_error.json`` beside
this module: per family of what-if (the registry keys of a variant's what-ifs, joined
by ``+``: ``fusion``, ``dear+fusion``, ``fsdp+reshard``, ...), the 95th percentile of
``|log(predicted / measured)|`` over every measured prediction of that family
(split conformal prediction: an interval that wide covered 95% of the measured runs it
was checked on; runs like them are covered as often)::

    {"source": "python benchmarks/whatif_accuracy.py --out /tmp/wa_t ...",
     "quantile": 0.95,
     "families": {"fusion": {"log_width": 0.083, "n": 60}, "dear": {...}, ...}}

Every what-if's interval is widened by its family's width (taken in quadrature with the
step spread, and in place of the cost-model term when larger: the measured error already
contains the cost model's). A family made of measured families but not measured itself
takes the widest of its parts; a what-if of a family never measured (``workers=``,
``compute=``, ``slow-rank=``) keeps the model-only interval and says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("validated_error.json")


@dataclass(frozen=True, kw_only=True)
class ValidatedError:
    """One family's measured error."""

    family: str
    #: the interval's half-width in log space (the quantile of |log(pred / measured)|)
    log_width: float
    #: measured predictions it was taken over
    n: int
    quantile: float

    def note(self) -> str:
        pct = (math.exp(self.log_width) - 1) * 100
        return (f"interval includes the measured error of {self.family} predictions: "
                f"±{pct:.1f}% ({self.quantile * 100:.0f}th percentile of {self.n} on the "
                f"emulated cluster link; replay/validated_error.py)")


def family_of(keys) -> str:
    """The family of a variant from its what-ifs' registry keys: sorted, joined by +."""
    return "+".join(sorted(dict.fromkeys(keys)))


@cache
def _table(path: Path = TABLE) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def validated_error(keys, table: dict | None = None) -> ValidatedError | None:
    """The measured error of the family of ``keys`` (see module doc); None when any part
    of it was never measured."""
    doc = _table() if table is None else table
    families = doc.get("families") or {}
    quantile = float(doc.get("quantile") or 0.95)
    family = family_of(keys)
    measured = family
    if family not in families:  # a combination: its widest measured part
        parts = family.split("+")
        if len(parts) < 2 or not all(p in families for p in parts):
            return None
        measured = max(parts, key=lambda p: float(families[p]["log_width"]))
    f = families[measured]
    return ValidatedError(family=family, log_width=float(f["log_width"]), n=int(f["n"]),
                          quantile=quantile)
