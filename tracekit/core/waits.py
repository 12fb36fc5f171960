"""Operators that block their thread until communication finished.

Two kinds, one list each:

- **wait ops** (:data:`WAIT_OP`): they issue nothing and return when communication
  issued earlier finished: ``c10d::wait`` (``Work.wait()``), ``aten::wait``, the
  functional collectives' ``wait_tensor`` (``_c10d_functional::wait_tensor``,
  ``c10d_functional::wait_tensor``) and ``*::_wait``. The graph makes them SYNC nodes and
  orders them after the transfer they wait for.
- **blocking collectives** (:data:`BLOCKING_COLLECTIVES`): ``c10d::barrier`` and
  ``c10d::monitored_barrier_`` issue a collective *and* block until it finished. The
  graph keeps them as collective issue ops; for the time breakdown their time is
  waiting, like a wait op's.

Neither is compute (:func:`waits_for_comm`). In torch 2.13 gloo traces DDP's bucket waits
and ``Work.wait()`` record no operator at all: they are gaps on the main thread.

Before / after::

    name                              is_wait_op   waits_for_comm
    c10d::wait                        True         True
    _c10d_functional::wait_tensor     True         True
    c10d::barrier                     False        True
    c10d::allreduce_                  False        False
    aten::mm                          False        False
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

#: names of wait ops (``search``, case-insensitive)
WAIT_OP = re.compile(r"wait_tensor|^c10d::wait|^aten::wait|::_wait", re.IGNORECASE)
#: collectives whose issue op blocks until the collective finished
BLOCKING_COLLECTIVES: frozenset[str] = frozenset({"c10d::barrier", "c10d::monitored_barrier_"})


def is_wait_op(names: Sequence[str] | np.ndarray) -> np.ndarray:
    """Per name: is it a wait op (:data:`WAIT_OP`)?"""
    return _per_name(names, lambda n: WAIT_OP.search(n) is not None)


def waits_for_comm(names: Sequence[str] | np.ndarray) -> np.ndarray:
    """Per name: does the op only wait for communication (a wait op or a blocking
    collective), so that its time is not compute?"""
    return _per_name(names, lambda n: n in BLOCKING_COLLECTIVES or WAIT_OP.search(n) is not None)


def _per_name(names, test) -> np.ndarray:
    """``test`` once per distinct name, spread back to every entry."""
    arr = np.asarray(names, dtype=object).astype(str)
    if len(arr) == 0:
        return np.zeros(0, dtype=bool)
    uniques, inverse = np.unique(arr, return_inverse=True)
    hit = np.array([test(str(n)) for n in uniques], dtype=bool)
    return hit[inverse.ravel()]
