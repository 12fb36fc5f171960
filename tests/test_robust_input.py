"""Nothing lost, nothing silently wrong (issue 14): each damaged input we probed tracekit
with ends cleanly, as built.

- manifests with wrong types, duplicate ranks, escaping paths, negative sizes or ranks
  outside the world: one ``error:`` line per problem naming the field, exit 2;
- damaged events (negative, NaN, absurd or missing durations, strings for numbers,
  events far outside the trace): dropped with ``warning: FILE: N events dropped (...)``,
  and listed under ``warnings`` in every ``--json``;
- steps the manifest records as incomplete, steps some rank lacks, ranks that share no
  step, ranks outside the world, a trace whose own rank disagrees with the manifest;
- absurd what-if values: exit 2 naming the accepted range, never an overflow;
- click's usage errors: one ``error: <what>; <how to fix it>`` line, exit 2.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from replay.whatif.values import (
    MAX_DURATION_NS,
    check_total_ns,
    duration_ns,
    parse_factor,
    parse_rate,
    parse_size,
    parse_workers,
)
from tracekit.cli import main
from tracekit.core.kineto import parse_trace
from tracekit.core.run import load_run
from tracekit.core.warnings import collecting
from tracekit.errors import TracekitError

DATA = Path(__file__).parent / "data"
RUN = DATA / "whatif_ddp_2rank"
GLOO = DATA / "gloo_2rank"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Usage:" not in err
    return code, out, err


def assert_error_lines(err: str, *words: str) -> list[str]:
    """Every stderr line is one ``error: ...`` (after any warnings); ``words`` appear in
    them."""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning: ")]
    assert lines and all(ln.startswith("error: ") for ln in lines), err
    for w in words:
        assert w in err, (w, err)
    return lines


# --- manifests -------------------------------------------------------------------------------

def run_copy(tmp_path: Path, edit) -> Path:
    """A copy of tests/data/whatif_ddp_2rank with ``edit(manifest)`` applied."""
    folder = tmp_path / "run"
    shutil.copytree(RUN, folder)
    doc = json.loads((folder / "manifest.json").read_text())
    edit(doc)
    (folder / "manifest.json").write_text(json.dumps(doc))
    return folder


def _set(key, value):
    return lambda m: m.__setitem__(key, value)


MANIFEST_CASES = {
    "ranks a string": (_set("ranks", "0,1"), "ranks: the string '0,1', expected a list"),
    "an entry null": (lambda m: m["ranks"].__setitem__(0, None), "ranks[0]: null"),
    "model a string": (_set("model", "mlp"), "model: the string 'mlp', expected an object"),
    "ddp a string": (lambda m: m["model"].__setitem__("ddp", "yes"), "model.ddp: the string"),
    "two entries claim rank 0": (lambda m: m["ranks"][1].__setitem__("rank", 0),
                                 "ranks[1].rank: 0 is also the rank of ranks[0]"),
    "a negative parameter size": (
        lambda m: m["model"]["parameters"][0].__setitem__("bytes", -4096),
        "model.parameters[0].bytes: -4096 is outside 0.."),
    "rank 5 in a world of 2": (lambda m: m["ranks"][1].__setitem__("rank", 5),
                               "ranks[1].rank: 5 is outside the world of world_size 2"),
    "a trace path leaving the folder": (
        lambda m: m["ranks"][1].__setitem__("trace", "../rank1.trace.json.gz"),
        "ranks[1].trace: '../rank1.trace.json.gz' leaves the run folder"),
    "an absolute trace path": (
        lambda m: m["ranks"][1].__setitem__("trace", "/etc/passwd"), "leaves the run folder"),
    "world_size a string": (_set("world_size", "2"), "world_size: the string '2'"),
    "world_size 0": (_set("world_size", 0), "world_size: 0 is outside 1..1,000,000"),
    "a bucket naming an unknown parameter": (
        lambda m: m["model"]["ddp"]["buckets"][0]["params"].append(99),
        "model.ddp.buckets[0].params: parameter 99 is not in model.parameters"),
    "step times not numbers": (
        lambda m: m["ranks"][0].__setitem__("step_times_ms", ["fast", 1.0, 2.0, 3.0]),
        "ranks[0].step_times_ms[0]: the string 'fast'"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_bad_manifest_is_one_error_line_naming_the_field(case, tmp_path, capsys):
    edit, words = MANIFEST_CASES[case]
    folder = run_copy(tmp_path, edit)
    for command in ("summary", "replay"):
        code, out, err = cli(capsys, command, folder)
        assert code == 2 and out == ""
        lines = assert_error_lines(err, words, str(folder / "manifest.json"))
        assert all("; " in ln for ln in lines)  # what is wrong; how to fix it
    with pytest.raises(TracekitError, match="manifest.json"):
        load_run(folder)


def test_every_manifest_problem_is_its_own_line(tmp_path, capsys):
    def edit(m):
        m["ranks"][1]["rank"] = 0
        m["model"]["parameters"][0]["bytes"] = -1
        m["backend"] = 7

    code, _, err = cli(capsys, "summary", run_copy(tmp_path, edit))
    lines = assert_error_lines(err, "ranks[1].rank", "parameters[0].bytes", "backend: 7")
    assert code == 2 and len(lines) == 3


def test_null_fields_count_as_absent(tmp_path, capsys):
    def edit(m):
        m["model"]["ddp"] = None
        m["ranks"][0]["cpu_cores"] = None
        m["hosts"] = None

    code, out, _ = cli(capsys, "summary", run_copy(tmp_path, edit), "--json")
    assert code == 0 and json.loads(out)["warnings"] == []


def test_incomplete_step_is_left_out_with_a_warning(tmp_path, capsys):
    """What the collector writes when the job raised during a profiled step."""
    def edit(m):
        m["ranks"][0]["errors"] = ["the job ended during the profiled window, in step 5: the "
                                   "trace holds 3 complete steps and the incomplete "
                                   "ProfilerStep#5"]

    folder = run_copy(tmp_path, edit)
    run = load_run(folder)
    assert run.steps() == [2, 3, 4]
    assert not (run.events[run.events["rank"] == 0]["step"] == 5).any()
    assert any("step 5 left out: the manifest records it as incomplete" in w
               for w in run.warnings)
    code, out, err = cli(capsys, "summary", folder, "--json")
    doc = json.loads(out)
    assert code == 0 and "warning: " in err and "incomplete" in err
    assert 5 not in [s["step"] for s in doc["ranks"][0]["steps"]]
    assert any("incomplete" in w for w in doc["warnings"])
    code, out, _ = cli(capsys, "replay", folder, "--json")
    assert code == 0 and [s["step"] for s in json.loads(out)["steps"]] == [2, 3, 4]


def test_explicit_incomplete_steps_field(tmp_path):
    run = load_run(run_copy(tmp_path, lambda m: m["ranks"][1].__setitem__(
        "incomplete_steps", [2])))
    assert run.steps() == [3, 4, 5] and run.warnings


def test_every_step_incomplete_is_an_error(tmp_path, capsys):
    folder = run_copy(tmp_path, lambda m: m["ranks"][0].__setitem__(
        "incomplete_steps", [2, 3, 4, 5]))
    code, _, err = cli(capsys, "summary", folder)
    assert code == 2
    assert_error_lines(err, "rank 0: every profiled step (2-5) is incomplete")


def test_trace_rank_disagreeing_with_the_manifest_is_a_warning(tmp_path, capsys):
    def swap(m):
        m["ranks"][0]["trace"], m["ranks"][1]["trace"] = (m["ranks"][1]["trace"],
                                                           m["ranks"][0]["trace"])

    code, out, _ = cli(capsys, "summary", run_copy(tmp_path, swap), "--json")
    warnings = json.loads(out)["warnings"]
    assert code == 0
    assert any("distributedInfo.rank is 1 but the manifest lists it as rank 0" in w
               for w in warnings)


# --- damaged events ----------------------------------------------------------------------------

def X(name, ts, dur, cat="cpu_op", pid=1, tid=1, **args):  # noqa: N802 - the 'ph' it builds
    ev = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}
    if args:
        ev["args"] = args
    return ev


def cpu_trace(rank: int = 0, world: int | None = 2, steps=(1, 2)) -> dict:
    """A small CPU trace: per step a ProfilerStep window holding two operators."""
    evs = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "main"}}]
    t = 1000.0
    for s in steps:
        evs += [X(f"ProfilerStep#{s}", t, 1000.0, cat="user_annotation"),
                X("aten::mm", t + 10, 300.0), X("aten::add", t + 400, 200.0)]
        t += 1010.0
    info = {"rank": rank, "backend": "gloo"}
    if world is not None:
        info["world_size"] = world
    return {"distributedInfo": info, "traceEvents": evs}


def ops(doc: dict) -> list[dict]:
    return [e for e in doc["traceEvents"] if e.get("name", "").startswith("aten::")]


def summary_json(capsys, *paths) -> tuple[dict, str]:
    code, out, err = cli(capsys, "summary", *paths, "--json")
    assert code == 0, err
    return json.loads(out), err


EVENT_DAMAGE = {
    "negative dur": (lambda e: e.__setitem__("dur", -300.0), "a negative dur"),
    "absurd dur": (lambda e: e.__setitem__("dur", 1e15), "dur longer than a day"),
    "dur longer than the trace": (lambda e: e.__setitem__("dur", 3.6e9),
                                  "dur longer than the trace's whole span"),
    "no dur": (lambda e: e.pop("dur"), "no dur"),
    "string dur": (lambda e: e.__setitem__("dur", "300"), "dur not a number"),
    "string ts": (lambda e: e.__setitem__("ts", "1010"), "ts not a number"),
    "string pid": (lambda e: e.__setitem__("pid", "main"), "pid missing or not an integer"),
    "bool tid": (lambda e: e.__setitem__("tid", True), "tid missing or not an integer"),
    "list pid": (lambda e: e.__setitem__("pid", []), "pid missing or not an integer"),
    "thread name as tid": (lambda e: e.__setitem__("tid", "main"), "tid missing or not an"),
    "far away": (lambda e: e.__setitem__("ts", e["ts"] + 1e13), "a start far outside"),
    "ts beyond any clock": (lambda e: e.__setitem__("ts", 1e17), "ts not finite or beyond"),
}


@pytest.mark.parametrize("case", sorted(EVENT_DAMAGE))
def test_damaged_event_is_dropped_with_a_warning(case, write_trace, capsys):
    damage, reason = EVENT_DAMAGE[case]
    doc = cpu_trace()
    damage(ops(doc)[0])
    path = write_trace(doc)
    doc_json, err = summary_json(capsys, path)
    expected = f"{path}: 1 events dropped (1 with {reason}"
    assert f"warning: {expected}" in err
    assert any(w.startswith(expected) for w in doc_json["warnings"])
    events, _ = parse_trace(path)
    assert len(events) == 5  # 6 duration events, one dropped
    step1 = doc_json["ranks"][0]["steps"][0]
    assert step1["ms"] == pytest.approx(1.0) and step1["compute_ms"] == pytest.approx(0.2)


def test_negative_durations_do_not_become_zero_ms_steps(write_trace, capsys):
    doc = cpu_trace()
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            e["dur"] = -e["dur"]
    path = write_trace(doc)
    code, _, err = cli(capsys, "summary", path)
    assert code == 2
    assert_error_lines(err, "none of its 6 duration events can be used (6 with a negative dur)")


def test_events_without_dur_do_not_become_zero_ms_steps(write_trace, capsys):
    doc = cpu_trace()
    for e in doc["traceEvents"]:
        e.pop("dur", None)
    code, _, err = cli(capsys, "summary", write_trace(doc))
    assert code == 2 and "6 with no dur" in err


def test_string_numbers_everywhere_say_so(write_trace, capsys):
    doc = cpu_trace()
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            e["ts"], e["dur"] = str(e["ts"]), str(e["dur"])
    code, _, err = cli(capsys, "summary", write_trace(doc))
    assert code == 2 and "no duration events" not in err
    assert_error_lines(err, "6 with ts not a number")


def test_nan_and_infinity_in_the_json(write_trace, capsys):
    """Python's json writes NaN and Infinity; msgspec refuses them: read them anyway and
    drop their events."""
    doc = cpu_trace()
    ops(doc)[0]["dur"] = float("nan")
    ops(doc)[1]["ts"] = float("inf")
    path = write_trace(json.dumps(doc).encode())
    doc_json, err = summary_json(capsys, path)
    assert "2 events dropped" in err and "dur NaN or infinite" in err
    assert doc_json["warnings"]


def test_old_kineto_string_ids_are_ids(write_trace, capsys):
    """Kineto of 2021 wrote thread ids as strings ("1890023232", GPU "stream 7") and its
    recording window under pid "Traces": nothing to drop there."""
    doc = cpu_trace()
    for e in doc["traceEvents"]:
        e["tid"] = "1890023232"
    doc["traceEvents"].append(X("gemm", 1100.0, 5.0, cat="Kernel", pid=0, tid="stream 7",
                                stream=7, correlation=1))
    doc["traceEvents"].append(X("PyTorch Profiler (0)", 900.0, 5000.0, cat="Trace",
                                pid="Traces", tid="PyTorch Profiler"))
    path = write_trace(doc)
    with collecting() as warnings:
        events, _ = parse_trace(path)
    assert warnings == [] and len(events) == 7
    assert set(events["lane"]) == {1890023232, 7}


def test_kineto_profiler_span_is_not_a_dropped_event(capsys):
    """Every real trace has Kineto's own "Spans" event: no warning for it."""
    doc, err = summary_json(capsys, GLOO)
    assert doc["warnings"] == [] and "warning" not in err


