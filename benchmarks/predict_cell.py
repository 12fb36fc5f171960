"""Re-predict measured accuracy cells: predicted vs measured speedups, no new runs.

    python benchmarks/predict_cell.py /tmp/wa_q/mlp-4gbit
    # the same cell under another version of the model (any checkout with tracekit.api):
    git worktree add /tmp/old eedae53
    PYTHONPATH=/tmp/old python benchmarks/predict_cell.py /tmp/wa_q/mlp-4gbit
    # with another calibration of the same link (e.g. one that has a newer probe)
    python benchmarks/predict_cell.py /tmp/wa_q/mlp-4gbit --comm-model cal4.json
    # several cells, each with its link's calibration, and the means over them
    python benchmarks/predict_cell.py /tmp/wa/*-*gbit --comm-model /tmp/cal-{link}.json

A cell folder is what ``benchmarks/whatif_accuracy.py`` writes: ``baseline/`` (the
profiled DDP run), ``comm.json`` (the calibration) and ``measured_jobs.json`` (the
measured rounds of every job). Prints, per DDP what-if measured there, the predicted
speedup with its interval, the measured one (pooled: ``measured_speedups.py``), the
error and whether the interval holds it, then the mean and worst |error|; then the FSDP
what-ifs measured there (``fsdp=Linear`` from the DDP baseline, ``reshard=off`` from
``baseline-fsdp/``), ``stragglers=off`` from ``baseline-imbalanced/`` with the
straggler summary names, and the share of measured speedups inside their interval.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import numpy as np
from accuracy_cells import AA, IMBALANCE, SPECS_BY_OTHER_BASELINE, SWEEP, WHAT_IFS, sweep_gap
from measured_speedups import Jobs, load_jobs, measurement_floor, pooled_median_ci

from tracekit.api import PredictionOptions, Session

#: the DDP what-ifs of issue 11's table; the FSDP what-ifs predicted from the DDP run
SPECS = tuple(s for s in WHAT_IFS if not s.startswith("fsdp="))
FSDP_FROM_DDP = tuple(s for s in WHAT_IFS if s.startswith("fsdp="))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cells", type=Path, nargs="+", metavar="cell",
                    help="cell folders of whatif_accuracy.py")
    ap.add_argument("--comm-model", default=None,
                    help="another calibration of the same link (default: the cell's "
                         "comm.json); '{link}' in it is each cell's link (mlp-4gbit: 4gbit)")
    args = ap.parse_args()
    summaries = []
    for cell in args.cells:
        if len(args.cells) > 1:
            print(f"== {cell.name}")
        link = cell.name.rsplit("-", 1)[-1]
        comm = args.comm_model.replace("{link}", link) if args.comm_model else None
        summaries.append(predict_cell(cell, Path(comm) if comm else cell / "comm.json"))
    if len(summaries) > 1:
        _print_over_cells(summaries)


def predict_cell(cell: Path, comm_model: Path) -> dict[str, float]:
    """Print one cell's table (module doc); its DDP and FSDP mean and worst |error| %."""
    measured = MeasuredCell(load_jobs(cell / "measured_jobs.json"))
    options = PredictionOptions(comm_model=str(comm_model))
    session = Session(cell / "baseline", options)
    covered: list[bool] = []  # per what-if reported: its measured speedup in its interval
    ddp = [r for r in session.what_ifs([s for s in SPECS if s in measured])]
    errors = [_report(r, measured, covered) for r in ddp]
    print(f"mean |error| {statistics.mean(errors):.1f}%, worst {max(errors):.1f}% "
          f"(the {len(errors)} DDP what-ifs)")
    sweep_gap = _sweep_gap(session, measured)
    floor = measurement_floor([measured.ci(r.spec) for r in ddp])
    print(f"measurement alone: a model without error would show mean |error| "
          f"{floor['mean_pct']:.1f}% and meet worst <= 5% with probability "
          f"{floor['p_worst_5']:.2f}; {floor['tight']} of {len(ddp)} measured CIs within "
          f"+-1.5%" + (f"; A/A {measured.describe(AA)}, sd of a round's log ratio "
                       f"{measured.round_sd(AA):.3f}" if AA in measured else ""))
    fsdp = [_report(r, measured, covered) for r in session.what_ifs(
        [s for s in FSDP_FROM_DDP if s in measured])]
    for which, specs in SPECS_BY_OTHER_BASELINE.items():
        if not (cell / which / "manifest.json").exists():
            continue
        other = Session(cell / which, options)
        errs = [_report(r, measured, covered) for r in other.what_ifs(
            [s for s in specs if s in measured])]
        if which == "baseline-fsdp":
            fsdp += errs
        else:
            named = [s.rank for s in other.summary().stragglers]
            print(f"straggler named: rank(s) {named} (given more work: rank "
                  f"{IMBALANCE.split(':')[0]})")
    if fsdp:
        print(f"FSDP what-ifs: mean |error| {statistics.mean(fsdp):.1f}%, worst "
              f"{max(fsdp):.1f}%")
    print(f"interval coverage: {sum(covered)} of {len(covered)} measured speedups inside "
          f"their predicted interval ({sum(covered) / max(len(covered), 1) * 100:.0f}%)")
    return {"ddp_mean": statistics.mean(errors), "ddp_worst": max(errors),
            "floor_mean": floor["mean_pct"], "p_worst_5": floor["p_worst_5"],
            **({"sweep_gap": sweep_gap} if sweep_gap is not None else {}),
            **({"fsdp_mean": statistics.mean(fsdp), "fsdp_worst": max(fsdp)} if fsdp else {})}


