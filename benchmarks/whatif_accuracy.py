"""What-if accuracy on the emulated cluster link: predicted vs measured speedups.

    python benchmarks/whatif_accuracy.py                                  # all models, 2/4/8 Gbit/s + loopback
    python benchmarks/whatif_accuracy.py --models mlp --links 4gbit       # one cell
    python benchmarks/whatif_accuracy.py --out /tmp/wa --reuse            # keep runs / measurements

Per model (``samples/workloads.py``: mlp, transformer, embed_mlp, cnn) and link rate
(``benchmarks/cluster.py``: a fresh network namespace whose loopback is shaped with tbf;
``loopback`` = unshaped, printed for reference, not a target). ``--pin`` pins each rank
to its own core in every run (``cluster.py --pin``); the model then shares each rank's
core between its own threads only. It is off by default: in a cell measured pinned (mlp,
4 Gbit/s) the rounds were as noisy as floating ones and ``fsdp=Linear`` missed by +43%.

1. calibrate the collectives on that link (``tracekit calibrate``);
2. profile a DDP baseline (DDP's defaults: 25 MB buckets, the first one 1 MB), and an
   FSDP2 baseline (``samples/train_fsdp.py``: every Linear and the root, resharding)
   for the what-ifs of an FSDP run (``reshard=off``);
3. predict, from that one run and the calibration, every what-if below, each with its
   95% prediction interval (``tracekit.api.Session``);
4. measure each, and every point of the sweep, for real with ``benchmarks/ab_worker.py``:
   the baseline and every variant trained side by side in one job, in blocks of two steps
   interleaved round by round (A B C ..., ... C B A); ``bandwidth=`` variants run the
   baseline again with the link re-shaped before their blocks. A measured speedup is the
   median of every round's baseline/variant ratio over all jobs, with a two-level
   bootstrap interval (jobs, then rounds: ``measured_speedups.py``). Jobs are repeated
   until every what-if's interval is within ``--ci`` (default ±1.5%), or ``--max-jobs``;
   the rounds are kept in ``CELL/measured_jobs.json`` (``--reuse`` adds jobs to them).
   Every DDP job also runs a second copy of the baseline, the A/A check: its measured
   speedup should be 1, and how far it is says how far the measurement itself can be off;
5. print predicted [interval], measured [CI] and the error per what-if, then per cell
   the mean and worst |error|, the interval coverage and the sweep's gap (the measured
   step of the predicted best bucket size vs the measured best's).

Targets (issue 11), on the shaped links: mean |predicted/measured - 1| <= 3% and worst
<= 5% per model and rate; sweep gap <= 2%; coverage >= 80%; baseline replay error <= 2%.
Issue 16: reshard=off, fsdp=CLASS and stragglers=off within 5% of the measured speedup,
FSDP baseline replay error <= 3%, the straggler named. ``stragglers=off`` is predicted
from a third baseline, DDP with rank 1 given 3x the batch (``train_ddp.py --imbalance
1:3``), and measured as that trainer against the balanced one (``ab_worker.py --baseline
imbalance:1:3 --variant baseline``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cluster  # noqa: E402
from accuracy_cells import (  # noqa: E402
    AA,
    BASELINES,
    FROM_OTHER_BASELINES,
    IMBALANCE,
    SPECS_BY_OTHER_BASELINE,
    SWEEP,
    WHAT_IFS,
    sweep_gap,
)
from measured_speedups import Jobs, half_width_pct, load_jobs, pooled_median_ci  # noqa: E402

from tracekit.api import PredictionOptions, Session  # noqa: E402
from tracekit.core.atomic import atomic_write  # noqa: E402

VENV = ROOT / ".venv" / "bin"
_AB = re.compile(r"ab variant=(\S+) baseline_ms=[0-9.]+ variant_ms=[0-9.]+ speedup=[0-9.]+ "
                 r"n=\d+ rounds=([0-9.,]+)")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|tbit)$")


@dataclass(kw_only=True)
class Row:
    """One what-if in one cell: prediction, measurement, error."""

    spec: str
    predicted: float
    lo: float
    hi: float
    measured: float = float("nan")
    ci_lo: float = float("nan")
    ci_hi: float = float("nan")
    jobs: int = 0

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1.0

    @property
    def covered(self) -> bool:
        return self.lo <= self.measured <= self.hi


def scaled_rate(rate: str, factor: float) -> str:
    """``'4gbit'`` x 2 -> ``'8gbit'`` (in mbit when not whole)."""
    m = _RATE.match(rate)
    if not m:
        raise SystemExit(f"cannot scale rate {rate!r}")
    mbit = float(m.group(1)) * {"bit": 1e-6, "kbit": 1e-3, "mbit": 1, "gbit": 1e3,
                                "tbit": 1e6}[m.group(2)] * factor
    return f"{mbit / 1e3:g}gbit" if mbit >= 1e3 and (mbit / 1e3).is_integer() else f"{mbit:g}mbit"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _in_link(name: str, rate: str, cmd: list[str], *, pin: bool, timeout: int = 1200
             ) -> subprocess.CompletedProcess:
    """``cmd`` in the namespace ``name``; ``pin``: each rank on its own core
    (``cluster.py --pin``)."""
    return cluster.run_in(name, cmd, rate=rate, pin=pin, env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _torchrun(*args: str) -> list[str]:
    return [str(VENV / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            *args]


def calibrate(name: str, rate: str, cell: Path, reuse: bool, *, pin: bool) -> Path:
    path = cell / "comm.json"
    if not (reuse and path.exists()):
        res = _in_link(name, rate, [str(VENV / "tracekit"), "calibrate", "--out", str(path),
                                    "--sizes", "1KB..128MB", "--iters", "100", "--",
                                    *_torchrun()], pin=pin)
        if res.returncode != 0:
            raise SystemExit(f"calibration failed on {rate}:\n{res.stderr[-2000:]}")
    return path


def profile(name: str, rate: str, model: str, cell: Path, reuse: bool,
            which: str = "baseline", *, pin: bool) -> Path:
    """Profile one of :data:`BASELINES` into ``cell/which``."""
    trainer, extra = BASELINES[which]
    run = cell / which
    if reuse and (run / "manifest.json").exists():
        return run
    if run.exists():
        shutil.rmtree(run)
    res = _in_link(name, rate, [str(VENV / "tracekit"), "profile", "--out", str(run),
                                "--wait", "2", "--warmup", "2", "--steps", "10", "--",
                                *_torchrun(f"samples/{trainer}", "--model", model,
                                           "--steps", "16", *extra)], pin=pin)
    if res.returncode != 0:
        raise SystemExit(f"profiling {model} on {rate} failed:\n{res.stderr[-2000:]}")
    return run


def predict(run: Path, comm: Path) -> tuple[Session, dict[str, Row], tuple[str, dict]]:
    """Every what-if's predicted speedup with its interval, and the sweep."""
    session = Session(run, PredictionOptions(comm_model=str(comm)))
    results = session.what_ifs([*WHAT_IFS, SWEEP])
    rows = {r.spec: Row(spec=r.spec, predicted=r.speedup, lo=r.speedup_lo, hi=r.speedup_hi)
            for r in results[:-1]}
    sweep = results[-1]
    return session, rows, (sweep.best_spec, dict(sweep.sweep))


