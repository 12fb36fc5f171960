"""The variant under construction: what each what-if's :meth:`~replay.whatif.registry.WhatIf.apply`
edits, stage by stage (:mod:`replay.whatif.predict` runs the stages).

- :attr:`~replay.whatif.registry.Stage.GRADIENTS`: ``plan`` (a
  :class:`~replay.whatif.rewrite.GradientPlan`, starting as the baseline's buckets) is
  edited; the stage then writes it into ``graph`` (and ``origin``);
- ``NETWORK``: ``retiming`` (a :class:`~replay.whatif.retiming.CommRetiming`) is edited;
  the stage then re-times every comm node of ``dur_ns``;
- ``DEVICES``: ``dur_ns`` is edited directly (compute nodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tracekit.graph.fsdp import FSDPGraph
from tracekit.graph.model import Graph

if TYPE_CHECKING:
    from replay.whatif.predict import WhatIfContext
    from replay.whatif.retiming import CommRetiming
    from replay.whatif.rewrite import GradientPlan


@dataclass(kw_only=True)
class VariantEdit:
    """One variant while its what-ifs are applied (see module doc)."""

    #: everything fitted once per run (cost models, gradient sync, interference)
    ctx: WhatIfContext
    #: the variant's graph so far
    graph: Graph
    #: per node of ``graph``: the baseline node it came from (-1: created by a what-if)
    origin: np.ndarray
    #: durations of ``graph``'s nodes from the NETWORK stage on (None before)
    dur_ns: np.ndarray | None = None
    #: the gradient plan during the GRADIENTS stage (None otherwise)
    plan: GradientPlan | None = None
    #: FSDP's collectives in ``graph`` (None: none, or node ids changed since)
    fsdp: FSDPGraph | None = None
    #: the network change during the NETWORK stage (None otherwise)
    retiming: CommRetiming | None = None
    #: the link's burst credit at the variant's wire (ns), when the NETWORK stage changed
    #: it (None: the run's)
    link_burst_ns: float | None = None
    #: what was assumed, for the output
    notes: list[str] = field(default_factory=list)
