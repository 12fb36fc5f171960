"""``workers=N``: the same job on N ranks (data parallel, weak scaling).

Every collective is re-timed for a group of N with the ring/tree formulas of
:mod:`replay.cost_model` (latency ``steps(N) * alpha``, bandwidth
``moved_bytes(N) / beta``, ``alpha``/``beta`` fitted from the run or calibrated), by the
ratio ``T(N) / T(n)`` applied to each comm node's measured transfer. Per-rank work is
unchanged (the per-rank batch stays the same), and the recorded ranks stand in for all
N: stragglers and skew among the extra ranks are not modeled.

Before/after (ring all-reduce of B bytes, 2 -> 8 ranks)::

    T(2) = 2 alpha + 1.0 B / beta      T(8) = 14 alpha + 1.75 B / beta
"""

from __future__ import annotations

from replay.whatif.scale import CommRetiming
from replay.whatif.spec import Workers


def retime_workers(retiming: CommRetiming, t: Workers, world: int) -> list[str]:
    retiming.group_size = t.n
    return [f"workers={t.n}: collectives re-timed from {world} to {t.n} ranks by the ring "
            "formulas; per-rank compute unchanged (weak scaling)"]