def predict_from(run: Path, comm: Path, specs) -> tuple[Session, dict[str, Row]]:
    """What-ifs of another baseline (the FSDP run's, the imbalanced run's), each with its
    interval."""
    session = Session(run, PredictionOptions(comm_model=str(comm)))
    return session, {r.spec: Row(spec=r.spec, predicted=r.speedup, lo=r.speedup_lo,
                                 hi=r.speedup_hi) for r in session.what_ifs(list(specs))}


def straggler_named(session: Session) -> bool:
    """Whether summary names the rank given more work, and only it, as the straggler."""
    who = int(IMBALANCE.split(":")[0])
    return [s.rank for s in session.summary().stragglers] == [who]


def ab_sides(spec: str, rate: str) -> tuple[str, str]:
    """``(--baseline, --variant)`` of the ab_worker jobs that measure ``spec``."""
    if spec == AA:
        return "baseline", "baseline"
    if spec in FROM_OTHER_BASELINES:
        return FROM_OTHER_BASELINES[spec][1:]
    return "baseline", ab_variant(spec, rate)


def ab_variant(spec: str, rate: str) -> str:
    if spec.startswith("bandwidth="):
        return f"link:{scaled_rate(rate, float(spec.split('=')[1].rstrip('x')))}"
    if spec.startswith("fusion=") and spec not in WHAT_IFS:
        return f"bucket:{spec.split('=')[1].removesuffix('MB')}"
    return WHAT_IFS[spec]


