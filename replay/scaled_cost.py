"""A cost model on another network: the ``bandwidth=``, ``comm-scale=`` and ``workers=``
what-ifs re-time collectives with it (:mod:`replay.whatif.retiming`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from replay.cost_model import CollectiveFit, CommCostModel, CostTerms


@dataclass(kw_only=True)
class ScaledCostModel(CommCostModel):
    """Another model seen through a faster or slower network: ``bandwidth=2x``
    (``bandwidth_factor``), ``bandwidth=100Gbps`` (``bandwidth_bytes_per_s``, replaces the
    fitted bus bandwidth) and ``comm-scale=X`` (``time_factor``, multiplies both parts).

    A faster wire cannot make a transfer quicker than the CPU work it does (copies,
    reductions, socket calls: what ``tracekit calibrate`` measures as its CPU time). When
    the base model knows that share (:meth:`CommCostModel.cpu_share`), a bandwidth change
    keeps the transfer at or above it::

        gloo all-reduce of 16 MB at 8 Gbit/s: 33 ms, CPU 15 ms (share 0.45)
        bandwidth=4x: 33 / 4 = 8 ms -> 15 ms (CPU-bound from here)
    """

    base: CommCostModel
    time_factor: float = 1.0
    bandwidth_factor: float = 1.0
    bandwidth_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        self.algorithm = self.base.algorithm

    def fit_for(self, collective: str, nbytes: float, pg: str = "") -> CollectiveFit:
        return self.base.fit_for(collective, nbytes, pg)

    def _cpu_floor_ns(self, collective: str, nbytes: float, base_total: float) -> float:
        share = self.base.cpu_share(collective, nbytes)
        return min(share, 1.0) * base_total if share is not None else 0.0

    def terms(self, collective: str, nbytes: float, group_size: int, *, pg: str = "") -> CostTerms:
        t = self.base.terms(collective, nbytes, group_size, pg=pg)
        if self.bandwidth_bytes_per_s is not None:
            bw = t.moved_bytes / self.bandwidth_bytes_per_s * 1e9
        else:
            bw = t.bandwidth_ns / self.bandwidth_factor
        if bw < t.bandwidth_ns:  # a faster wire: not below the transfer's CPU time
            bw = max(bw, self._cpu_floor_ns(collective, nbytes, t.total_ns) - t.latency_ns)
        return replace(t, latency_ns=t.latency_ns * self.time_factor,
                       bandwidth_ns=bw * self.time_factor)

    def link_share(self, collective: str, nbytes: float) -> float | None:
        """The base model's (a wire-bound transfer keeps the link as busy at any rate)."""
        return self.base.link_share(collective, nbytes)

    def issue_ns(self, collective: str, nbytes: float) -> float | None:
        """The base model's (issuing is host work: the wire does not change it)."""
        return self.base.issue_ns(collective, nbytes)

    def fsdp_hook_ns(self) -> dict[str, float] | None:  # host work: the base model's
        return self.base.fsdp_hook_ns()

    def chain_ratio(self, collective: str, nbytes: float) -> float | None:
        """The base model's (a ratio of the transfer on the same link)."""
        return self.base.chain_ratio(collective, nbytes)

    def last_rank_ratio(self, collective: str, nbytes: float) -> float | None:
        """The base model's (a ratio of the transfer on the same link)."""
        return self.base.last_rank_ratio(collective, nbytes)

    def contention_sensitivity(self, nbytes: float) -> float | None:  # the base model's
        return self.base.contention_sensitivity(nbytes)

    def link_burst_ns(self) -> float:
        """The base model's bucket (bytes) at this model's wire: a large transfer's wire
        time here over the base model's, times the base model's burst."""
        burst = self.base.link_burst_ns()
        if burst <= 0:
            return burst
        terms = self.base.terms("all_reduce", float(1 << 26), 2)  # 64 MB: the wire's time
        base = terms.bandwidth_ns
        if self.bandwidth_bytes_per_s is not None:
            new = terms.moved_bytes / self.bandwidth_bytes_per_s * 1e9
        else:
            new = base / self.bandwidth_factor
        return burst * self.time_factor * (new / base if base > 0 else 1.0)

    def cpu_share(self, collective: str, nbytes: float) -> float | None:
        """The same CPU time over this model's (shorter or longer) wall time."""
        share = self.base.cpu_share(collective, nbytes)
        if share is None:
            return None
        base = self.base.time_ns(collective, nbytes, 2)
        new = self.time_ns(collective, nbytes, 2)
        return share * base / new if new > 0 else share

    @property
    def notes(self) -> list[str]:
        return self.base.notes
