"""The FSDP what-ifs on real recorded runs (tests/data/fsdp_2rank: a 6-layer MLP under
FSDP2, resharding; tests/data/ddp_6layer_2rank: the same model under DDP; see the data
README), from the library and from the CLI with --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracekit.api import Session
from tracekit.cli import main
from tracekit.core.run import load_run
from tracekit.errors import TracekitError
from tracekit.graph.build import build_graph
from tracekit.graph.fsdp import BACKWARD, FORWARD, REDUCE, find_fsdp

DATA = Path(__file__).parent / "data"
FSDP_RUN = DATA / "fsdp_2rank"
DDP_RUN = DATA / "ddp_6layer_2rank"
OLD_DDP_RUN = DATA / "whatif_ddp_2rank"  # recorded before the module table existed
UNITS = ("0", "2", "4", "6", "8", "10")


@pytest.fixture(scope="module")
def fsdp_session():
    return Session(FSDP_RUN)


@pytest.fixture(scope="module")
def ddp_session():
    return Session(DDP_RUN)


def test_the_manifest_records_the_fsdp_units():
    m = load_run(FSDP_RUN).manifest
    units = [(u.module, u.cls, u.bytes, u.reshard_after_forward) for u in m.fsdp_units]
    assert units[0] == ("", "Sequential", 0, None)  # the root holds no parameter
    assert units[1:] == [(u, "Linear", 1050624, True) for u in UNITS]


def test_every_fsdp_collective_gets_its_unit_and_phase():
    run = load_run(FSDP_RUN)
    graph = build_graph(run)
    fs = find_fsdp(run, graph)
    assert fs.units == UNITS
    assert fs.counts() == {FORWARD: 60, BACKWARD: 60, REDUCE: 60}  # 5 steps x 2 ranks x 6
    for (rank, step), rs in fs.per_rank_step.items():
        other = fs.per_rank_step[(1 - rank, step)]
        for c in rs.collectives:  # one collective instance across both ranks
            twin = other.find(c.unit, c.phase)
            assert graph.coll_id[c.comm] == graph.coll_id[twin.comm]
        # backward re-gathers run in reverse forward order, each before its backward
        back = [c.unit for c in rs.collectives if c.phase == BACKWARD]
        assert back == list(reversed(UNITS))
        for u in UNITS:
            assert graph.start_ns[rs.find(u, BACKWARD).host[-1]] <= \
                graph.start_ns[rs.pre_backward[u]] or u == back[0]


def test_reshard_off_is_faster_and_says_what_it_costs_in_memory(fsdp_session):
    (w,) = fsdp_session.what_ifs(["reshard=off"])
    assert w.speedup > 1.05
    # each rank keeps its half of every 1 MB unit anyway: 6 x 513 KB more
    assert any("60 backward all-gather(s) removed (6 unit(s))" in n and "3078KB more" in n
               for n in w.notes), w.notes
    (same,) = fsdp_session.what_ifs(["reshard=on"])  # every unit already re-gathers
    assert same.speedup == pytest.approx(1.0, abs=0.01)


def test_fsdp_from_a_ddp_run_and_combined_with_reshard_off(ddp_session):
    full, kept = ddp_session.what_ifs(["fsdp=Linear", "fsdp=Linear+reshard=off"])
    assert full.speedup < 1.0  # 18 small collectives a step instead of DDP's 2 buckets
    assert kept.speedup > full.speedup
    notes = " | ".join(full.notes)
    assert "fsdp=Linear: 6 unit(s): 0 1026KB" in notes
    # the run issued only all-reduces: the all-gather's cost is extrapolated, and says so
    assert "all-gather cost extrapolated from all_reduce by formula" in notes
    assert any("reshard=off: 60 backward all-gather(s) removed" in n for n in kept.notes)


@pytest.mark.parametrize("run, spec, message", [
    (DDP_RUN, "fsdp=Conv2d", "no module of class 'Conv2d'; its classes with parameters: "
                             "Linear"),
    (OLD_DDP_RUN, "fsdp=Linear", "needs the manifest's module and parameter tables"),
    (DDP_RUN, "reshard=off", "found no FSDP2 all-gathers"),
    (FSDP_RUN, "fsdp=Linear", "already an FSDP2 run"),
])
def test_fsdp_what_ifs_refuse_what_they_cannot_predict(run, spec, message):
    with pytest.raises(TracekitError, match=message):
        Session(run).what_ifs([spec])


def test_the_cli_prints_the_fsdp_what_ifs_as_json(capsys):
    code = main(["replay", str(FSDP_RUN), "--what-if", "reshard=off", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    (w,) = doc["what_ifs"]
    assert w["spec"] == "reshard=off" and w["speedup"] > 1.05
    assert w["transforms"] == [{"what_if": "reshard", "enabled": False}]
    assert any(n.startswith("FSDP: 6 unit(s)") for n in doc["what_if_notes"])
    code = main(["replay", str(DDP_RUN), "--what-if", "fsdp=Nope"])
    assert code == 2
    assert "error: fsdp=Nope: the model has no module of class 'Nope'" in \
        capsys.readouterr().err
