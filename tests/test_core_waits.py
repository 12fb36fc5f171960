"""Operators that wait for communication (tracekit.core.waits)."""

from __future__ import annotations

import numpy as np

from tracekit.core.waits import WAIT_OP, is_wait_op, waits_for_comm

NAMES = ["c10d::wait", "_c10d_functional::wait_tensor", "c10d_functional::wait_tensor",
         "aten::wait", "torch.distributed._wait", "C10D::WAIT", "c10d::barrier",
         "c10d::monitored_barrier_", "c10d::allreduce_", "aten::mm", "cudaStreamWaitEvent",
         "## sdd_wait_tensors ##"]


def test_wait_ops_and_blocking_collectives():
    assert is_wait_op(NAMES).tolist() == [True, True, True, True, False, True, False, False,
                                          False, False, False, True]
    assert waits_for_comm(NAMES).tolist() == [True, True, True, True, False, True, True,
                                              True, False, False, False, True]
    assert WAIT_OP.search("c10d::_wait_for_work")  # '::_wait'


def test_arrays_and_repeats():
    names = np.array(["aten::mm", "c10d::wait", "aten::mm", "c10d::wait"], dtype=object)
    assert waits_for_comm(names).tolist() == [False, True, False, True]
    assert is_wait_op([]).dtype == bool and len(is_wait_op([])) == 0
