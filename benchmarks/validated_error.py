"""Write ``replay/validated_error.json``: the measured error of each family of what-if,
from the reports of ``benchmarks/whatif_accuracy.py`` (see ``replay/validated_error.py``).

    python benchmarks/validated_error.py /tmp/wa_t/report.json --source "python
        benchmarks/whatif_accuracy.py --out /tmp/wa_t --models ... (2026-12-01)"
    python benchmarks/validated_error.py A/report.json B/report.json --out /tmp/table.json

Per family (the registry keys of a spec's what-ifs, sorted and joined by ``+``), over
every row of every shaped-link cell (loopback cells are left out: they are not what the
intervals are for), the split-conformal 95% quantile of ``|log(predicted / measured)|``:
the ``ceil((n + 1) * 0.95)``-th smallest of the ``n`` values (the largest when that is past
``n``). Prints the table: family, n, the width in %, the median |error|.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.validated_error import TABLE, family_of  # noqa: E402
from replay.whatif.spec import parse_spec  # noqa: E402
from tracekit.core.atomic import atomic_write  # noqa: E402


def conformal_width(errors: list[float], quantile: float) -> float:
    """The ``ceil((n + 1) q)``-th smallest of ``errors`` (the largest past ``n``)."""
    ranked = sorted(errors)
    k = math.ceil((len(ranked) + 1) * quantile)
    return ranked[min(k, len(ranked)) - 1]


def family_errors(reports: list[list[dict]]) -> dict[str, list[float]]:
    """family -> |log(predicted / measured)| of every shaped-link row."""
    out: dict[str, list[float]] = {}
    for report in reports:
        for cell in report:
            if cell.get("rate") == "loopback":
                continue
            for row in cell["rows"]:
                if not (row["predicted"] > 0 and row["measured"] > 0):
                    continue
                keys = [t.key for t in parse_spec(row["spec"]).variants[0].transforms]
                out.setdefault(family_of(keys), []).append(
                    abs(math.log(row["predicted"] / row["measured"])))
    return out


def build_table(reports: list[list[dict]], *, quantile: float, source: str) -> dict:
    fams = family_errors(reports)
    return {"source": source, "quantile": quantile, "families": {
        f: {"log_width": round(conformal_width(e, quantile), 5), "n": len(e),
            "median_abs_log_error": round(sorted(e)[len(e) // 2], 5)}
        for f, e in sorted(fams.items())}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="report.json of whatif_accuracy.py")
    ap.add_argument("--out", type=Path, default=TABLE)
    ap.add_argument("--quantile", type=float, default=0.95)
    ap.add_argument("--source", default="", help="the command that measured the reports")
    args = ap.parse_args(argv)
    reports = [json.loads(p.read_text()) for p in args.reports]
    table = build_table(reports, quantile=args.quantile,
                        source=args.source or " ".join(str(p) for p in args.reports))
    atomic_write(args.out, json.dumps(table, indent=1) + "\n", what="the validated errors")
    for fam, f in table["families"].items():
        sys.stdout.write(f"{fam:16} n={f['n']:3}  width ±{(math.exp(f['log_width']) - 1) * 100:5.1f}%"
                         f"  median |error| {(math.exp(f['median_abs_log_error']) - 1) * 100:4.1f}%\n")
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