def test_warnings_reach_every_json_output(tmp_path, capsys):
    doc = json.loads(gzip.decompress((GLOO / "rank0.json.gz").read_bytes()))
    xs = [e for e in doc["traceEvents"] if e.get("ph") == "X" and isinstance(e["pid"], int)]
    xs[5]["dur"] = -1.0
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "rank0.json").write_text(json.dumps(doc))
    shutil.copy(GLOO / "rank1.json.gz", folder / "rank1.json.gz")
    want = f"{folder / 'rank0.json'}: 1 events dropped (1 with a negative dur)"
    for args in (["summary"], ["replay"], ["graph"],
                 ["timeline", "-o", tmp_path / "t.html"],
                 ["report", "-o", tmp_path / "r.html", "--measured-only"]):
        code, out, err = cli(capsys, *args, folder, "--json")
        assert code == 0, err
        assert json.loads(out)["warnings"] == [want], args
        assert f"warning: {want}" in err


def test_quiet_silences_stderr_not_the_json(write_trace, capsys):
    doc = cpu_trace()
    ops(doc)[0]["dur"] = -1.0
    code, out, err = cli(capsys, "-q", "summary", write_trace(doc), "--json")
    assert code == 0 and err == "" and json.loads(out)["warnings"]


# --- ranks and steps ---------------------------------------------------------------------------

