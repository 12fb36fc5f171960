"""Every real trace of the corpus loads, summarizes and replays (tests/data/corpus).

The corpus (``tests/data/corpus/corpus.json``: file, source repository, commit, license,
shape) holds 20 real Kineto traces written by others: H100, B200, MI210, MI250, MI300;
eager training and inference, vLLM and sglang servers with HIP / CUDA graphs, torch.compile
with Triton, xDiT diffusion, ranks of 8- and 16-rank NCCL / RCCL jobs, Kineto from 2021
to 2026. For each:

- ``tracekit summary`` and ``tracekit replay`` succeed (the CLI, as a user runs them);
- the baseline replay reproduces the measured step within 3%;
- for the ones with GPU events, summary's compute, communication and idle agree within
  2% (of the window) with Holistic Trace Analysis on the same file
  (``hta_reference.json``, recorded by ``hta_reference.py``; HTA is not needed here).
  HTA measures one window per trace, from its first GPU event to its last; tracekit's
  summary measures ProfilerStep windows. The comparison applies summary's definitions
  (compute: kernels, memcpy and memset on any stream; comm: collective transfers; idle:
  the rest) to HTA's window, with the breakdown function summary uses for every window,
  and, like HTA on a trace with several ProfilerSteps, keeps the GPU work launched by
  host events up to the last step's end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tracekit.analysis.breakdown import breakdown, summarize
from tracekit.api import Session
from tracekit.cli import main
from tracekit.core.run import load_run
from tracekit.errors import TracekitError

CORPUS = Path(__file__).parent / "data" / "corpus"
MANIFEST = json.loads((CORPUS / "corpus.json").read_text())
TRACES = [t["file"] for t in MANIFEST["traces"]]
HTA = json.loads((CORPUS / "hta_reference.json").read_text())["traces"]
#: baseline replay error allowed on every corpus trace, percent
MAX_REPLAY_ERROR_PCT = 3.0
#: summary vs HTA, percent of HTA's window
MAX_HTA_DIFF_PCT = 2.0


def test_corpus_is_large_and_every_file_is_there_with_its_license():
    assert len(TRACES) >= 15
    for entry in MANIFEST["traces"] + MANIFEST["not_kineto"]:
        path = CORPUS / entry["file"]
        assert path.exists(), entry["file"]
        assert (path.parent / "LICENSE").exists()
        assert path.stat().st_size < 4 * 2**20  # small files only
        assert entry["repo"] and len(entry["commit"]) == 40 and entry["license"]
    assert sorted(HTA) == sorted(TRACES)


@pytest.mark.parametrize("name", TRACES)
def test_summary_and_replay_succeed_within_3_percent(name, capsys):
    path = str(CORPUS / name)
    assert main(["summary", path]) == 0
    assert main(["replay", path, "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out[out.index("{"):])
    assert abs(doc["baseline"]["error_pct"]) <= MAX_REPLAY_ERROR_PCT
    result = Session(load_run(path)).baseline
    for step, measured in result.measured_step_ms.items():
        assert result.step_ms[step] == pytest.approx(measured, rel=MAX_REPLAY_ERROR_PCT / 100)


def _in_hta_window(run, ref: dict):
    """tracekit's compute / comm / idle (summary's definitions) in HTA's window."""
    ev = run.events
    gpu = (ev["lane_kind"] == "gpu").to_numpy()
    kind = ev["kind"].astype(str).to_numpy()
    ts, end = ev["ts_ns"].to_numpy(), ev["end_ns"].to_numpy()
    corr = ev["correlation"].to_numpy()
    compute = gpu & np.isin(kind, ["kernel", "memcpy", "memset"])
    comm = gpu & (kind == "comm")
    steps = kind == "step"
    if steps.sum() > 1:
        host = ~gpu & (corr >= 0) & (ts <= end[steps].max())
        launched = np.isin(corr, corr[host])
        compute &= launched
        comm &= launched
    lo = int(ts[compute | comm].min())
    window = int(round(ref["temporal"]["kernel_time(us)"] * 1000))
    return breakdown((lo, lo + window), (ts[compute], end[compute]), (ts[comm], end[comm]))