def one_job(name: str, rate: str, model: str, baseline: str, specs: list[str], steps: int,
            *, pin: bool) -> dict[str, list[float]]:
    """Every spec's per-round speedups over ``baseline`` (an ab_worker side) in one
    interleaved job."""
    variants = [ab_sides(s, rate)[1] for s in specs]
    res = _in_link(name, rate, _torchrun("benchmarks/ab_worker.py", "--baseline", baseline,
                                         "--variant", ",".join(variants), "--model", model,
                                         "--steps", str(steps)), pin=pin, timeout=3600)
    found = {v: [float(x) for x in rounds.split(",")]
             for v, rounds in _AB.findall(res.stdout + res.stderr)}
    if res.returncode != 0 or set(found) != set(variants):
        raise SystemExit(f"ab job failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return {s: found[v] for s, v in zip(specs, variants)}


def _settled(jobs: Jobs, args) -> bool:
    return len(jobs) >= args.min_jobs and half_width_pct(jobs) <= args.ci


def measure_all(name: str, rate: str, model: str, specs: list[str], cache: Path,
                args) -> dict[str, tuple[float, float, float, int]]:
    """Interleaved jobs of every spec not yet settled (one job per baseline side: DDP's
    defaults, or FSDP2 for the what-ifs of an FSDP run), until each median speedup's 95%
    CI is within ``args.ci`` % (or ``args.max_jobs``): ``spec -> (median, lo, hi, jobs)``,
    pooled over every round of every job (``measured_speedups.py``)."""
    jobs = load_jobs(cache)
    while True:
        todo = [s for s in specs if not _settled(jobs.get(s, []), args)
                and len(jobs.get(s, [])) < args.max_jobs]
        if not todo:
            break
        for baseline in dict.fromkeys(ab_sides(s, rate)[0] for s in todo):
            group = [s for s in todo if ab_sides(s, rate)[0] == baseline]
            for spec, rounds in one_job(name, rate, model, baseline, group, args.steps,
                                        pin=args.pin).items():
                jobs.setdefault(spec, []).append(rounds)
            atomic_write(cache, json.dumps(jobs), what="the measured speedups")
        print(f"    {model} {rate}: {len(todo)} what-ifs measured again; not settled: "
              f"{sum(not _settled(jobs[s], args) for s in todo)}", flush=True)
    return {s: (*pooled_median_ci(jobs[s]), len(jobs[s])) for s in specs}


def run_cell(model: str, rate: str, args) -> dict:
    """Calibrate, profile, predict and measure one model on one link."""
    cell = args.out / f"{model}-{rate}"
    cell.mkdir(parents=True, exist_ok=True)
    cache = cell / "measured_jobs.json"
    if not args.reuse and cache.exists():
        cache.unlink()
    with cluster.namespace(rate) as name:
        comm = calibrate(name, rate, cell, args.reuse, pin=args.pin)
        session, rows, (best, sweep) = predict(profile(name, rate, model, cell, args.reuse,
                                                       pin=args.pin),
                                               comm)
        other = {}  # baseline folder -> its session
        for which, specs in SPECS_BY_OTHER_BASELINE.items():
            other[which], more = predict_from(
                profile(name, rate, model, cell, args.reuse, which, pin=args.pin), comm, specs)
            rows.update(more)
        wanted = [s for s in rows if not (rate == "loopback" and s.startswith("bandwidth="))]
        specs = list(dict.fromkeys([*wanted, *sweep, AA]))
        measured = measure_all(name, rate, model, specs, cache, args)
    for spec in specs:
        m = measured[spec]
        print(f"    {model} {rate} {spec}: {m[0]:.3f} [{m[1]:.3f}-{m[2]:.3f}] ({m[3]} jobs)")
    for spec in wanted:
        r = rows[spec]
        r.measured, r.ci_lo, r.ci_hi, r.jobs = measured[spec]
    fusions = {s: measured[s][0] for s in sweep}
    measured_best, gap = sweep_gap(fusions, best)
    return {"model": model, "rate": rate, "rows": [rows[s] for s in wanted],
            "baseline_error_pct": session.baseline.error_pct,
            "fsdp_baseline_error_pct": other["baseline-fsdp"].baseline.error_pct,
            "straggler_named": straggler_named(other["baseline-imbalanced"]), "sweep_best": best,
            "measured_best": measured_best, "sweep_gap_pct": gap, "sweep": sweep,
            "sweep_measured": fusions, "aa": measured[AA][:3]}


def print_cell(c: dict) -> dict:
    print(f"\n{c['model']} on {c['rate']} (baseline replay error "
          f"{c['baseline_error_pct']:+.2f}%, FSDP baseline {c['fsdp_baseline_error_pct']:+.2f}%; "
          f"straggler named {'correctly' if c.get('straggler_named') else 'WRONGLY'})")
    print(f"  {'what-if':<18} {'predicted [95% interval]':>26} {'measured [95% CI]':>26} "
          f"{'error':>8} {'in':>3}")
    errs = []
    for r in c["rows"]:
        errs.append(abs(r.error) * 100)
        print(f"  {r.spec:<18} {f'{r.predicted:.3f} [{r.lo:.3f}-{r.hi:.3f}]':>26} "
              f"{f'{r.measured:.3f} [{r.ci_lo:.3f}-{r.ci_hi:.3f}]':>26} "
              f"{r.error * 100:>+7.1f}% {'y' if r.covered else 'n':>3}")
    aa = c["aa"]
    print(f"  {'A/A check':<18} {'(1 by construction)':>26} "
          f"{f'{aa[0]:.3f} [{aa[1]:.3f}-{aa[2]:.3f}]':>26}   the baseline against a copy "
          f"of itself")
    cov = sum(r.covered for r in c["rows"]) / len(c["rows"]) * 100
    summary = {"mean_abs_error_pct": float(np.mean(errs)), "worst_abs_error_pct": max(errs),
               "coverage_pct": cov, "sweep_gap_pct": c["sweep_gap_pct"]}
    print(f"  mean |error| {summary['mean_abs_error_pct']:.1f}% (target 3), worst "
          f"{summary['worst_abs_error_pct']:.1f}% (target 5), coverage {cov:.0f}% (target 80); "
          f"sweep: predicted best {c['sweep_best']}, measured best {c['measured_best']}, "
          f"gap {c['sweep_gap_pct']:.1f}% (target 2)")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--out", type=Path, default=Path("/tmp/tracekit-whatif-accuracy"))
    ap.add_argument("--models", default="mlp,transformer,embed_mlp,cnn")
    ap.add_argument("--links", default="2gbit,4gbit,8gbit,loopback")
    ap.add_argument("--steps", type=int, default=24,
                    help="steps of each side in one job (in blocks of two)")
    ap.add_argument("--ci", type=float, default=1.5, help="stop when the 95%% CI is within "
                    "this many %% of the median speedup")
    ap.add_argument("--min-jobs", type=int, default=3)
    ap.add_argument("--max-jobs", type=int, default=12)
    ap.add_argument("--pin", action="store_true",
                    help="pin each rank to its own core in every run (cluster.py --pin)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse calibrations, baselines and measurements in --out")
    args = ap.parse_args()
    why = cluster.available()
    if why:
        raise SystemExit(f"error: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report = []
    for model in args.models.split(","):
        for rate in args.links.split(","):
            print(f"== {model} on {rate}", flush=True)
            cell = run_cell(model, rate, args)
            summary = print_cell(cell)
            report.append({**{k: v for k, v in cell.items() if k != "rows"}, **summary,
                           "rows": [asdict(r) for r in cell["rows"]]})
            atomic_write(args.out / "report.json", json.dumps(report, indent=1),
                         what="the accuracy report")
    print(f"\n{time.time() - t0:.0f} s; report in {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
