"""Calibrated collective costs: measure the cluster once, reuse the file for every replay.

``tracekit calibrate -- torchrun --nproc_per_node 2`` runs ``collectors/calibrate_worker.py``
on every rank (nccl-tests style: warm-up, then timed calls after a barrier, median of the
repeats), then :func:`build_comm_model` fits, per collective, one ``(alpha, beta)`` line
per size range (between neighbouring measured sizes, through the medians made
non-decreasing in size), in the same
``steps * alpha + moved_bytes / beta`` form as :mod:`replay.cost_model`, so a calibration
taken on ``n`` ranks still re-times collectives for ``workers=N``.

``comm.json`` (``format`` ``tracekit-comm-model``, ``version`` 1)::

    {"format": "tracekit-comm-model", "version": 1, "backend": "gloo", "world_size": 2,
     "device": "cpu", "torch": "2.13.0", "hosts": ["a", "a"], "command": [...],
     "collectives": {
       "all_reduce": {
         "group_size": 2,
         "points": [{"bytes": 1024, "median_ns": 512000, "p10_ns": ..., "p90_ns": ...,
                     "iters": 20, "fit_ns": 512000, "cpu_ns": 130000,
                     "cpu_share": 0.25, "issue_ns": 30000}, ...],
         "segments": [{"min_bytes": 1024, "max_bytes": 2048, "alpha_ns": 250000.0,
                       "beta_bytes_per_s": 1.1e9, "r2": 1.0, "n_points": 2}, ...],
         "overall": {"alpha_ns": ..., "beta_bytes_per_s": ..., "r2": 0.99,
                     "median_rel_residual": 0.12}},
       ...},
     "fsdp_hooks": {"units": 8, "forward_ns": 520000, "backward_ns": 760000, ...},
     "raw": [ ...the worker's measurements, every rank and iteration... ]}

``fsdp_hooks`` (absent in older files) is FSDP2's own host time per unit and step
(:mod:`collectors.fsdp_hooks`), which ``fsdp=CLASS`` adds to every unit it plans;
``link_credit`` the link's burst credit (:mod:`replay.link_credit`); ``contention`` how
much a transfer slows while the training threads keep every core busy
(:mod:`replay.contention_probe`).

:func:`load_comm_model` reads it into a :class:`CalibratedCostModel`, which answers
``time_ns(collective, bytes, group_size)`` like the run-fitted model and takes
precedence over it (``tracekit replay --comm-model comm.json``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replay.calibration_fit import fit_measurements
from replay.contention_probe import contention_note, sensitivity, summarize_contention
from replay.cost_model import (
    Algorithm,
    CollectiveFit,
    CommCostModel,
    CostTerms,
    interp_log_size,
)
from replay.interference.cores import cpu_pools, transfer_cpu_slowdown
from replay.link_credit import credit_note, summarize_link_credit
from tracekit.core.atomic import atomic_write_json
from tracekit.core.collectives import normalize_collective
from tracekit.errors import TracekitError
from tracekit.log import get_logger

log = get_logger(__name__)

FORMAT = "tracekit-comm-model"
VERSION = 1
COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast")
#: 1 KB .. 256 MB, doubling (19 sizes), all five collectives
DEFAULT_SIZES = "1KB..256MB"
#: timed calls per size at most (DEFAULT_BUDGET_S caps the large ones): with 20, a small
#: size's median was only known within +-30% (1 MB all-reduce at 8 Gbit/s: 95% bootstrap
#: interval 1.81-3.82 ms) and two calibrations of one link differed by 6.0% per point
#: (median); with 100, 3.9%, and a 4 Gbit/s calibration takes 233 s instead of 115
DEFAULT_ITERS = 100
#: seconds of timed calls per (collective, size); large sizes run fewer calls (>= 3)
DEFAULT_BUDGET_S = 0.5


def build_comm_model(raw: dict[str, Any], *, command: list[str] | None = None) -> dict[str, Any]:
    """The full ``comm.json`` document from the worker's raw measurements."""
    return {
        "format": FORMAT, "version": VERSION,
        "backend": raw.get("backend", ""), "world_size": int(raw["world_size"]),
        "device": raw.get("device", ""), "torch": raw.get("torch", ""),
        "hosts": raw.get("hosts", []), "cpu_cores": raw.get("cpu_cores"),
        "cpu_sets": raw.get("cpu_sets"),
        "command": command or [],
        "collectives": fit_measurements(raw), "raw": raw["measurements"],
        **({"fsdp_hooks": raw["fsdp_hooks"]} if raw.get("fsdp_hooks") else {}),
        **({"link_credit": credit} if (credit := summarize_link_credit(
            raw.get("link_credit") or {})) else {}),
        **({"contention": probe} if (probe := summarize_contention(
            raw.get("contention") or {})) else {}),
    }