def test_steps_some_rank_lacks_are_left_out_with_a_warning(write_trace, capsys):
    a = write_trace(cpu_trace(0, steps=(1, 2, 3)), name="rank0.json")
    b = write_trace(cpu_trace(1, steps=(1, 2)), name="rank1.json")
    run = load_run([a, b])
    assert run.steps() == [1, 2]
    assert any("step(s) 3 left out of the replay and the step time" in w
               for w in run.warnings)


def test_ranks_sharing_no_step(write_trace, capsys):
    a = write_trace(cpu_trace(0, steps=(1, 2)), name="rank0.json")
    b = write_trace(cpu_trace(1, steps=(7, 8)), name="rank1.json")
    doc, err = summary_json(capsys, a, b)
    assert any("the ranks share no step (rank 0: 1-2; rank 1: 7-8)" in w
               for w in doc["warnings"])
    code, _, err = cli(capsys, "replay", a, b)
    assert code == 2
    assert_error_lines(err, "the ranks share no step (rank 0: 1-2; rank 1: 7-8)")
    code, _, err = cli(capsys, "graph", a, b)
    assert code == 2 and "share no step" in err


def test_rank_outside_the_world(write_trace, capsys):
    a = write_trace(cpu_trace(0, world=2), name="rank0.json")
    b = write_trace(cpu_trace(5, world=2), name="rank5.json")
    doc, _ = summary_json(capsys, a, b)
    assert doc["world_size"] == 6
    assert any("rank(s) 5" in w and "outside the world of 2" in w for w in doc["warnings"])
    assert any(n.startswith("incomplete world: traces for 2 of 6") for n in doc["notes"])