def _sweep_gap(session: Session, measured: MeasuredCell) -> float | None:
    """Print the sweep's predicted best bucket size and how much slower it measured than
    the measured best (issue 11: <= 2%); that gap in %, None when the sweep's points were
    not all measured."""
    sweep = session.what_ifs([SWEEP])[0]
    points = [spec for spec, _ in sweep.sweep]
    if not points or any(p not in measured for p in points):
        return None
    best, gap = sweep_gap({p: measured.ci(p)[0] for p in points}, sweep.best_spec)
    print(f"sweep: predicted best {sweep.best_spec}, measured best {best}, gap {gap:.1f}%")
    return gap


class MeasuredCell:
    """A cell's measured rounds (``measured_jobs.json``), each spec's pooled median and
    bootstrap CI computed once (``measured_speedups.pooled_median_ci``)."""

    def __init__(self, jobs: dict[str, Jobs]) -> None:
        self.jobs = jobs
        self._ci: dict[str, tuple[float, float, float]] = {}

    def __contains__(self, spec: str) -> bool:
        return spec in self.jobs

    def ci(self, spec: str) -> tuple[float, float, float]:
        """(median, lo, hi) of the spec's measured speedup."""
        if spec not in self._ci:
            self._ci[spec] = pooled_median_ci(self.jobs[spec])
        return self._ci[spec]

    def describe(self, spec: str) -> str:
        m, lo, hi = self.ci(spec)
        return f"{m:.3f} [{lo:.3f}-{hi:.3f}] ({sum(map(len, self.jobs[spec]))} rounds)"

    def round_sd(self, spec: str) -> float:
        """The standard deviation of a round's log ratio, over every round of every job
        (how many rounds a CI of a given width takes: README)."""
        return float(np.std(np.log(np.concatenate([np.asarray(j, dtype=float)
                                                   for j in self.jobs[spec]]))))


def _print_over_cells(summaries: list[dict[str, float]]) -> None:
    """The means over cells of each cell's mean and worst |error| (issue 11's targets are
    per cell: 3% mean and 5% worst), and how many cells meet them."""
    mean = lambda key: statistics.mean(s[key] for s in summaries if key in s)  # noqa: E731
    meet = sum(s["ddp_mean"] <= 3 and s["ddp_worst"] <= 5 for s in summaries)
    print(f"over {len(summaries)} cells: DDP what-ifs mean {mean('ddp_mean'):.2f}%, worst "
          f"{mean('ddp_worst'):.2f}% (means of the cells'); {meet} cell(s) meet 3% / 5%")
    print(f"over {len(summaries)} cells: the measurement alone would give a model without "
          f"error mean |error| {mean('floor_mean'):.2f}%, and every cell's worst <= 5% with "
          f"probability {math.prod(s['p_worst_5'] for s in summaries):.3f}")
    gaps = [s["sweep_gap"] for s in summaries if "sweep_gap" in s]
    if gaps:
        print(f"over {len(gaps)} cells: the sweep's pick measured within 2% of the best on "
              f"{sum(g <= 2 for g in gaps)}; worst gap {max(gaps):.1f}%")
    if any("fsdp_mean" in s for s in summaries):
        print(f"over {len(summaries)} cells: FSDP what-ifs mean {mean('fsdp_mean'):.2f}%, "
              f"worst {mean('fsdp_worst'):.2f}%")


def _report(r, measured: MeasuredCell, covered: list[bool]) -> float:
    """Print one what-if's line and add whether its interval holds the measured speedup
    to ``covered``; its |error| in %."""
    m = measured.ci(r.spec)[0]
    inside = r.speedup_lo <= m <= r.speedup_hi
    covered.append(inside)
    print(f"{r.spec:24} predicted {r.speedup:.3f} [{r.speedup_lo:.3f}-{r.speedup_hi:.3f}] "
          f"measured {measured.describe(r.spec)} error {(r.speedup / m - 1) * 100:+.1f}% "
          f"{'inside' if inside else 'outside'}")
    return abs(r.speedup / m - 1) * 100


if __name__ == "__main__":
    main()
