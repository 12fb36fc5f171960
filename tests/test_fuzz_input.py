"""Property-based damage (hypothesis) of the two inputs a user hands tracekit: the
manifest and the trace events. Whatever the damage:

- no traceback: the CLI exits 0 or 2, and exit 2 is ``error:`` lines only;
- every number comes from valid events, or a warning says what was left out: the event
  table holds only events whose fields were valid numbers (their timestamps are among
  the valid ones of the file), and any event missing from it is accounted for by a
  warning naming the file.

Example counts stay modest for CI (each example parses a trace or loads a run).
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from breakdown_check import expected_rows, summarized_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracekit.analysis.breakdown import summarize
from tracekit.cli import main
from tracekit.core.kineto import _times_ns, parse_trace
from tracekit.core.run import load_run
from tracekit.core.warnings import collecting
from tracekit.errors import TracekitError

DATA = Path(__file__).parent / "data"
RUN = DATA / "whatif_ddp_2rank"
GLOO0 = DATA / "gloo_2rank" / "rank0.json.gz"
DAY_NS = 86_400 * 10**9

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

#: values of every JSON type, and the numbers that break arithmetic
odd_values = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6),
    st.sampled_from(["12", "1e3", "-1", "NaN", "rank0.trace.json.gz", "../x.json", "/etc/x"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2, 5, 10**15, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e15, -1e15, 1e400, 1e-12, 0.5]),
    st.lists(st.one_of(st.integers(-3, 40), st.text(max_size=2), st.none()), max_size=4),
    st.dictionaries(st.sampled_from(["rank", "trace", "params", "bytes", "index"]),
                    st.one_of(st.integers(-2, 20), st.text(max_size=3)), max_size=3),
)

#: values a manifest field could plausibly hold: a run should often survive them
plausible_values = st.one_of(
    st.integers(min_value=0, max_value=40), st.floats(min_value=0, max_value=100),
    st.lists(st.integers(min_value=0, max_value=15), max_size=6), st.sampled_from(["", "gloo"]),
    st.booleans(),
)
manifest_values = st.one_of(odd_values, plausible_values, plausible_values)


def _assert_clean_exit(code: int, out: str, err: str) -> None:
    assert code in (0, 2), (code, err[-2000:])
    assert "Traceback" not in err and "Usage:" not in err
    if code == 2:
        assert out == ""
        lines = [ln for ln in err.splitlines() if not ln.startswith("warning: ")]
        assert lines and all(ln.startswith("error: ") for ln in lines), err


def _finite_numbers(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


# --- manifests ---------------------------------------------------------------------------------

MANIFEST = json.loads((RUN / "manifest.json").read_text())
MANIFEST_FIELDS = [
    "schema_version", "world_size", "backend", "hosts", "command", "exit_code", "versions",
    "profiler", "overhead", "errors", "ranks", "ranks.0", "ranks.1", "ranks.0.rank",
    "ranks.1.rank", "ranks.0.trace", "ranks.1.trace", "ranks.0.host", "ranks.0.pid",
    "ranks.0.cpu_cores", "ranks.0.steps", "ranks.1.step_times_ms", "ranks.0.errors",
    "ranks.1.incomplete_steps", "ranks.0.unprofiled_step_ms", "ranks.0.nccl_log", "model",
    "model.parameters", "model.parameters.0", "model.parameters.0.index",
    "model.parameters.1.bytes", "model.parameters.0.shape", "model.parameters.0.name",
    "model.parameters.0.requires_grad", "model.parameters.2.module", "model.ddp",
    "model.ddp.buckets", "model.ddp.buckets.0", "model.ddp.buckets.0.params",
    "model.ddp.bucket_cap_mb", "model.forward_order", "model.forward_order.0.module",
    "model.forward_order.0.params",
]


def _edit(doc, dotted: str, value, delete: bool) -> None:
    *heads, last = dotted.split(".")
    obj = doc
    for h in heads:
        obj = obj[int(h)] if isinstance(obj, list) and h.isdigit() and int(h) < len(obj) \
            else obj.get(h) if isinstance(obj, dict) else None
        if obj is None:
            return
    if isinstance(obj, dict):
        if delete:
            obj.pop(last, None)
        else:
            obj[last] = value
    elif isinstance(obj, list) and last.isdigit() and int(last) < len(obj):
        obj[int(last)] = value


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(RUN, folder)
    return folder


def _damaged_manifest(data) -> dict:
    doc = copy.deepcopy(MANIFEST)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        _edit(doc, data.draw(st.sampled_from(MANIFEST_FIELDS)), data.draw(manifest_values),
              delete=data.draw(st.integers(0, 2)) == 0)
    return doc


@SETTINGS
@given(data=st.data())
def test_damaged_manifest_summary(run_folder, capsys, data):
    (run_folder / "manifest.json").write_text(json.dumps(_damaged_manifest(data)))
    code = main(["summary", str(run_folder), "--json"])
    out, err = capsys.readouterr()
    _assert_clean_exit(code, out, err)
    if code == 0:
        doc = json.loads(out)
        assert isinstance(doc["warnings"], list) and _finite_numbers(doc)
        assert all(s["ms"] > 0 for r in doc["ranks"] for s in r["steps"])


@settings(SETTINGS, max_examples=15)
@given(data=st.data())
def test_damaged_manifest_what_ifs(run_folder, capsys, data, recording_machine_cores):
    """The what-ifs that read the model table (fusion, dear) on a damaged manifest."""
    doc = copy.deepcopy(MANIFEST)
    for _ in range(data.draw(st.integers(min_value=1, max_value=2))):
        field = data.draw(st.sampled_from([f for f in MANIFEST_FIELDS if f.startswith("model")]))
        _edit(doc, field, data.draw(st.one_of(odd_values, plausible_values, plausible_values)),
              delete=data.draw(st.integers(0, 3)) == 0)
    (run_folder / "manifest.json").write_text(json.dumps(doc))
    code = main(["replay", str(run_folder), "--json", "--what-if", "fusion=64KB",
                 "--what-if", "dear"])
    out, err = capsys.readouterr()
    _assert_clean_exit(code, out, err)
    if code == 0:
        result = json.loads(out)
        assert _finite_numbers(result)
        assert all(0 < w["speedup"] < 100 for w in result["what_ifs"])


# --- events ------------------------------------------------------------------------------------

def _sample() -> dict:
    """Rank 0 of the recorded gloo run, cut to its first step: metadata, Kineto's Spans
    event and every duration event that starts in ProfilerStep#2."""
    doc = json.loads(gzip.decompress(GLOO0.read_bytes()))
    evs = doc["traceEvents"]
    step = next(e for e in evs if e.get("name") == "ProfilerStep#2")
    lo, hi = step["ts"], step["ts"] + step["dur"]
    keep = [e for e in evs if e.get("ph") != "X" or e.get("pid") == "Spans"
            or lo <= e.get("ts", 0) < hi]
    return {**doc, "traceEvents": keep}