@pytest.mark.parametrize("name", [n for n in TRACES if "error" not in HTA[n]])
def test_summary_agrees_with_holistic_trace_analysis(name):
    run = load_run(CORPUS / name)
    summary = summarize(run)
    assert not summary.steps.empty
    ref = HTA[name]
    b = _in_hta_window(run, ref)
    window_us = ref["temporal"]["kernel_time(us)"]
    tol_us = MAX_HTA_DIFF_PCT / 100 * window_us
    assert b.window_ns / 1000 == pytest.approx(window_us, abs=1.0)
    assert abs(b.idle_ns / 1000 - ref["temporal"]["idle_time(us)"]) <= tol_us
    assert abs(b.comm_ns / 1000 - ref["comm_us"]) <= tol_us
    assert abs(b.compute_ns / 1000 - ref["noncomm_us"]) <= tol_us
    # HTA's compute is its COMPUTATION kernels only (no memcpy / memset): never more
    assert ref["temporal"]["compute_time(us)"] <= b.compute_ns / 1000 + 1.0
    if ref["comm_comp_overlap_pct"] is not None and b.comm_ns:
        assert 100 * b.overlap_ns / b.comm_ns >= ref["comm_comp_overlap_pct"] - MAX_HTA_DIFF_PCT


def test_hta_failed_only_where_there_is_no_gpu_event():
    failed = [n for n in TRACES if "error" in HTA[n]]
    for name in failed:
        run = load_run(CORPUS / name)
        assert not run.has_gpu, f"HTA failed on {name}, which has GPU events"


@pytest.mark.parametrize("name", ["tracelens/sglang_qwen3_prefill_decode.json.gz",
                                  "tracelens/sglang_qwen3_decode.json.gz",
                                  "tracelens/vllm_decode_full_cudagraph.json.gz"])
def test_inference_servers_say_what_they_kept_as_measured(name):
    graph = Session(load_run(CORPUS / name)).graph
    assert any("nothing in the trace to wait for" in n for n in graph.notes)


def test_a_lone_unranked_trace_is_rank_0_with_a_note():
    run = load_run(CORPUS / "tracelens/h100_bert_small.json.gz")
    assert run.ranks == [0] and run.world_size == 1
    assert any("no rank information" in n for n in run.notes)


def test_rocm_runtime_calls_keep_their_launches():
    run = load_run(CORPUS / "hta/mi250_rocm62_minitoy.json.gz")
    ev = run.events
    launches = ev[ev["kind"] == "launch"]
    assert {"hipLaunchKernel", "hipExtModuleLaunchKernel"} <= set(launches["name"].astype(str))
    kernels = ev[(ev["lane_kind"] == "gpu") & (ev["kind"] == "kernel")]
    assert kernels["correlation"].isin(launches["correlation"]).all()


def test_generic_rccl_kernels_are_communication():
    run = load_run(CORPUS / "tracelens/mi300_resnet_act_checkpoint_rank0.json.gz")
    ev = run.events
    generic = ev[ev["name"].astype(str).str.startswith("ncclDevKernel_Generic")]
    assert len(generic) and (generic["kind"] == "comm").all()
    named = generic[generic["collective"] != "unknown"]
    assert set(named["collective"].astype(str)) == {"all_reduce", "broadcast"}
    assert (named["comm_bytes"] > 0).all()


def test_rocprofv3_json_is_refused_by_name(capsys):
    path = CORPUS / "tracelens/rocprofv3_908_results.json.gz"
    with pytest.raises(TracekitError, match="rocprofv3") as info:
        load_run(path)
    assert "\n" not in str(info.value) and "torch.profiler" in str(info.value)
    assert main(["summary", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
