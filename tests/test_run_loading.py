"""Loading a run: a folder with or without manifest.json, one file, a list of files;
ranks from distributedInfo, the manifest or the file name; progress logging."""

from __future__ import annotations

import gzip
import json
import logging
import shutil

import pytest

from tracekit.core.kineto import parse_trace
from tracekit.core.manifest import MANIFEST_NAME
from tracekit.core.run import concat_events, discover_trace_files, load_run
from tracekit.core.schema import check_schema
from tracekit.errors import TracekitError


def test_folder_without_manifest(gloo_2rank_dir, gloo_2rank_traces):
    run = load_run(gloo_2rank_dir)
    check_schema(run.events)
    assert run.ranks == [0, 1]
    assert run.world_size == 2 and run.complete
    assert run.backend == "gloo"
    assert run.manifest is None
    assert run.notes == []
    assert run.steps() == [2, 3, 4]
    for rank, path in enumerate(gloo_2rank_traces):
        alone, meta = parse_trace(path)
        mine = run.rank_events(rank).reset_index(drop=True)
        assert len(mine) == len(alone) == meta.n_events
        assert mine["ts_ns"].tolist() == alone["ts_ns"].tolist()
        assert mine["name"].astype(str).tolist() == alone["name"].astype(str).tolist()
        assert run.traces[rank].rank_source == "distributedInfo"


def test_discovery_ignores_non_traces(gloo_2rank_dir, tmp_path):
    for p in gloo_2rank_dir.glob("*.json.gz"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "notes.txt").write_text("not a trace")
    (tmp_path / "record.py").write_text("")
    (tmp_path / "sub").mkdir()
    found = [p.name for p in discover_trace_files(tmp_path)]
    assert found == ["rank0.json.gz", "rank1.json.gz"]


def test_list_of_files_from_an_incomplete_world(world128_traces):
    run = load_run(world128_traces)
    check_schema(run.events)
    assert run.ranks == [0, 1]
    assert run.world_size == 128 and not run.complete
    assert any("incomplete world" in n and "2 of 128" in n for n in run.notes)
    assert run.steps() == [551, 552]
    assert set(run.events["rank"]) == {0, 1}


def test_single_file(a100_trace):
    run = load_run(a100_trace)
    assert run.ranks == [0]
    assert run.world_size == 2 and run.backend == "nccl"
    assert run.path == str(a100_trace)
    assert run.has_gpu


def test_single_file_without_steps_gets_a_note(alexnet_trace):
    run = load_run(alexnet_trace)
    assert run.steps() == [0]
    assert any("no ProfilerStep" in n for n in run.notes)
    assert (run.events["step"] == 0).all()


def test_categories_survive_concatenation(world128_traces, gloo_2rank_traces):
    run = load_run(world128_traces)
    for col in ("name", "lane_name", "kind", "collective", "dtype"):
        assert str(run.events[col].dtype) == "category"
    both = concat_events([parse_trace(p)[0] for p in gloo_2rank_traces])
    check_schema(both)
    assert len(both) == sum(parse_trace(p)[0].shape[0] for p in gloo_2rank_traces)


def _write_manifest(folder, ranks: dict[int, str], world: int = 2) -> None:
    doc = {"schema_version": 1, "world_size": world, "backend": "gloo",
           "ranks": [{"rank": r, "trace": f} for r, f in ranks.items()]}
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))


def test_folder_with_manifest_uses_its_ranks_and_files(gloo_2rank_traces, tmp_path):
    shutil.copy(gloo_2rank_traces[0], tmp_path / "a.json.gz")
    shutil.copy(gloo_2rank_traces[1], tmp_path / "b.json.gz")
    shutil.copy(gloo_2rank_traces[1], tmp_path / "stray.json.gz")  # not in the manifest
    _write_manifest(tmp_path, {0: "a.json.gz", 1: "b.json.gz"})
    run = load_run(tmp_path)
    assert run.manifest is not None and run.manifest.world_size == 2
    assert run.ranks == [0, 1]
    assert {m.rank_source for m in run.traces.values()} == {"manifest"}
    assert [run.traces[r].path for r in (0, 1)] == [str(tmp_path / "a.json.gz"),
                                                     str(tmp_path / "b.json.gz")]


def test_manifest_rank_overrides_the_trace(gloo_2rank_traces, tmp_path):
    shutil.copy(gloo_2rank_traces[0], tmp_path / "t.json.gz")  # says rank 0 inside
    _write_manifest(tmp_path, {5: "t.json.gz"}, world=8)
    run = load_run(tmp_path)
    assert run.ranks == [5]
    assert set(run.events["rank"]) == {5}
    check_schema(run.events)


def test_manifest_listing_a_missing_trace_is_an_error(tmp_path, gloo_2rank_traces):
    shutil.copy(gloo_2rank_traces[0], tmp_path / "a.json.gz")
    _write_manifest(tmp_path, {0: "a.json.gz", 1: "gone.json.gz"})
    with pytest.raises(TracekitError, match="gone.json.gz"):
        load_run(tmp_path)


def _bare_trace(rank_in_doc: int | None = None) -> dict:
    doc = {"traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1,
         "ts": 0.0, "dur": 10.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 1.0,
         "dur": 5.0},
    ]}
    if rank_in_doc is not None:
        doc["distributedInfo"] = {"rank": rank_in_doc, "world_size": 8}
    return doc


@pytest.mark.parametrize(("name", "rank"), [("worker3.json", 3), ("rank-5.json.gz", 5),
                                             ("node_rank7.pt.trace.json", 7)])
def test_rank_from_file_name_when_the_trace_has_none(write_trace, name, rank):
    path = write_trace(_bare_trace(), name=name, gz=name.endswith(".gz"))
    run = load_run(path)
    assert run.ranks == [rank]
    assert run.traces[rank].rank_source == "filename"
    assert set(run.events["rank"]) == {rank}


def test_distributed_info_beats_the_file_name(write_trace):
    run = load_run(write_trace(_bare_trace(rank_in_doc=6), name="rank2.json"))
    assert run.ranks == [6] and run.world_size == 8


def test_progress_is_logged_per_file(gloo_2rank_dir, caplog):
    with caplog.at_level(logging.INFO, logger="tracekit"):
        load_run(gloo_2rank_dir, progress=True)
    parsed = [r for r in caplog.records if r.getMessage().startswith("parsed ")]
    assert len(parsed) == 2
    assert "rank0.json.gz" in parsed[0].getMessage() and "[1/2" in parsed[0].getMessage()


def test_no_progress_lines_unless_asked(gloo_2rank_dir, caplog):
    with caplog.at_level(logging.INFO, logger="tracekit"):
        load_run(gloo_2rank_dir)
    assert not [r for r in caplog.records if r.getMessage().startswith("parsed ")]


def test_gzip_and_plain_json_load_the_same(gloo_2rank_traces, tmp_path):
    plain = tmp_path / "rank0.json"
    plain.write_bytes(gzip.decompress(gloo_2rank_traces[0].read_bytes()))
    a = load_run(plain).events
    b = load_run(gloo_2rank_traces[0]).events
    assert a.equals(b)


def test_empty_folder_points_at_a_subfolder_with_traces(tmp_path, gloo_2rank_traces):
    nested = tmp_path / "iteration_10"
    nested.mkdir()
    shutil.copy(gloo_2rank_traces[0], nested / "rank0_trace.json.gz")
    with pytest.raises(TracekitError, match="iteration_10 has some"):
        load_run(tmp_path)
    assert load_run(nested).ranks == [0]
