"""``fsdp=CLASS`` (replay/whatif/fsdp.py, fsdp_plan.py): which units ``fully_shard``
would make, and a hand-built DDP step rewritten as FSDP2 whose replay is known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replay.engine import schedule
from replay.whatif.bucketing import ParamSpec
from replay.whatif.fsdp import FSDP, HOOKS, Costs, to_fsdp
from replay.whatif.fsdp_plan import plan_units
from replay.whatif.gradients import GradientSync, RankStepSync
from replay.whatif.reshard import reshard_off
from replay.whatif.spec import parse_spec
from tracekit.core.manifest import parse_manifest
from tracekit.errors import TracekitError
from tracekit.graph.fsdp import BACKWARD, FORWARD, REDUCE
from tracekit.graph.model import EdgeKind, Graph, Lane, NodeKind

MS = 1_000_000


def _manifest(modules, params, forward):
    return parse_manifest({
        "schema_version": 1, "world_size": 2,
        "ranks": [{"rank": 0, "trace": "rank0.trace.json.gz"}],
        "model": {"parameters": [{"index": i, "name": n, "bytes": b} for i, n, b in params],
                  "forward_order": [{"module": m, "params": p} for m, p in forward],
                  "modules": [{"module": m, "class": c, "params": p, "order": o}
                              for m, c, p, o in modules]}})


def _net():
    """embed (Embedding), blocks.0 / blocks.2 (Linear), blocks.2.inner (Linear, nested),
    head (Linear, bias-free); root Net owns a scale parameter."""
    params = [(0, "scale", 4), (1, "embed.weight", 100), (2, "blocks.0.weight", 16),
              (3, "blocks.2.weight", 16), (4, "blocks.2.inner.weight", 8),
              (5, "head.weight", 40)]
    modules = [("", "Net", [0, 1, 2, 3, 4, 5], 0), ("embed", "Embedding", [1], 1),
               ("blocks", "Sequential", [2, 3, 4], 2), ("blocks.0", "Linear", [2], 3),
               ("blocks.1", "ReLU", [], 4), ("blocks.2", "Linear", [3, 4], 5),
               ("blocks.2.inner", "Linear", [4], 6), ("head", "Linear", [5], 7)]
    forward = [("", [0]), ("embed", [1]), ("blocks.0", [2]), ("blocks.2", [3]),
               ("blocks.2.inner", [4]), ("head", [5])]
    return _manifest(modules, params, forward)


def test_units_are_the_innermost_module_of_the_class_and_the_root():
    units = plan_units(_net(), "Linear")
    got = [(u.module, u.params, u.bytes, u.forward_modules) for u in units]
    assert got == [("", (0, 1), 104, ("", "embed")), ("blocks.0", (2,), 16, ("blocks.0",)),
                   ("blocks.2", (3,), 16, ("blocks.2",)),
                   ("blocks.2.inner", (4,), 8, ("blocks.2.inner",)),
                   ("head", (5,), 40, ("head",))]
    (only,) = [u for u in plan_units(_net(), "Embedding") if u.module == "embed"]
    assert only.params == (1,)


def test_a_class_the_model_lacks_is_an_error_naming_the_classes_it_has():
    with pytest.raises(TracekitError, match="no module of class 'Conv2d'; its classes with "
                                            "parameters: Embedding, Linear, Sequential"):
        plan_units(_net(), "Conv2d")


def test_a_manifest_without_the_module_table_is_an_error():
    m = parse_manifest({"schema_version": 1, "world_size": 1,
                        "ranks": [{"rank": 0, "trace": "r.json"}]})
    with pytest.raises(TracekitError, match="record it with 'tracekit profile'"):
        plan_units(m, "Linear")


def test_fsdp_parses_and_conflicts_with_ddp_what_ifs():
    assert parse_spec("fsdp=Linear+reshard=off").variants[0].transforms[0] == FSDP(cls="Linear")
    with pytest.raises(TracekitError, match="expected a module class name"):
        parse_spec("fsdp=1MB")
    with pytest.raises(TracekitError, match="replaces DDP's gradient all-reduces"):
        parse_spec("fsdp=Linear+fusion=4MB")


# ----------------------------------------------------------------- a hand-built DDP step


def _ddp_step() -> tuple[Graph, GradientSync, pd.DataFrame]:
    """One rank, one step: fwd a 1, fwd b 1, bwd b 2, AccumulateGrad b 0.1, bwd a 2,
    AccumulateGrad a 0.1, c10d::allreduce_ 0.1 -> all-reduce 3 (lane 1), optimizer 0.5
    waits for it: 9.8 ms."""
    names = ["fwd_a", "fwd_b", "bwd_b", "torch::autograd::AccumulateGrad", "bwd_a",
             "torch::autograd::AccumulateGrad", "c10d::allreduce_", "gloo:all_reduce",
             "Optimizer.step#SGD.step"]
    dur = [1, 1, 2, 0.1, 2, 0.1, 0.1, 3, 0.5]
    lane = [0, 0, 0, 0, 0, 0, 0, 1, 0]
    kind = [NodeKind.COMPUTE] * 6 + [NodeKind.LAUNCH, NodeKind.COMM, NodeKind.COMPUTE]
    edges = [(i, i + 1, EdgeKind.LANE_ORDER) for i in range(6)]
    edges += [(6, 8, EdgeKind.LANE_ORDER), (6, 7, EdgeKind.ISSUE), (7, 8, EdgeKind.HOST_WAIT)]
    n = len(names)
    g = Graph(rank=np.zeros(n, dtype=np.int32), lane=np.array(lane, dtype=np.int32),
              kind=np.array(kind, dtype=np.int8), step=np.zeros(n, dtype=np.int32),
              name=np.arange(n, dtype=np.int32), start_ns=np.zeros(n, dtype=np.int64),
              dur_ns=np.array([int(d * MS) for d in dur], dtype=np.int64),
              wait_ns=np.zeros(n, dtype=np.int64),
              bytes=np.array([-1] * 7 + [2000, -1], dtype=np.int64),
              coll_id=np.array([-1] * 7 + [0, -1], dtype=np.int64),
              event_row=np.full(n, -1, dtype=np.int64),
              src=np.array([e[0] for e in edges]), dst=np.array([e[1] for e in edges]),
              edge_kind=np.array([int(e[2]) for e in edges], dtype=np.int8),
              delay_ns=np.zeros(len(edges), dtype=np.int64),
              inferred=np.zeros(len(edges), dtype=bool), names=names,
              lanes=[Lane(id=0, rank=0, kind="cpu", local_id=1, name="main", is_main=True),
                     Lane(id=1, rank=0, kind="comm", local_id=2, name="gloo")])
    start, _ = schedule(g)
    g.start_ns[:] = start
    rs = RankStepSync(rank=0, step=0, lane=0, grad_nodes=np.array([3, 5]),
                      ready_nodes=np.array([3, 5]), bucket_comm=np.array([7]),
                      bucket_issue=np.array([6]), bucket_last_grad=np.array([1]),
                      wait_target=8, wait_delay_ns=0, bucket_waits=(((8, 0),),),
                      gap_wait_target=-1, comm_lanes=(1,), forward_first={"a": 0, "b": 1})
    sync = GradientSync(params=(ParamSpec(index=1, bytes=1000), ParamSpec(index=0, bytes=1000)),
                        buckets=((0, 1),), per_rank_step={(0, 0): rs},
                        param_module={0: "a", 1: "b"}, forward_order=(("a", (0,)), ("b", (1,))),
                        issue_dur_ns=100_000, issue_delay_ns=0, comm_prefix="gloo:",
                        bucket_cap_mb=25.0)
    bwd = pd.DataFrame({"rank": [0, 0], "step": [0, 0], "module": ["b", "a"],
                        "ts_ns": [int(start[2]), int(start[4])]})
    return g, sync, bwd


def _two_linears():
    return _manifest([("", "Net", [0, 1], 0), ("a", "Linear", [0], 1), ("b", "Linear", [1], 2)],
                     [(0, "a.weight", 1000), (1, "b.weight", 1000)],
                     [("a", [0]), ("b", [1])])


def _step_ms(g: Graph) -> float:
    start, end = schedule(g)
    return float((end.max() - start.min()) / MS)


def test_a_ddp_step_becomes_the_fsdp_step_known_by_hand():
    g, sync, bwd = _ddp_step()
    assert _step_ms(g) == pytest.approx(9.8)
    units = plan_units(_two_linears(), "Linear")
    assert [u.module for u in units] == ["a", "b"]  # the root holds no parameter
    costs = Costs(ag_ns={"a": 2 * MS, "b": 2 * MS}, rs_ns={"a": MS, "b": MS},
                  ag_name="gloo:all_gather", rs_name="gloo:all_reduce")
    new, kept, added, fs = to_fsdp(g, sync, units, costs, bwd)
    assert kept.tolist() == [0, 1, 2, 3, 4, 5, 8]  # DDP's issue op and all-reduce went
    # forward: AG a 2 + fwd a 1 + AG b 2 + fwd b 1; backward: AG b 2, AG a 2 (prefetched
    # in b's hook, which a CPU run's synchronous all-gather blocks), bwd b 2 + 0.1, RS b 1,
    # bwd a 2 + 0.1, RS a 1, optimizer 0.5 (host copies of 1000 B take under a
    # microsecond each)
    assert _step_ms(new) == pytest.approx(16.7, abs=0.01)
    rs = fs.per_rank_step[(0, 0)]
    assert [(c.unit, c.phase) for c in rs.collectives] == [
        ("a", FORWARD), ("b", FORWARD), ("b", BACKWARD), ("a", BACKWARD), ("b", REDUCE),
        ("a", REDUCE)]
    comm = [c.comm for c in rs.collectives]
    assert all(new.lane[c] == 1 and new.bytes[c] == 1000 for c in comm)
    assert len(set(new.coll_id[comm].tolist())) == 6
    assert added == 6 + 4 * 2 + 2 * 2 + 4 + 2  # collectives, AG and RS issue ops, copies
    # fsdp=Linear+reshard=off: the backward all-gathers go
    off, _, n = reshard_off(new, fs, {"a", "b"})
    assert n == 2 and _step_ms(off) == pytest.approx(12.7, abs=0.01)


def test_on_a_gpu_run_the_prefetched_all_gather_runs_beside_the_backward():
    """With GPU lanes FSDP2's synchronous all-gather only orders the device stream: the
    host goes on, and the prefetched all-gather of a hides behind b's backward (the step
    is 2 ms shorter than on CPU)."""
    g, sync, bwd = _ddp_step()
    g.lanes.append(Lane(id=2, rank=0, kind="gpu", local_id=7, name="stream 7"))
    units = plan_units(_two_linears(), "Linear")
    costs = Costs(ag_ns={"a": 2 * MS, "b": 2 * MS}, rs_ns={"a": MS, "b": MS},
                  ag_name="gloo:all_gather", rs_name="gloo:all_reduce")
    new, _, _, _ = to_fsdp(g, sync, units, costs, bwd)
    # forward all-gathers are prefetched too: AG b runs beside fwd a
    assert _step_ms(new) == pytest.approx(16.7 - 2 - 1, abs=0.01)


def test_calibrated_issue_times_time_the_issue_ops():
    """With a calibration's issue times, each all-gather's and reduce-scatter's issue op
    takes them (0.3 and 0.5 ms here) instead of the host-rate table's sub-microsecond
    time for 1000 B; every issue op is work on the training thread, so the step grows by
    all of them: 4 all-gathers and 2 reduce-scatters, 16.7 + 4 x 0.3 + 2 x 0.5."""
    g, sync, bwd = _ddp_step()
    units = plan_units(_two_linears(), "Linear")
    costs = Costs(ag_ns={"a": 2 * MS, "b": 2 * MS}, rs_ns={"a": MS, "b": MS},
                  ag_name="gloo:all_gather", rs_name="gloo:all_reduce",
                  ag_issue_ns={"a": 300_000, "b": 300_000},
                  rs_issue_ns={"a": 500_000, "b": 500_000})
    new, _, _, fs = to_fsdp(g, sync, units, costs, bwd)
    names = np.array(new.names, dtype=object)[new.name]
    assert sorted(set(new.dur_ns[names == "c10d::_allgather_base_"].tolist())) == [300_000]
    assert sorted(set(new.dur_ns[names == "c10d::_reduce_scatter_base_"].tolist())) == [500_000]
    assert _step_ms(new) == pytest.approx(16.7 + 4 * 0.3 + 2 * 0.5, abs=0.01)


def test_calibrated_fsdp_hook_time_is_host_work_in_every_unit():
    """FSDP2's own host work per unit (0.4 ms in the forward hooks, 0.6 ms in the
    backward ones) is one host op before each unit's forward all-gather and one before its
    reduce-scatter; on the training thread, so the step grows by 2 units x 1 ms."""
    g, sync, bwd = _ddp_step()
    units = plan_units(_two_linears(), "Linear")
    costs = Costs(ag_ns={"a": 2 * MS, "b": 2 * MS}, rs_ns={"a": MS, "b": MS},
                  ag_name="gloo:all_gather", rs_name="gloo:all_reduce",
                  hook_forward_ns=400_000, hook_backward_ns=600_000)
    new, _, _, _ = to_fsdp(g, sync, units, costs, bwd)
    names = np.array(new.names, dtype=object)[new.name]
    assert sorted(new.dur_ns[names == HOOKS].tolist()) == [400_000] * 2 + [600_000] * 2
    assert _step_ms(new) == pytest.approx(16.7 + 2 * (0.4 + 0.6), abs=0.01)


def test_a_missing_backward_annotation_is_an_error():
    g, sync, bwd = _ddp_step()
    costs = Costs(ag_ns={"a": MS, "b": MS}, rs_ns={"a": MS, "b": MS}, ag_name="x", rs_name="y")
    with pytest.raises(TracekitError, match="tracekit.bwd:"):
        to_fsdp(g, sync, plan_units(_two_linears(), "Linear"), costs, bwd.iloc[:1])


class _Calibrated:
    """A calibration's answers: 1 ms per MB, issuing takes 0.1 ms; a chain of blocking
    calls costs ``chain`` times the transfer per call, the last rank has the result
    ``last`` times later than the first; either unknown when None."""

    def __init__(self, chain: dict[str, float] | None, last: dict[str, float] | None):
        self.chain, self.last = chain, last

    def time_ns(self, coll, nbytes, world):
        return nbytes / 1e6 * MS

    def fit_for(self, coll, nbytes):
        from types import SimpleNamespace
        return SimpleNamespace(size_range=(1, 1 << 30), source="calibrated (gloo, 2 ranks)")

    def issue_ns(self, coll, nbytes):
        return 100_000

    def fsdp_hook_ns(self):
        return None

    def chain_ratio(self, coll, nbytes):
        return None if self.chain is None else self.chain[coll]

    def last_rank_ratio(self, coll, nbytes):
        return None if self.last is None else self.last[coll]


def test_each_collective_costs_a_call_of_a_chain_of_blocking_calls():
    """FSDP2 blocks on every all-gather and reduce-scatter, so each costs what one call
    of a calibrated chain of blocking calls cost (its tail, and the last rank's finish,
    included), less the issue op and the resumption the graph times apart (0.1 ms and
    the run's typical host wait, 0 here); without chain timings, until the last rank has
    the result (also on a GPU run, whose host does not block); without either, the
    transfer alone; the notes say which."""
    from types import SimpleNamespace

    from replay.whatif.fsdp import _costs

    g, sync, _ = _ddp_step()
    units = plan_units(_two_linears(), "Linear")  # two units of 1000 B: 1000 ns each

    def costs(chain, last):
        ctx = SimpleNamespace(comm=_Calibrated(chain, last), world=2, sync=sync, graph=g)
        return _costs(SimpleNamespace(ctx=ctx), units)

    unit = _Calibrated(None, None).time_ns("all_gather", 1000, 2)
    chained, notes = costs({"all_gather": 300.0, "all_reduce": 201.0}, {"all_gather": 1.5,
                                                                         "all_reduce": 1.2})
    assert chained.ag_ns == {"a": 300 * unit - 100_000, "b": 300 * unit - 100_000}
    assert chained.rs_ns == {"a": 201 * unit - 100_000, "b": 201 * unit - 100_000}
    assert any("chain of such calls" in n and "201.00-300.00x" in n for n in notes)
    timed, notes = costs(None, {"all_gather": 1.5, "all_reduce": 1.2})
    assert timed.ag_ns == {"a": 1.5 * unit, "b": 1.5 * unit}
    assert timed.rs_ns == {"a": 1.2 * unit, "b": 1.2 * unit}
    assert any("last rank has the result (calibrated: 1.20-1.50x" in n for n in notes)
    g.lanes.append(Lane(id=2, rank=0, kind="gpu", local_id=7, name="stream 7"))
    on_gpu, notes = costs({"all_gather": 300.0, "all_reduce": 201.0}, {"all_gather": 1.5,
                                                                        "all_reduce": 1.2})
    assert on_gpu.ag_ns == timed.ag_ns  # the host goes on: the last rank's finish counts
    g.lanes.pop()
    first, notes = costs(None, None)
    assert first.ag_ns == {"a": unit, "b": unit} and first.rs_ns == {"a": unit, "b": unit}
    assert any("re-run 'tracekit calibrate'" in n and "chain_ratio" in n for n in notes)