def test_rank_numbers_from_file_names_need_no_warning(write_trace, capsys):
    a = write_trace(cpu_trace(0, world=None), name="rank0.json")
    b = write_trace(cpu_trace(3, world=None), name="rank3.json")
    doc, _ = summary_json(capsys, a, b)
    assert doc["world_size"] == 4 and doc["warnings"] == []


def test_symlink_loop_is_not_no_such_file(tmp_path, capsys):
    loop = tmp_path / "rank0.json"
    loop.symlink_to(tmp_path / "rank0.json")
    code, _, err = cli(capsys, "summary", loop)
    assert code == 2
    assert_error_lines(err, "symlink loop")
    dangling = tmp_path / "rank1.json"
    dangling.symlink_to(tmp_path / "gone.json")
    code, _, err = cli(capsys, "summary", dangling)
    assert code == 2 and "which does not exist" in err


def test_unreadable_trace_in_a_folder_is_said(tmp_path, capsys):
    shutil.copy(GLOO / "rank0.json.gz", tmp_path / "rank0.json.gz")
    (tmp_path / "rank1.json.gz").symlink_to(tmp_path / "rank1.json.gz")
    doc, err = summary_json(capsys, tmp_path)
    assert doc["warnings"] == [f"{tmp_path / 'rank1.json.gz'}: left out: it is a symlink loop"]


