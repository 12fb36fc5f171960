"""The columnar cache (tracekit/core/cache.py) and parallel ingest (tracekit/core/ingest.py):
a cached table equals a parsed one, a changed trace is parsed again, a damaged entry is
never trusted, --no-cache bypasses it, and worker processes parse exactly what this
process would."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

import tracekit.core.ingest as ingest
from tracekit.cli import cli
from tracekit.core import cache
from tracekit.core.ingest import IngestOptions
from tracekit.core.kineto import parse_trace
from tracekit.core.run import load_run
from tracekit.errors import TracekitError


@pytest.fixture
def run_dir(tmp_path, gloo_2rank_traces, monkeypatch):
    """A copy of the 2-rank gloo run whose cache goes beside it (no TRACEKIT_CACHE_DIR)."""
    monkeypatch.delenv("TRACEKIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRACEKIT_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = tmp_path / "run"
    folder.mkdir()
    for p in gloo_2rank_traces:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture
def parses(monkeypatch):
    """The files parse_trace is called on (it still parses)."""
    seen = []

    def spy(path):
        seen.append(os.path.basename(path))
        return parse_trace(path)

    monkeypatch.setattr(ingest, "parse_trace", spy)
    return seen


def _serial(**kw) -> IngestOptions:
    return IngestOptions(jobs=1, **kw)


def _same_run(a, b) -> None:
    pd.testing.assert_frame_equal(a.events, b.events)
    assert a.traces == b.traces


def test_second_load_comes_from_the_cache_beside_the_run(run_dir, parses):
    first = load_run(run_dir, ingest=_serial())
    entries = sorted(p.name for p in (run_dir / cache.FOLDER).iterdir())
    assert entries == ["rank0.json.gz.tkc", "rank1.json.gz.tkc"]
    assert parses == ["rank0.json.gz", "rank1.json.gz"]
    second = load_run(run_dir, ingest=_serial())
    assert parses == ["rank0.json.gz", "rank1.json.gz"]  # nothing parsed again
    _same_run(first, second)


def test_a_changed_trace_is_parsed_again(run_dir, parses):
    load_run(run_dir, ingest=_serial())
    trace = run_dir / "rank1.json.gz"
    doc = json.loads(gzip.decompress(trace.read_bytes()))
    doc["traceEvents"] = [e for e in doc["traceEvents"]
                          if not str(e.get("name", "")).startswith("ProfilerStep#4")]
    trace.write_bytes(gzip.compress(json.dumps(doc).encode()))
    run = load_run(run_dir, ingest=_serial())
    assert parses[2:] == ["rank1.json.gz"]
    assert run.traces[1].steps == [2, 3]
    load_run(run_dir, ingest=_serial())  # the rewritten entry is used
    assert len(parses) == 3


def test_same_size_and_mtime_but_other_content_is_stale(run_dir, parses):
    trace = run_dir / "rank0.json"
    doc = json.loads(gzip.decompress((run_dir / "rank0.json.gz").read_bytes()))
    (run_dir / "rank0.json.gz").unlink()
    (run_dir / "rank1.json.gz").unlink()
    first = next(e for e in doc["traceEvents"] if e.get("ph") == "X")
    first["name"] = "aaaa"
    trace.write_text(json.dumps(doc))
    st = trace.stat()
    load_run(trace, ingest=_serial())
    first["name"] = "bbbb"  # same length, same size
    trace.write_text(json.dumps(doc))
    os.utime(trace, ns=(st.st_atime_ns, st.st_mtime_ns))
    run = load_run(trace, ingest=_serial())
    assert parses == ["rank0.json", "rank0.json"]
    assert "bbbb" in set(run.events["name"].astype(str))


def test_a_new_parser_version_invalidates_entries(run_dir, parses, monkeypatch):
    load_run(run_dir, ingest=_serial())
    monkeypatch.setattr(cache, "parser_version", lambda: "another parser")
    load_run(run_dir, ingest=_serial())
    assert len(parses) == 4


def _damage_truncate(entry):
    entry.write_bytes(entry.read_bytes()[:-100])


def _damage_flip(entry):
    data = bytearray(entry.read_bytes())
    data[-5000] ^= 0xFF  # inside the last column
    entry.write_bytes(bytes(data))


def _damage_garbage(entry):
    entry.write_bytes(b"not a cache entry at all")


def _damage_header(entry):
    data = bytearray(entry.read_bytes())
    data[20] = ord("{") if data[20] != ord("{") else ord("[")
    entry.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip, _damage_garbage,
                                    _damage_header])
def test_a_damaged_entry_is_ignored_and_rebuilt(run_dir, parses, caplog, damage):
    fresh = load_run(run_dir, ingest=_serial(cache=False))
    load_run(run_dir, ingest=_serial())
    entry = run_dir / cache.FOLDER / "rank0.json.gz.tkc"
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        again = load_run(run_dir, ingest=_serial())
    assert any("damaged cache entry" in r.getMessage() for r in caplog.records)
    assert parses[-1] == "rank0.json.gz"
    _same_run(fresh, again)
    key = cache.trace_key(run_dir / "rank0.json.gz")
    assert cache.read_entry(entry, key) is not None  # rebuilt, valid again


def test_a_code_out_of_range_is_damage(run_dir, monkeypatch):
    load_run(run_dir, ingest=_serial())
    entry = run_dir / cache.FOLDER / "rank0.json.gz.tkc"
    key = cache.trace_key(run_dir / "rank0.json.gz")
    events, meta, logs = cache.read_entry(entry, key)
    encode = cache._encode_columns

    def fewer_kinds(table):
        specs, arrays = encode(table)
        next(s for s in specs if s["name"] == "kind")["categories"] = ["step"]
        return specs, arrays

    monkeypatch.setattr(cache, "_encode_columns", fewer_kinds)
    cache.write_entry(entry, key, events, meta, logs)
    with pytest.raises(cache.DamagedEntry, match="out of range"):
        cache.read_entry(entry, key)


def test_no_cache_neither_reads_nor_writes(run_dir, parses, monkeypatch):
    load_run(run_dir, ingest=_serial(cache=False))
    assert not (run_dir / cache.FOLDER).exists()
    load_run(run_dir, ingest=_serial())
    assert (run_dir / cache.FOLDER).is_dir()
    load_run(run_dir, ingest=_serial(cache=False))  # the entries are there: not read
    assert len(parses) == 6
    monkeypatch.setenv("TRACEKIT_NO_CACHE", "1")
    load_run(run_dir, ingest=_serial())
    assert len(parses) == 8


def test_unwritable_run_folder_uses_the_user_cache(run_dir, tmp_path, parses):
    (run_dir / cache.FOLDER).write_text("a file where the cache folder would go")
    load_run(run_dir, ingest=_serial())
    entries = list((tmp_path / "xdg" / "tracekit").rglob("*.tkc"))
    assert sorted(p.name for p in entries) == ["rank0.json.gz.tkc", "rank1.json.gz.tkc"]
    load_run(run_dir, ingest=_serial())
    assert len(parses) == 2


def test_cache_dir_option(run_dir, tmp_path, parses):
    where = tmp_path / "elsewhere"
    load_run(run_dir, ingest=_serial(cache_dir=str(where)))
    assert len(list(where.rglob("*.tkc"))) == 2 and not (run_dir / cache.FOLDER).exists()


def test_warnings_are_repeated_from_the_cache(write_trace, caplog, monkeypatch):
    monkeypatch.delenv("TRACEKIT_CACHE_DIR", raising=False)
    events = [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1,
               "ts": 10 + i, "dur": 1} for i in range(3)]
    events.append({"ph": "X", "cat": "cpu_op", "name": "bad", "pid": 1, "tid": 1,
                   "ts": 1e300, "dur": 1})
    path = write_trace({"traceEvents": events})
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tracekit"):
            run = load_run(path, ingest=_serial())
        logged = [r.getMessage() for r in caplog.records if "events dropped" in r.getMessage()]
        assert logged, "warned on every load"
        assert [w for w in run.warnings if "events dropped" in w], "and kept for --json"
    assert (path.parent / cache.FOLDER / (path.name + cache.SUFFIX)).exists()


def test_worker_processes_parse_what_this_process_parses(gloo_2rank_traces, world128_traces,
                                                         a100_trace):
    files = [*world128_traces]
    serial = load_run(files, ingest=_serial(cache=False))
    pooled = load_run(files, ingest=IngestOptions(jobs=2, cache=False))
    _same_run(serial, pooled)
    assert load_run(gloo_2rank_traces, ingest=IngestOptions(jobs=2, cache=False)).ranks == [0, 1]


def test_worker_logs_reach_this_process(tmp_path, caplog):
    base = {"ph": "X", "cat": "cpu_op", "name": "op", "pid": 1, "tid": 1, "dur": 1}
    paths = []
    for r in range(2):
        evs = [{**base, "ts": 10.0 + i} for i in range(3)] + [{**base, "ts": 1e300}]
        p = tmp_path / f"rank{r}.json"
        p.write_text(json.dumps({"distributedInfo": {"rank": r, "world_size": 2},
                                 "traceEvents": evs}))
        paths.append(p)
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        run = load_run(paths, ingest=IngestOptions(jobs=2, cache=False))
    warned = [r.getMessage() for r in caplog.records if "events dropped" in r.getMessage()]
    assert len(warned) == 2
    assert sorted(w.split(":")[0] for w in run.warnings if "events dropped" in w) == [
        str(p) for p in paths], "kept for --json too"


def test_an_error_in_a_worker_is_the_same_error(tmp_path, gloo_2rank_traces):
    bad = tmp_path / "rank1.json"
    bad.write_text('{"traceEvents": [')
    with pytest.raises(TracekitError, match="truncated|not valid JSON") as e:
        load_run([gloo_2rank_traces[0], bad], ingest=IngestOptions(jobs=2, cache=False))
    assert str(bad) in str(e.value)


def test_jobs_must_be_positive():
    with pytest.raises(TracekitError, match="jobs"):
        IngestOptions(jobs=0)


def test_cli_jobs_and_no_cache(run_dir):
    runner = CliRunner()
    a = runner.invoke(cli, ["summary", str(run_dir), "--json", "--jobs", "2", "--no-cache"])
    assert a.exit_code == 0, a.output
    assert not (run_dir / cache.FOLDER).exists()
    b = runner.invoke(cli, ["summary", str(run_dir), "--json", "--jobs", "1"])
    c = runner.invoke(cli, ["summary", str(run_dir), "--json"])
    assert b.exit_code == c.exit_code == 0
    assert (run_dir / cache.FOLDER).is_dir()
    assert json.loads(a.output) == json.loads(b.output) == json.loads(c.output)
    bad = runner.invoke(cli, ["replay", str(run_dir), "--jobs", "0"])
    assert bad.exit_code == 2 and "--jobs" in bad.output
