"""The interface every interference model implements, and the model that applies none.

Overlap slows work down: NCCL kernels take SMs from compute kernels on a GPU, gloo's
threads take cores from the training thread on a CPU. A what-if that changes what
overlaps must re-time for it. Each model is fitted once per run on the baseline
(:func:`replay.interference.choose_interference`) and then re-times any variant graph:

- :meth:`InterferenceModel.cost_fit_graph`: the graph whose comm durations the collective
  cost models are fitted on (the core model takes the baseline's sharing out of them);
- :meth:`InterferenceModel.retime`: a variant's durations for the overlap its own
  schedule produces, given which baseline node each of its nodes came from.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from tracekit.graph.model import Graph

#: ``durations -> (start_ns, end_ns)`` of a variant graph (the replay engine)
Scheduler = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: a variant whose makespan still moved more than this in its last pass gets a note
SETTLE_TOLERANCE = 0.02


@dataclass(frozen=True, kw_only=True)
class Retimed:
    """A variant's durations after interference, with what to tell the user."""

    dur_ns: np.ndarray
    notes: list[str] = field(default_factory=list)


class InterferenceModel(ABC):
    """How overlap slows work down in one run (see module doc)."""

    #: the value ``--interference`` takes for this model
    name: ClassVar[str]
    #: notes about the fit, printed once per prediction run
    notes: list[str]

    @abstractmethod
    def describe(self) -> str:
        """One line for the output: what the model is and what was fitted."""

    def cost_fit_graph(self, graph: Graph) -> Graph:
        """The graph the collective cost models are fitted on (default: as measured)."""
        return graph

    def comm_contention(self, graph: Graph) -> np.ndarray:
        """Per node of the baseline ``graph``, the slowdown inside its measured duration
        that :meth:`retime` applies again by itself (default 1: none). A what-if that
        times a new collective from a measured one divides this out, so the new one is
        not slowed twice."""
        return np.ones(graph.n_nodes)

    def settle_notes(self, what: str, last_change: float) -> list[str]:
        """A note when the variant's makespan still moved in its last settle pass."""
        if last_change <= SETTLE_TOLERANCE:
            return []
        return [f"{what} did not settle: the step still moved {last_change * 100:.1f}% in "
                "the last pass"]

    @abstractmethod
    def retime(self, graph: Graph, origin: np.ndarray, schedule: Scheduler) -> Retimed:
        """Durations of the variant ``graph`` (its current ``dur_ns``) re-timed for the
        overlap of its own schedule. ``origin[v]`` is the baseline node that variant node
        ``v`` came from, -1 for nodes a what-if created."""


class NoInterference(InterferenceModel):
    """``--interference none``: durations as the what-ifs set them (for tests and
    comparisons; every real prediction applies a model)."""

    name = "none"

    def __init__(self) -> None:
        self.notes = []

    def describe(self) -> str:
        return "interference: not applied"

    def retime(self, graph: Graph, origin: np.ndarray, schedule: Scheduler) -> Retimed:
        return Retimed(dur_ns=graph.dur_ns)


def from_origin(values: np.ndarray, origin: np.ndarray, default: float) -> np.ndarray:
    """Per variant node, the baseline node's value, or ``default`` for new nodes."""
    return np.where(origin >= 0, values[np.maximum(origin, 0)], default)