SAMPLE = _sample()
EVENT_FIELDS = ["ts", "dur", "pid", "tid", "name", "cat", "args", "args.External id",
                "args.Input Dims", "args.Input type", "args.correlation", "ph"]


def _damaged_events(data) -> dict:
    doc = copy.deepcopy(SAMPLE)
    xs = [e for e in doc["traceEvents"] if e.get("ph") == "X" and e.get("pid") != "Spans"]
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        ev = xs[data.draw(st.integers(min_value=0, max_value=len(xs) - 1))]
        field = data.draw(st.sampled_from(EVENT_FIELDS))
        head, _, rest = field.partition(".")
        target = ev.get(head) if rest else ev
        if not isinstance(target, dict):
            continue
        key = rest or head
        if data.draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = data.draw(odd_values)
    return doc


def _valid_number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _valid_id(v) -> bool:
    """An integer, or the strings old Kineto wrote for ids ("1890023232", "stream 7")."""
    return type(v) is int or (isinstance(v, str)
                              and re.fullmatch(r"(?:stream )?-?[0-9]{1,18}", v) is not None)


def _valid_ts_ns(doc: dict) -> np.ndarray:
    """The ns timestamps of the events whose ts, dur, pid and tid are valid numbers (an
    independent oracle: the table may hold only these)."""
    base = doc.get("baseTimeNanoseconds") or 0
    ts = [e["ts"] for e in doc["traceEvents"]
          if e.get("ph") == "X" and _valid_number(e.get("ts")) and _valid_number(e.get("dur"))
          and e["dur"] >= 0 and _valid_id(e.get("pid")) and _valid_id(e.get("tid"))
          and abs(e["ts"]) < 9e15]
    return np.unique(_times_ns(np.array(ts, dtype=np.float64), base))


def _check_events(doc: dict) -> None:
    data = json.dumps(doc).encode()  # NaN and Infinity as Python's json writes them
    n_candidates = sum(1 for e in doc["traceEvents"]
                       if isinstance(e, dict) and e.get("ph") == "X" and e.get("pid") != "Spans")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rank0.json"
        path.write_bytes(data)
        with collecting() as warnings:
            try:
                events, meta = parse_trace(path)
            except TracekitError as exc:
                assert "\n" not in str(exc) and str(path) in str(exc)
                return
        ts, dur = events["ts_ns"].to_numpy(), events["dur_ns"].to_numpy()
        assert ((dur >= 0) & (dur <= DAY_NS)).all()
        assert (events["end_ns"].to_numpy() == ts + dur).all()
        # every row is a valid event of the file
        assert np.isin(ts, _valid_ts_ns(doc)).all()
        # every event left out is said
        if len(events) < n_candidates:
            assert any(w.startswith(f"{path}:") and "dropped" in w for w in warnings), warnings
        try:
            run = load_run(path)
        except TracekitError:
            return
        summary = summarize(run)
        assert summarized_rows(summary.steps) == expected_rows(run)
        span_ns = int(events["end_ns"].max() - events["ts_ns"].min())
        assert all(0 <= ms * 1e6 <= span_ns + 1 for ms in summary.steps["ms"])


def test_undamaged_sample_keeps_every_event():
    with collecting() as warnings:
        _check_events(copy.deepcopy(SAMPLE))
    assert warnings == []


@SETTINGS
@given(data=st.data())
def test_damaged_event_fields(data):
    _check_events(_damaged_events(data))


@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_damaged_events_on_the_cli(tmp_path, capsys, data):
    path = tmp_path / "rank0.json"
    path.write_text(json.dumps(_damaged_events(data)))
    code = main(["summary", str(path), "--json"])
    out, err = capsys.readouterr()
    _assert_clean_exit(code, out, err)
    if code == 0:
        doc = json.loads(out)
        assert _finite_numbers(doc)
        for w in doc["warnings"]:
            assert f"warning: {w}" in err
