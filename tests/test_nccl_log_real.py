"""NCCL's log, end to end: real NCCL INFO lines from public issues and repositories
(tests/data/nccl_logs/README.md says where each comes from) parse; a run folder's
``nccl/rank<N>.log`` is attached at load (sizes, opCount, algorithm, protocol, channels,
communicator on every NCCL kernel); ``summary`` shows algorithm and protocol per
collective; the cost model keeps one fit per algorithm / protocol.

No public source has a trace and the NCCL log of the same job, so the end-to-end test
pairs a real trace (the A100 rank of tests/data) with a log written line by line in
NCCL's own format for that trace's kernels (``nccl_line`` of tests/test_nccl_log.py, a
transcription of NCCL's format string; tuning lines in the format the real lines below
show)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_nccl_log import nccl_line

from replay.cost_model import fit_run_cost_model
from replay.nccl_variants import VariantCostModel, with_variants
from tracekit.cli import main
from tracekit.core.nccl_log import parse_nccl_log, parse_tuning_line
from tracekit.core.run import load_run
from tracekit.graph.build import build_graph

LOGS = Path(__file__).parent / "data" / "nccl_logs"
A100 = Path(__file__).parent / "data" / "a100_world2_rank0_nccl_args.json.gz"


def test_real_coll_lines_of_several_nccl_versions_parse():
    df = parse_nccl_log(LOGS / "nccl_issue203_allreduce.log")
    assert list(df["op_count"]) == [0x1A, 0x1A, 0x1B, 0x1B, 0x1C, 0x1C, 0x1D]
    assert (df["nranks"] == 2).all() and (df["dtype"] == "float32").all()
    assert list(df["cuda_dev"])[:2] == [0, 1] and (df["host"] == "gpu1").all()
    assert list(df["comm_bytes"])[2] == 237184 * 4

    tp = parse_nccl_log(LOGS / "torchtitan_issue1369_tp2.log")
    assert list(tp["collective"])[:3] == ["all_gather", "reduce_scatter", "all_gather"]
    # all-gather and reduce-scatter counts are per rank: the full buffer is count * 2
    assert list(tp["comm_bytes"])[:2] == [2097152 * 2 * 4, 2097152 * 2 * 4]

    p2p = parse_nccl_log(LOGS / "nccl_issue584_sendrecv.log")
    assert list(p2p["collective"]) == ["send", "send", "recv"]
    assert p2p["recvbuff"].iat[0] == "(nil)" and p2p["op_count"].iat[2] == 0xD60


def test_real_lines_behind_a_launcher_prefix():
    ray = parse_nccl_log(LOGS / "nccl_issue1193_ray_128ranks.log")
    assert len(ray) == 3 and (ray["nranks"] == 128).all()
    assert list(ray["pid"]) == [615, 22754, 619] and list(ray["op_count"]) == [0x139D] * 2 + [0x139E]


@pytest.mark.parametrize("name, expected", [
    ("nccl_issue1453_tuning_old.log", [("", 262144, "tree", "ll128", -1)]),
    ("nccl_issue1595_tuning_old.log", [("", 1026048, "ring", "simple", -1),
                                       ("", 805306368, "ring", "simple", -1)]),
    ("nccl_ebpf_broadcast_tuning_2_29.log", [("Broadcast", 32768, "ring", "simple", 1),
                                             ("Broadcast", 65536, "ring", "simple", 2),
                                             ("Broadcast", 131072, "ring", "simple", 4),
                                             ("Broadcast", 134217728, "ring", "simple", 4)]),
])
def test_real_tuning_lines_of_old_and_new_nccl(name, expected):
    lines = (LOGS / name).read_text().splitlines()
    got = [parse_tuning_line(x) for x in lines]
    assert [(g["op_name"], g["nbytes"], g["algorithm"], g["protocol"], g["channels"])
            for g in got] == expected


def test_a_tuning_line_gives_its_choice_to_its_call():
    lines = [nccl_line("AllReduce", 5, 1024),  # 4096 bytes
             nccl_line("AllReduce", 6, 262144),
             "node-a:4242:4242 [0] NCCL INFO AllReduce: 4096 Bytes -> Algo TREE proto LL "
             "channel{Lo..Hi}={0..1}",
             "node-a:4242:4242 [0] NCCL INFO 1048576 Bytes -> Algo 1 proto 2 time 34.7"]
    df = parse_nccl_log(lines, rank=0)
    assert list(zip(df["algorithm"], df["protocol"], df["channels"])) == [
        ("tree", "ll", 2), ("ring", "simple", -1)]


def _nccl_lines_for(events: pd.DataFrame) -> list[str]:
    """A rank-0 NCCL log for the trace's NCCL kernels, in order: each call's COLL line
    and its tuning line (small all-reduces tree/LL, large ones ring/Simple)."""
    op = {"all_reduce": "AllReduce", "broadcast": "Broadcast"}
    dt = {"Float": 7, "Long": 4}
    out = []
    comm = events[(events["kind"] == "comm")].sort_values("ts_ns")
    for k, r in enumerate(comm.itertuples()):
        elem = 4 if r.dtype == "Float" else 8
        count = int(r.in_nelems)
        out.append(nccl_line(op[r.collective], 0x100 + k, count, datatype=dt[r.dtype],
                             comm=0x55D0C6A0))
        nbytes = count * elem
        algo, proto = ("TREE", "LL") if nbytes < 10_000_000 else ("RING", "SIMPLE")
        out.append(f"node-a:4242:4242 [0] NCCL INFO {op[r.collective]}: {nbytes} Bytes -> "
                   f"Algo {algo} proto {proto} channel{{Lo..Hi}}={{0..7}}")
    return out


@pytest.fixture
def run_folder(tmp_path):
    shutil.copy(A100, tmp_path / "rank0.json.gz")
    events = load_run(tmp_path).events
    (tmp_path / "nccl").mkdir()
    (tmp_path / "nccl" / "rank0.log").write_text(
        "node-a:4242:4242 [0] NCCL INFO comm 0x55d0c6a0 rank 0 nranks 2 cudaDev 0 nvmlDev 0 "
        "busId 1000 commId 0x9a3b1c - Init COMPLETE\n" + "\n".join(_nccl_lines_for(events)) + "\n")
    return tmp_path


def test_load_run_attaches_the_nccl_log(run_folder):
    run = load_run(run_folder)
    comm = run.events[run.events["kind"] == "comm"]
    assert any("NCCL log" in n and f"{len(comm)} of {len(comm)}" in n for n in run.notes)
    assert (comm["nccl_comm"] == "0x9a3b1c").all() and (comm["nccl_channels"] == 8).all()
    small = comm["comm_bytes"] < 10_000_000
    # the log's choice replaces what the kernel names said (ncclKernel_*_RING_LL_*)
    assert (comm.loc[small, "nccl_algo"] == "tree").all()
    assert (comm.loc[~small, "nccl_proto"] == "simple").all()
    assert set(comm["seq"]) == set(range(0x100, 0x100 + len(comm)))


def test_summary_shows_algorithm_and_protocol_per_collective(run_folder, capsys):
    assert main(["summary", str(run_folder), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {(r["collective"], r["algorithm"], r["protocol"]): r for r in doc["collectives"]}
    assert ("all_reduce", "ring", "simple") in rows and ("broadcast", "tree", "ll") in rows
    assert all(r["source"] == "NCCL log" and r["channels"] == 8 for r in rows.values())
    assert main(["summary", str(run_folder)]) == 0
    text = capsys.readouterr().out
    assert "algorithm" in text and "ring" in text and "NCCL log" in text


def test_cost_model_fits_each_algorithm_and_protocol(run_folder):
    run = load_run(run_folder)
    model = fit_run_cost_model(run, build_graph(run))
    assert isinstance(model, VariantCostModel)
    variants = {(c, a, p) for (_, c, a, p) in model.variant_fits}
    assert ("all_reduce", "ring", "simple") in variants
    assert model.variant_for("all_reduce", 30_000_000, "0") == ("ring", "simple")
    assert model.variant_for("broadcast", 400, "0") == ("tree", "ll")
    assert any("per NCCL algorithm / protocol" in n for n in model.notes)


def test_variant_fits_differ_where_the_protocols_do():
    # LL: 2 us/step, slow; Simple: 20 us/step, fast (the shape NCCL's tuner assumes)
    rows = []
    for nbytes in (2**12, 2**14, 2**16):
        rows.append(("0", "all_reduce", nbytes, 8, int(14 * 2000 + nbytes * 1.75 / 2.0), "ring", "ll"))
    for nbytes in (2**24, 2**26, 2**28):
        rows.append(("0", "all_reduce", nbytes, 8, int(14 * 20000 + nbytes * 1.75 / 100.0),
                     "ring", "simple"))
    samples = pd.DataFrame(rows, columns=["pg", "collective", "nbytes", "group_size",
                                          "transfer_ns", "algorithm", "protocol"])
    from replay.cost_model import fit_cost_model

    pooled = fit_cost_model(samples.drop(columns=["algorithm", "protocol"]))
    model = with_variants(pooled, samples, backend="nccl")
    small, large = model.time_ns("all_reduce", 2**14, 8, pg="0"), model.time_ns(
        "all_reduce", 2**26, 8, pg="0")
    assert small == pytest.approx(14 * 2000 + 2**14 * 1.75 / 2.0, rel=1e-6)
    assert large == pytest.approx(14 * 20000 + 2**26 * 1.75 / 100.0, rel=1e-6)
    assert abs(pooled.time_ns("all_reduce", 2**14, 8, pg="0") - small) > 0.5 * small
    assert np.isfinite(model.fit_for("all_reduce", 2**14, "0").alpha_ns)
