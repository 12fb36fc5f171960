"""A calibration at the run's level: what ``tracekit replay --comm-model`` uses when the
run has all-reduces of its own (:class:`AnchoredCostModel`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from replay.calibration import CalibratedCostModel
from replay.cost_model import Algorithm, CollectiveFit, CommCostModel, CostTerms


@dataclass(kw_only=True)
class AnchoredCostModel(CommCostModel):
    """A calibration's shape at the run's level: what ``tracekit replay --comm-model``
    uses when the run has all-reduces of its own.

    A calibration is taken on a quiet job; during training the same collective runs
    beside compute and is slower (on a 2-core gloo run, a 1 MB all-reduce took 9 ms in
    training and 1.4 ms calibrated). So the run fixes the level where it has data and the
    calibration gives everything else::

        scale(B) = T_run(all_reduce, B) / T_cal(all_reduce, B), B clamped to the sizes
                   the run's all-reduces had
        T(c, B, n) = T_cal(c, B, n) * scale(B)

    Within the run's sizes an all-reduce costs what the run-fitted model says; other
    sizes follow the calibrated curve from the nearest end, and other collectives
    (reduce-scatter, all-gather) their calibrated cost relative to the all-reduce.
    """

    run: CommCostModel
    calibrated: CalibratedCostModel
    #: the run's all-reduce sizes (bytes) and group size
    size_range: tuple[int, int]
    group_size: int
    algorithm: Algorithm = Algorithm.RING

    def fit_for(self, collective: str, nbytes: float = 0, pg: str = "") -> CollectiveFit:
        fit = self.calibrated.fit_for(collective, nbytes, pg)
        return replace(fit, source=f"{fit.source}, scaled to the run's all-reduces")

    def cpu_share(self, collective: str, nbytes: float) -> float | None:
        """The calibration's (a transfer alone keeps the same share of a core busy)."""
        return self.calibrated.cpu_share(collective, nbytes)

    def link_share(self, collective: str, nbytes: float) -> float | None:
        """The calibration's."""
        return self.calibrated.link_share(collective, nbytes)

    def issue_ns(self, collective: str, nbytes: float) -> float | None:
        """The calibration's."""
        return self.calibrated.issue_ns(collective, nbytes)

    def fsdp_hook_ns(self) -> dict[str, float] | None:
        """The calibration's (host work)."""
        return self.calibrated.fsdp_hook_ns()

    def chain_ratio(self, collective: str, nbytes: float) -> float | None:
        """The calibration's (a ratio: the level does not change it)."""
        return self.calibrated.chain_ratio(collective, nbytes)

    def last_rank_ratio(self, collective: str, nbytes: float) -> float | None:
        """The calibration's (a ratio: the level does not change it)."""
        return self.calibrated.last_rank_ratio(collective, nbytes)

    def link_burst_ns(self) -> float:
        """The calibration's (the link's bucket does not scale with the run's level)."""
        return self.calibrated.link_burst_ns()

    def contention_sensitivity(self, nbytes: float) -> float | None:
        """The calibration's."""
        return self.calibrated.contention_sensitivity(nbytes)

    def scale(self, nbytes: float) -> float:
        b = min(max(nbytes, self.size_range[0]), self.size_range[1])
        cal = self.calibrated.time_ns("all_reduce", b, self.group_size)
        return self.run.time_ns("all_reduce", b, self.group_size) / cal if cal > 0 else 1.0

    def terms(self, collective: str, nbytes: float, group_size: int, *, pg: str = "") -> CostTerms:
        t = self.calibrated.terms(collective, nbytes, group_size, pg=pg)
        k = self.scale(nbytes)
        return replace(t, latency_ns=t.latency_ns * k, bandwidth_ns=t.bandwidth_ns * k,
                       source=f"{t.source}, scaled to the run's all-reduces")

    @property
    def notes(self) -> list[str]:
        lo, hi = self.size_range
        return [*self.calibrated.notes,
                f"calibration scaled to the run's all-reduces: x{self.scale(lo):.2f} at {lo} B,"
                f" x{self.scale(hi):.2f} at {hi} B"]


def anchor_to_run(calibrated: CalibratedCostModel, run_model, samples_bytes: list[int],
                  group_size: int) -> CommCostModel:
    """:class:`AnchoredCostModel` when the run has all-reduces, else the calibration."""
    if run_model is None or not samples_bytes or "all_reduce" not in {
            c for _, c in getattr(run_model, "fits", {})}:
        return calibrated
    return AnchoredCostModel(run=run_model, calibrated=calibrated,
                             size_range=(min(samples_bytes), max(samples_bytes)),
                             group_size=group_size, algorithm=calibrated.algorithm)