# --- what-if values ----------------------------------------------------------------------------

WHAT_IF_CASES = {
    "fusion=1e400": "fusion=1e400 is out of range: sizes go from 1B to 1024GB",
    "fusion=1MB..1e400": "fusion=1e400 is out of range",
    "fusion=0.5": "fusion=0.5 is out of range",
    "fusion=2048GB": "sizes go from 1B to 1024GB",
    "bandwidth=1e-12x": "bandwidth=1e-12x is out of range: factors go from 1e-06 to 1e+06",
    "bandwidth=1e400Gbps": "rates go from 1Mbps to 1000Tbps",
    "bandwidth=1bps": "rates go from 1Mbps to 1000Tbps",
    "comm-scale=1e12": "comm-scale=1e12 is out of range",
    "compute-scale=1e-7": "compute-scale=1e-7 is out of range",
    "slow-rank=1:1e9": "slow-rank=1:1e9 is out of range",
    "workers=1e20": "workers=1e20 is out of range: world sizes go from 1 to 1,000,000 ranks",
    "workers=100000000000000000000": "is out of range: world sizes go from 1 to 1,000,000",
    "workers=0": "workers=0 is out of range",
    "comm-scale=1e-7..1": "comm-scale=1e-7 is out of range",
}


@pytest.mark.parametrize("spec", sorted(WHAT_IF_CASES))
def test_absurd_what_if_values_name_the_range(spec, capsys):
    code, out, err = cli(capsys, "replay", GLOO, "--what-if", spec)
    assert code == 2 and out == ""
    assert len(assert_error_lines(err, WHAT_IF_CASES[spec])) == 1


def test_absurd_values_in_timeline_and_report(tmp_path, capsys):
    code, _, err = cli(capsys, "timeline", GLOO, "--what-if", "fusion=1e400",
                       "-o", tmp_path / "t.html")
    assert code == 2 and "fusion=1e400 is out of range" in err
    code, _, err = cli(capsys, "report", GLOO, "--what-if", "bandwidth=1e-12x",
                       "-o", tmp_path / "r.html")
    assert code == 2 and "bandwidth=1e-12x is out of range" in err


