"""Interference: how overlap slows work down, behind one interface.

- :mod:`~replay.interference.model`: the :class:`InterferenceModel` interface and
  :class:`NoInterference`;
- :mod:`~replay.interference.factor`: compute slows by a factor fitted on the run while
  comm runs beside it (GPU runs: NCCL kernels take SMs);
- :mod:`~replay.interference.cores`: every thread of a host shares its cores (CPU-only
  runs: gloo's threads and the training threads compete, comm slows as well as compute);
- :mod:`~replay.interference.settle`: the one damped fixed-point loop both re-time with.

The choice is made once per run, by :func:`choose_interference`::

    >>> model = choose_interference("auto", run, graph, start_ns, end_ns)  # doctest: +SKIP
    >>> model.name                                                        # doctest: +SKIP
    'cores'
"""

from __future__ import annotations

import numpy as np

from replay.interference.cores import CoreSharing
from replay.interference.factor import FactorInterference
from replay.interference.model import InterferenceModel, NoInterference, Retimed
from tracekit.errors import TracekitError
from tracekit.graph.model import Graph

#: what ``--interference`` accepts ("auto": "cores" for CPU-only runs, else "factor")
INTERFERENCE_MODELS = ("auto", "factor", "cores", "none")

__all__ = ["INTERFERENCE_MODELS", "CoreSharing", "FactorInterference", "InterferenceModel",
           "NoInterference", "Retimed", "choose_interference", "check_interference_name"]


def check_interference_name(name: str) -> str:
    """``name`` if ``--interference`` accepts it, else a :class:`TracekitError`."""
    if name not in INTERFERENCE_MODELS:
        raise TracekitError(f"interference must be one of {', '.join(INTERFERENCE_MODELS)}, "
                            f"not {name!r}; e.g. --interference auto")
    return name


def choose_interference(name: str, run, graph: Graph, start_ns: np.ndarray,
                        end_ns: np.ndarray, *, comm_model=None) -> InterferenceModel:
    """The model ``name`` fitted on ``run``'s ``graph`` and its baseline schedule.

    ``"auto"`` picks ``"cores"`` for a CPU-only run (on CPU gloo runs it was the more
    accurate, see the README's figures) and ``"factor"`` when the run has GPU lanes.
    ``"cores"`` on a run with GPU lanes is an error: GPU kernels do not share the host's
    cores with the training threads. ``comm_model`` (a calibrated
    :class:`~replay.cost_model.CommCostModel`) tells ``"cores"`` how much of a core each
    transfer keeps busy.
    """
    check_interference_name(name)
    cpu_only = bool(graph.n_nodes) and not graph.has_gpu_lanes
    if name == "auto":
        name = "cores" if cpu_only else "factor"
    if name == "none":
        return NoInterference()
    if name == "cores":
        if not cpu_only:
            raise TracekitError(
                "--interference cores models host threads sharing CPU cores, but this run "
                "has GPU lanes (kernels slow each other on the device, not on the cores); "
                "use --interference factor or auto")
        return CoreSharing(run, graph, start_ns, end_ns, comm_model=comm_model)
    return FactorInterference(graph, start_ns, end_ns)
