"""Bad input: every problem a user can make is one line naming the file (TracekitError),
and the CLI prints ``error: ...`` and exits 2 without a traceback. Property-based tests
damage real traces and check that nothing but TracekitError ever escapes."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from breakdown_check import expected_rows, summarized_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracekit.analysis.breakdown import summarize
from tracekit.cli import main
from tracekit.core.kineto import parse_trace
from tracekit.core.run import load_run
from tracekit.core.schema import check_schema
from tracekit.errors import TracekitError

DATA = Path(__file__).parent / "data"
A100 = DATA / "a100_world2_rank0_nccl_args.json.gz"
ALEXNET = DATA / "single_gpu_alexnet.json.gz"
GLOO300 = DATA / "cpu_only_gloo_world300_rank34.json.gz"
GOOD = DATA / "gloo_2rank" / "rank0.json.gz"
GOOD_TEXT = gzip.decompress(GOOD.read_bytes())


def _doc_without_rank() -> dict:
    doc = json.loads(GOOD_TEXT)
    del doc["distributedInfo"]
    return doc


#: case name -> (file name, bytes); each is one kind of bad file
BAD_FILES = {
    "truncated gzip": ("rank0.json.gz", GOOD.read_bytes()[: len(GOOD.read_bytes()) // 2]),
    "corrupt gzip": ("rank0.json.gz", b"\x1f\x8b" + bytes(range(200))),
    "truncated JSON": ("rank0.json", GOOD_TEXT[: len(GOOD_TEXT) // 3]),
    "truncated JSON in gzip": ("rank0.json.gz", gzip.compress(GOOD_TEXT[:-40])),
    "non-JSON": ("rank0.json", b"step,ms\n1,23.5\n"),
    "JSON, not Kineto": ("rank0.json", json.dumps({"loss": [1.0, 0.5]}).encode()),
    "JSON list, not events": ("rank0.json", b"[1, 2, 3]"),
    "JSON string": ("rank0.json", b'"trace"'),
    "empty file": ("rank0.json", b""),
    "whitespace only": ("rank0.json", b"  \n\n "),
    "empty gzip": ("rank0.json.gz", gzip.compress(b"")),
    "no events": ("rank0.json", json.dumps({"traceEvents": []}).encode()),
    "only metadata events": ("rank0.json", json.dumps({"traceEvents": [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "x"}}]}).encode()),
}


def assert_one_line_naming(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert "\n" not in text
    assert str(path) in text
    assert len(text) < 400


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_one_line_error(case, write_trace):
    name, data = BAD_FILES[case]
    path = write_trace(data, name=name)
    with pytest.raises(TracekitError) as info:
        load_run(path)
    assert_one_line_naming(info.value, path)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_cli_prints_error_and_exits_2(case, write_trace, capsys):
    name, data = BAD_FILES[case]
    path = write_trace(data, name=name)
    code = main(["summary", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(path) in err and "Traceback" not in err


def test_specific_messages(write_trace):
    cases = {
        "truncated gzip": "gzip data is truncated or corrupt",
        "truncated JSON": "truncated",
        "non-JSON": "not valid JSON",
        "JSON, not Kineto": "not a Kineto trace",
        "empty file": "empty",
        "no events": "no duration events",
    }
    for case, words in cases.items():
        name, data = BAD_FILES[case]
        with pytest.raises(TracekitError, match=words):
            load_run(write_trace(data, name=name))


def test_two_files_claiming_the_same_rank(tmp_path):
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    shutil.copy(GOOD, a)
    shutil.copy(GOOD, b)
    with pytest.raises(TracekitError, match="two traces claim rank 0") as info:
        load_run(tmp_path)
    assert str(a) in str(info.value) and str(b) in str(info.value)
    assert main(["summary", str(a), str(b)]) == 2


def test_folder_with_no_traces(tmp_path, capsys):
    (tmp_path / "README.txt").write_text("nothing here")
    with pytest.raises(TracekitError, match="no trace files") as info:
        load_run(tmp_path)
    assert_one_line_naming(info.value, tmp_path)
    assert main(["summary", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(TracekitError, match="no such file"):
        load_run(missing)
    with pytest.raises(TracekitError, match="no such file"):
        load_run([GOOD, missing])


def test_folder_mixed_with_files_is_refused(tmp_path):
    with pytest.raises(TracekitError, match="not both"):
        load_run([GOOD, tmp_path])


def test_console_script_exit_code_in_a_real_process(tmp_path):
    bad = tmp_path / "rank0.json"
    bad.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "tracekit", "summary", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_odd_field_types_are_dropped_with_a_warning(write_trace, caplog):
    """A string where a number belongs is not a time: the event is dropped and said."""
    n_good = len(parse_trace(GOOD)[0])
    doc = json.loads(GOOD_TEXT)
    xs = [e for e in doc["traceEvents"] if e.get("ph") == "X" and isinstance(e["pid"], int)]
    xs[0]["ts"] = str(xs[0]["ts"])
    xs[1]["tid"] = [1, 2]
    events, meta = parse_trace(write_trace(doc))
    check_schema(events)
    assert len(events) == n_good - 2
    assert ("2 events dropped (1 with tid missing or not an integer, 1 with ts not a "
            "number)") in caplog.text


# --- property-based: damaged real traces -------------------------------------------------------

def _sample_doc() -> dict:
    """A small trace mixing every shape the parser handles: gloo comm with Input Dims,
    NCCL kernels with collective args, launches and flows, cuda_sync waits, steps."""
    a100 = json.loads(gzip.decompress(A100.read_bytes()))
    alex = json.loads(gzip.decompress(ALEXNET.read_bytes()))
    gloo = json.loads(gzip.decompress(GLOO300.read_bytes()))
    ev = a100["traceEvents"]
    steps = [e for e in ev if str(e.get("name", "")).startswith("ProfilerStep#")][:1]
    nccl = [e for e in ev if str(e.get("name", "")).startswith("ncclKernel")][:3]
    kernels = [e for e in ev if e.get("cat") == "kernel" and e not in nccl][:5]
    corr = {e["args"]["correlation"] for e in nccl + kernels}
    launches = [e for e in ev if e.get("cat") == "cuda_runtime"
                and e.get("args", {}).get("correlation") in corr]
    sync = [e for e in alex["traceEvents"] if e.get("cat") == "cuda_sync"][:3]
    # alexnet's clock is another one (absolute µs): move its syncs next to the kernels,
    # or they are events far outside the trace's time range (dropped, with a warning)
    shift = kernels[0]["ts"] - sync[0]["ts"]
    sync = [dict(e, ts=e["ts"] + shift) for e in sync]
    meta = [e for e in ev if e.get("ph") == "M"][:6]
    flows = [e for e in ev if e.get("ph") in ("s", "f")][:4]
    base = a100["baseTimeNanoseconds"]
    gloo_events = [dict(e, ts=(e["ts"] - (base - gloo["baseTimeNanoseconds"]) / 1000)
                        if isinstance(e.get("ts"), (int, float)) else e.get("ts"))
                   for e in gloo["traceEvents"] if e.get("ph") == "X"][:6]
    return {
        "schemaVersion": 1,
        "distributedInfo": a100["distributedInfo"],
        "deviceProperties": a100["deviceProperties"],
        "baseTimeNanoseconds": base,
        "traceEvents": meta + steps + ev[:40] + nccl + kernels + launches + sync + flows + gloo_events,
    }


SAMPLE = _sample_doc()
SAMPLE_TEXT = json.dumps(SAMPLE).encode()
SAMPLE_GZ = gzip.compress(SAMPLE_TEXT)

FIELDS = ["ts", "dur", "tid", "pid", "name", "cat", "ph", "args", "args.External id",
          "args.correlation", "args.stream", "args.Input Dims", "args.Input type",
          "args.In msg nelems", "args.Collective name", "args.dtype", "args.Group size",
          "args.Process Group Ranks", "args.wait_on_stream", "args.name"]
TOP_FIELDS = ["traceEvents", "distributedInfo", "distributedInfo.rank",
              "distributedInfo.world_size", "distributedInfo.pg_config", "baseTimeNanoseconds",
              "deviceProperties"]

odd_values = st.one_of(
    st.none(), st.booleans(), st.text(max_size=8), st.sampled_from(["12", "1e3", "ProfilerStep#x"]),
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.lists(st.integers(min_value=-5, max_value=2**40), max_size=3), max_size=3),
)


def check_parse_or_user_error(data: bytes, name: str = "rank0.json") -> None:
    """The property: a valid table (and a correct summary), or a TracekitError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            events, meta = parse_trace(path)
        except TracekitError as exc:
            assert_one_line_naming(exc, path)
            return
        check_schema(events)
        assert len(events) == meta.n_events > 0
        assert (events["dur_ns"] >= 0).all()
        try:
            run = load_run(path)
        except TracekitError:
            return
        # the summary of whatever survived parsing is the one an independent, plain
        # Python recomputation from the event table gives (tests/breakdown_check.py)
        assert summarized_rows(summarize(run).steps) == expected_rows(run)


SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_undamaged_sample_parses():
    events, meta = parse_trace_bytes(SAMPLE_TEXT)
    kinds = set(events["kind"].astype(str))
    assert {"comm", "launch", "kernel", "sync", "step"} <= kinds


def parse_trace_bytes(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rank0.json"
        path.write_bytes(data)
        return parse_trace(path)


@SETTINGS
@given(st.data())
def test_truncated_anywhere(data):
    gz = data.draw(st.booleans())
    blob = SAMPLE_GZ if gz else SAMPLE_TEXT
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    check_parse_or_user_error(blob[:cut], "rank0.json.gz" if gz else "rank0.json")


@SETTINGS
@given(st.data())
def test_flipped_bytes(data):
    gz = data.draw(st.booleans())
    blob = bytearray(SAMPLE_GZ if gz else SAMPLE_TEXT)
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        pos = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
        blob[pos] ^= data.draw(st.integers(min_value=1, max_value=255))
    check_parse_or_user_error(bytes(blob), "rank0.json.gz" if gz else "rank0.json")


@SETTINGS
@given(st.data())
def test_dropped_keys(data):
    doc = copy.deepcopy(SAMPLE)
    events = doc["traceEvents"]
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        ev = events[data.draw(st.integers(min_value=0, max_value=len(events) - 1))]
        target = ev["args"] if "args" in ev and isinstance(ev["args"], dict) and \
            data.draw(st.booleans()) else ev
        if target:
            target.pop(data.draw(st.sampled_from(sorted(target))), None)
    if data.draw(st.booleans()):
        doc.pop(data.draw(st.sampled_from(sorted(doc))), None)
    check_parse_or_user_error(json.dumps(doc).encode())


def _set(obj: dict, dotted: str, value) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        inner = obj.get(head)
        if isinstance(inner, dict):
            inner[rest] = value
    else:
        obj[head] = value


@SETTINGS
@given(st.data())
def test_fields_of_the_wrong_type(data):
    doc = copy.deepcopy(SAMPLE)
    events = doc["traceEvents"]
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        ev = events[data.draw(st.integers(min_value=0, max_value=len(events) - 1))]
        _set(ev, data.draw(st.sampled_from(FIELDS)), data.draw(odd_values))
    if data.draw(st.booleans()):
        _set(doc, data.draw(st.sampled_from(TOP_FIELDS)), data.draw(odd_values))
    check_parse_or_user_error(json.dumps(doc).encode())


def test_one_trace_without_rank_is_rank_0_of_1(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(_doc_without_rank()))
    run = load_run(path)
    assert run.ranks == [0] and run.world_size == 1
    assert run.traces[0].rank_source == "assumed"
    assert any("no rank information" in n and "rank 0 of a world of 1" in n for n in run.notes)


def test_several_traces_without_rank_say_how_to_name_them(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(_doc_without_rank()))
    with pytest.raises(TracekitError, match="cannot tell which rank") as info:
        load_run(tmp_path)
    assert_one_line_naming(info.value, tmp_path / "a.json")
    assert "rank0.json.gz, rank1.json.gz" in str(info.value) and "b.json" in str(info.value)