def test_bandwidth_zero_hint_is_itself_valid():
    with pytest.raises(TracekitError, match=r"e\.g\. bandwidth=2x") as info:
        parse_factor("0x", "bandwidth", example="bandwidth=2x")
    hint = str(info.value).rsplit("e.g. bandwidth=", 1)[1]
    assert parse_factor(hint, "bandwidth") == 2.0
    from replay.whatif.spec import parse_spec

    with pytest.raises(TracekitError) as info:
        parse_spec("bandwidth=0x")
    parse_spec(str(info.value).rsplit("e.g. ", 1)[1])  # the suggestion parses


def test_range_limits_are_accepted():
    assert parse_size("1") == 1 and parse_size("1024GB") == 2**40
    assert parse_factor("1e-6", "comm-scale") == 1e-6 and parse_factor("1e6x", "x") == 1e6
    assert parse_workers("1") == 1 and parse_workers("1000000") == 10**6
    assert parse_workers("1e3") == 1000
    assert parse_rate("1Mbps") == pytest.approx(1.25e5)
    assert parse_rate("1000Tbps") == pytest.approx(1.25e14)


def test_durations_never_wrap_around_into_plausible_numbers():
    ok = duration_ns(np.array([1.4, 2.6]), "x")
    assert ok.tolist() == [1, 3] and ok.dtype == np.int64
    for bad in ([1e30], [math.inf], [math.nan], [MAX_DURATION_NS * 2.0]):
        with pytest.raises(TracekitError, match="beyond what can be replayed"):
            duration_ns(np.array(bad), "comm-scale=1e6")
    with pytest.raises(TracekitError, match="add up to"):
        check_total_ns(np.full(64, 2**58, dtype=np.int64), "comm-scale=1e6+compute-scale=1e6")
    with pytest.raises(TracekitError):
        check_total_ns(np.array([-5, 3], dtype=np.int64), "x")


def test_extreme_but_valid_what_ifs_predict_slowdowns(capsys):
    """At the range's limits nothing overflows: a million times slower is slower."""
    code, out, err = cli(capsys, "replay", GLOO, "--json", "--what-if", "comm-scale=1e6",
                         "--what-if", "compute-scale=1e6", "--what-if", "workers=1000000")
    assert code == 0, err
    for w in json.loads(out)["what_ifs"]:
        assert 0 < w["speedup"] < 1 and math.isfinite(w["step_ms"]), w


# --- click's usage errors ------------------------------------------------------------------------

USAGE_CASES = {
    "-o is a folder": (["timeline", GLOO, "-o", "{tmp}"],
                       "error: -o/--output: '{tmp}' is a folder, expected a file; e.g. -o "),
    "--steps 0": (["profile", "--steps", "0", "--", "true"],
                  "error: --steps: 0 is not in the range >= 1; e.g. --steps "),
    "--step abc": (["replay", GLOO, "--step", "abc"],
                   "error: --step: 'abc' is not a whole number; e.g. --step "),
    "--step without a value": (["replay", GLOO, "--step"], "error: option '--step' requires"),
    "--interference magic": (
        ["replay", GLOO, "--interference", "magic"],
        "error: --interference: 'magic' is not one of auto, factor, cores, none; "
        "e.g. --interference auto"),
    "missing PATH": (["summary"], "error: missing argument PATH; e.g. tracekit summary "),
    "unknown option": (["summary", "--jsn", GLOO], "no such option --jsn; did you mean --json"),
    "unknown command": (["sumary", GLOO], "error: no such command 'sumary'; expected one of"),
    "path does not exist": (["timeline", "/no/such/run"],
                            "error: PATH: '/no/such/run' does not exist; check the path"),
    "our own usage error": (["timeline", GLOO, "--measured-only", "--what-if", "dear"],
                            "error: --measured-only draws no prediction"),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_errors_are_one_line(case, tmp_path, capsys):
    args, want = USAGE_CASES[case]
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "; " in err, err
    assert want.replace("{tmp}", str(tmp_path)) in err