# --------------------------------------------------------------------------- the model


@dataclass(kw_only=True)
class CalibratedCostModel(CommCostModel):
    """Collective costs from a ``comm.json``; same interface as the run-fitted model."""

    path: str
    doc: dict[str, Any]
    algorithm: Algorithm = Algorithm.RING
    _fits: dict[str, list[CollectiveFit]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        backend, world = self.doc.get("backend", ""), self.doc.get("world_size", "?")
        for coll, sec in self.doc["collectives"].items():
            fits = []
            for seg in sec["segments"]:
                beta = seg.get("beta_bytes_per_s")
                fits.append(CollectiveFit(
                    collective=coll, pg="", alpha_ns=float(seg["alpha_ns"]),
                    beta_bytes_per_s=float(beta) if beta else math.inf,
                    source=f"calibrated ({backend}, {world} ranks)",
                    n_points=int(seg["n_points"]), n_sizes=int(seg["n_points"]),
                    group_sizes=(int(sec["group_size"]),),
                    size_range=(int(seg["min_bytes"]), int(seg["max_bytes"])),
                    r2=float(seg["r2"]) if seg.get("r2") is not None else float("nan"),
                ))
            if fits:
                self._fits[coll] = fits

    @property
    def backend(self) -> str:
        return str(self.doc.get("backend", ""))

    @property
    def collectives(self) -> list[str]:
        return list(self._fits)

    def fit_for(self, collective: str, nbytes: float = 0, pg: str = "") -> CollectiveFit:
        fits = self._fits.get(collective)
        source = ""
        if fits is None:
            ref = next((c for c in COLLECTIVES if c in self._fits), None)
            if ref is None:
                raise TracekitError(f"{self.path}: calibration file has no collectives; "
                                    "re-run 'tracekit calibrate'")
            fits = self._fits[ref]
            source = f"extrapolated from calibrated {ref} by formula"
        fit = fits[-1]
        for f in fits:
            if nbytes <= f.size_range[1]:
                fit = f
                break
        if source:
            fit = replace(fit, collective=collective, source=source)
        return fit

    def _reference(self, collective: str) -> str:
        if collective in self._fits:
            return collective
        return next((c for c in COLLECTIVES if c in self._fits), collective)

    def terms(self, collective: str, nbytes: float, group_size: int, *, pg: str = "") -> CostTerms:
        """Within the measured sizes, the time at the calibrated group size is the
        straight-line interpolation between the two neighbouring measured sizes (exact at
        each); the segment's ``alpha``/``beta`` (kept non-negative) split it into latency
        and bandwidth and carry it to other group sizes and to collectives derived by
        formula. Outside the measured sizes the end segments' lines extend."""
        coll = collective if collective in COLLECTIVES else normalize_collective(collective)
        line = super().terms(coll, nbytes, group_size, pg=pg)
        ref = self._reference(coll)
        sec = self.doc["collectives"].get(ref)
        if sec is None:
            return line
        pts = sorted((p["bytes"], p.get("fit_ns", p["median_ns"])) for p in sec["points"])
        xs = np.array([b for b, _ in pts], dtype=float)
        if not xs[0] <= nbytes <= xs[-1]:
            return line
        exact = float(np.interp(nbytes, xs, [t for _, t in pts]))
        at_cal = super().terms(ref, nbytes, int(sec["group_size"]), pg=pg).total_ns
        scale = exact / at_cal if at_cal > 0 else 1.0
        return replace(line, latency_ns=line.latency_ns * scale,
                       bandwidth_ns=line.bandwidth_ns * scale)

    def _points(self, collective: str, key: str) -> list[tuple[int, float]]:
        """``(bytes, point[key])`` of the measured points that have ``key``, of
        ``collective`` or, when it was not calibrated, of its reference."""
        coll = collective if collective in COLLECTIVES else normalize_collective(collective)
        sec = self.doc["collectives"].get(self._reference(coll or "all_reduce")) or {}
        return [(p["bytes"], p[key]) for p in sec.get("points", []) if p.get(key) is not None]

    def cpu_share(self, collective: str, nbytes: float) -> float | None:
        """CPU time over wall time of one transfer of ``nbytes`` running alone: the measured
        points' ``cpu_share`` interpolated in log size (the nearest end outside them);
        a collective not calibrated takes its reference's; None for a ``comm.json``
        written before CPU times were recorded."""
        return interp_log_size(self._points(collective, "cpu_share"), nbytes)

    def issue_ns(self, collective: str, nbytes: float) -> float | None:
        """How long the calling thread takes to issue one call of ``nbytes``: the measured
        points' ``issue_ns``, linear in size between them (host work such as a copy of
        the buffer grows with it), the nearest end's below them and in proportion above;
        a collective not calibrated takes its reference's; None for a ``comm.json``
        written before issue times were recorded."""
        pts = sorted(self._points(collective, "issue_ns"))
        if not pts:
            return None
        if nbytes > pts[-1][0]:
            return pts[-1][1] * nbytes / pts[-1][0]
        return float(np.interp(nbytes, [b for b, _ in pts], [v for _, v in pts]))

    def chain_ratio(self, collective: str, nbytes: float) -> float | None:
        """What one call of ``nbytes`` costs a caller that waits for each before issuing
        the next, over the calibrated transfer (``chain_ratio`` of the measured points,
        interpolated in log size): issuing, the transfer's mean with its tail, waiting for
        the last rank and resuming. None for a ``comm.json`` written without chains."""
        return interp_log_size(self._points(collective, "chain_ratio"), nbytes)

    def last_rank_ratio(self, collective: str, nbytes: float) -> float | None:
        """How much longer than the calibrated transfer a call of ``nbytes`` takes until
        its last rank has the result (``last_ratio`` of the measured points, interpolated
        in log size, at least 1); None for a ``comm.json`` written without the ranks' end
        times, or calibrated across hosts."""
        ratio = interp_log_size(self._points(collective, "last_ratio"), nbytes)
        return None if ratio is None else max(ratio, 1.0)

    def fsdp_hook_ns(self) -> dict[str, float] | None:
        """FSDP2's host time per unit and step, ``{"forward": ns, "backward": ns}``, as
        ``tracekit calibrate`` measured it; None for a file without it."""
        hooks = self.doc.get("fsdp_hooks")
        if not isinstance(hooks, dict):
            return None
        try:
            return {"forward": float(hooks["forward_ns"]), "backward": float(hooks["backward_ns"])}
        except (KeyError, TypeError, ValueError):
            return None

    def link_burst_ns(self) -> float:
        """The burst credit ``tracekit calibrate`` measured (``link_credit``), ns."""
        credit = self.doc.get("link_credit")
        try:
            return max(float(credit["burst_s"]), 0.0) * 1e9 if credit else 0.0
        except (KeyError, TypeError, ValueError):
            return 0.0

    def link_share(self, collective: str, nbytes: float) -> float | None:
        """The share of the link one transfer of ``nbytes`` keeps busy (0..1), from the
        all-reduces timed two at a time: two transfers that each keep the link busy a
        share ``L`` of their time take ``max(1, 2 L)`` times as long side by side, so
        ``L = ratio / 2`` once the CPU sharing the pair adds (core sharing's own model,
        :func:`~replay.interference.cores.transfer_cpu_slowdown`, for CPU share ``s`` and
        the transfers' threads on the rank's cores) is taken out. None without pair timings or core counts."""
        sec = self.doc["collectives"].get("all_reduce") or {}
        cores, per_pool = self._pools()
        if not cores:
            return None
        pts = []
        for p in sec.get("points", []):
            if p.get("pair_ratio") is None or p.get("cpu_share") is None:
                continue
            s = min(float(p["cpu_share"]), 1.0)
            cpu_alone = transfer_cpu_slowdown(s, per_pool * s, cores)
            cpu_pair = transfer_cpu_slowdown(s, 2 * per_pool * s, cores)
            pts.append((p["bytes"], min(max(p["pair_ratio"] * cpu_alone / cpu_pair / 2.0,
                                            0.0), 1.0)))
        return interp_log_size(pts, nbytes)

    def _pools(self) -> tuple[int, float]:
        """The calibration's cores per rank and how many ranks shared them ((0, 0) when
        not recorded)."""
        cores = self.doc.get("cpu_cores")
        hosts = self.doc.get("hosts") or []
        if not cores or not hosts:
            return 0, 0.0
        pools = cpu_pools(hosts, self.doc.get("cpu_sets"))
        return int(cores), len(pools) / max(len(set(pools)), 1)

    def _contention(self) -> tuple[list[dict[str, Any]], list[float | None]]:
        """The probe's entries (an older file's single entry as a list) and each one's
        sensitivity ``k``."""
        entries = self.doc.get("contention") or []
        entries = [entries] if isinstance(entries, dict) else list(entries)
        cores, per_pool = self._pools()
        ks = [sensitivity(e, self.cpu_share("all_reduce", float(e.get("bytes", 0))),
                          per_pool, cores) if cores else None for e in entries]
        return entries, ks

    def contention_sensitivity(self, nbytes: float) -> float | None:
        """How hard a transfer of ``nbytes`` slows beside busy cores
        (:mod:`replay.contention_probe`): the probed sizes' ``k``, in log size between
        them; None for a file without a probe."""
        entries, ks = self._contention()
        return interp_log_size([(e.get("bytes", 0), k) for e, k in zip(entries, ks)
                            if k is not None], nbytes)

    def median_ns(self, collective: str) -> pd.Series:
        """Measured median transfer time by size (bytes -> ns) for one collective."""
        pts = self.doc["collectives"].get(collective, {}).get("points", [])
        return pd.Series({p["bytes"]: p["median_ns"] for p in pts}, dtype=float)

    @property
    def notes(self) -> list[str]:
        out = [f"collective costs from {self.path} ({self.backend}, "
               f"{self.doc.get('world_size')} ranks, {self.doc.get('device', '')})"]
        for coll, fits in self._fits.items():
            lo, hi = fits[0].size_range[0], fits[-1].size_range[1]
            line = f"{coll}: {len(fits) + 1} sizes {lo}..{hi} B, interpolated"
            overall = self.doc["collectives"][coll].get("overall") or {}
            if overall.get("r2") is not None:
                beta = overall.get("beta_bytes_per_s")
                bw = f"{beta / 1e9:.3g} GB/s" if beta else "inf"
                line += (f"; one line over all sizes: {overall['alpha_ns'] / 1e3:.3g} us/step, "
                         f"{bw}, R^2 {overall['r2']:.3f}, median residual "
                         f"{overall['median_rel_residual'] * 100:.0f}%")
            out.append(line)
        return [*out, *self.link_notes]

    @property
    def link_notes(self) -> list[str]:
        """The burst credit's and the contention probe's lines (those measured)."""
        lines = [credit_note(self.doc.get("link_credit")), contention_note(*self._contention())]
        return [n for n in lines if n]


def load_comm_model(path: str | Path, *, algorithm: Algorithm | str = Algorithm.RING
                    ) -> CalibratedCostModel:
    """Read a ``comm.json`` written by ``tracekit calibrate``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise TracekitError("no such calibration file; create one with 'tracekit calibrate "
                            "--out comm.json -- torchrun --nproc_per_node 2'", path=str(p)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TracekitError(f"calibration file is not valid JSON ({exc}); re-run "
                            "'tracekit calibrate'", path=str(p)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TracekitError(f"not a tracekit calibration file (expected format {FORMAT!r}); "
                            "pass the comm.json written by 'tracekit calibrate'", path=str(p))
    if doc.get("version") != VERSION:
        raise TracekitError(f"calibration file version {doc.get('version')!r} is not "
                            f"supported (this tracekit reads {VERSION}); re-run "
                            "'tracekit calibrate'", path=str(p))
    try:
        return CalibratedCostModel(path=str(p), doc=doc, algorithm=Algorithm(algorithm))
    except (KeyError, TypeError, ValueError) as exc:
        raise TracekitError(f"calibration file is malformed ({exc!r}); re-run "
                            "'tracekit calibrate'", path=str(p)) from None


def calibration_table(model: CalibratedCostModel) -> pd.DataFrame:
    """Median transfer time (us) per size (rows) and collective (columns), plus
    ``rs_over_half_ar``: reduce-scatter time / (all-reduce time / 2) at the same size (a
    ring implementation gives ~1; gloo gives far more)."""
    cols = {c: model.median_ns(c) / 1e3 for c in model.collectives}
    table = pd.DataFrame(cols)
    table.index.name = "bytes"
    if "reduce_scatter" in table and "all_reduce" in table:
        table["rs_over_half_ar"] = table["reduce_scatter"] / (table["all_reduce"] / 2)
    return table


# --------------------------------------------------------------------------- running


def parse_sizes(text: str) -> list[int]:
    """``'1KB..256MB'`` (doubling), ``'1KB,1MB,64MB'`` or a mix -> sizes in bytes."""
    from replay.whatif.fusion import Fusion
    from replay.whatif.spec import parse_spec

    try:
        spec = parse_spec(f"fusion={text}")
    except TracekitError as exc:
        raise TracekitError(f"cannot read --sizes {text!r} ({exc}); e.g. --sizes 1KB..256MB "
                            "or --sizes 1KB,1MB,64MB") from None
    return sorted({v.get(Fusion).bucket_bytes for v in spec.variants})


def worker_path() -> Path:
    """Where ``collectors/calibrate_worker.py`` is (it is run as a script)."""
    path = Path(__file__).resolve().parent.parent / "collectors" / "calibrate_worker.py"
    if not path.exists():
        raise TracekitError(f"calibration worker not found at {path}; reinstall tracekit "
                            "with its collectors package")
    return path


def _resolve_launcher(launcher: list[str]) -> list[str]:
    if not launcher:
        raise TracekitError("no launcher given; put it after '--', e.g. "
                            "tracekit calibrate -- torchrun --nproc_per_node 2")
    exe = launcher[0]
    if os.sep not in exe and shutil.which(exe) is None:
        beside = Path(sys.executable).parent / exe
        if beside.exists():
            return [str(beside), *launcher[1:]]
        raise TracekitError(f"launcher {exe!r} not found on PATH; install torch in this "
                            "environment or give the full path")
    return list(launcher)


def run_calibration(
    launcher: list[str],
    *,
    sizes: list[int],
    iters: int = DEFAULT_ITERS,
    collectives: tuple[str, ...] = COLLECTIVES,
    budget_s: float = DEFAULT_BUDGET_S,
    backend: str = "",
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run the worker under ``launcher`` and return the fitted ``comm.json`` document.

    The worker's progress lines go to this process's stderr as they come.
    """
    unknown = [c for c in collectives if c not in COLLECTIVES]
    if unknown:
        raise TracekitError(f"cannot calibrate {unknown[0]!r}; choose from "
                            + ", ".join(COLLECTIVES))
    if not sizes:
        raise TracekitError("no sizes to measure; e.g. --sizes 1KB..256MB")
    cmd = _resolve_launcher(launcher)
    with tempfile.TemporaryDirectory(prefix="tracekit-calibrate-") as tmp:
        raw_path = Path(tmp) / "raw.json"
        full = [*cmd, str(worker_path()), "--out", str(raw_path),
                "--sizes", ",".join(str(s) for s in sizes), "--iters", str(iters),
                "--collectives", ",".join(collectives), "--budget-s", str(budget_s)]
        if backend:
            full += ["--backend", backend]
        log.info("running %s", " ".join(full))
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
        try:
            proc = subprocess.run(full, env=env, timeout=timeout_s, check=False)
        except FileNotFoundError:
            raise TracekitError(f"cannot start launcher {cmd[0]!r}; check the command after "
                                "'--'") from None
        except subprocess.TimeoutExpired:
            raise TracekitError(f"calibration did not finish within {timeout_s:.0f} s; use "
                                "fewer --sizes or a smaller --iters") from None
        if proc.returncode != 0 or not raw_path.exists():
            raise TracekitError(
                f"calibration worker failed (exit code {proc.returncode}); see its output "
                "above. The launcher must start it on every rank, e.g. -- torchrun "
                "--nproc_per_node 2"
            )
        raw = json.loads(raw_path.read_text())
    return build_comm_model(raw, command=full)


def write_comm_model(doc: dict[str, Any], out: str | Path) -> Path:
    """Write a ``comm.json`` document atomically."""
    out = Path(out)
    atomic_write_json(out, doc, what="the cost model", fix="choose another path with --out",
                      parents=True)
    return out
