"""Files other profilers write get a one-line error naming the format and how to get a
Kineto trace (tracekit/core/formats.py). The rocprofv3 JSON is a real file (test_corpus);
the others are built here in the shape each tool writes: SQLite databases with the table
names Nsight Systems (``nsys export --type sqlite``: ``StringIds``,
``CUPTI_ACTIVITY_KIND_KERNEL``) and rocprofv3 / rocpd (``rocpd_*`` tables) create, and a
Perfetto protobuf whose first bytes are a TracePacket (field 1, length-delimited)."""

from __future__ import annotations

import sqlite3

import pytest

from tracekit.cli import main
from tracekit.core.run import load_run
from tracekit.errors import TracekitError


def _sqlite(path, tables):
    with sqlite3.connect(path) as db:
        for t in tables:
            db.execute(f"create table {t} (id integer)")
    return path


@pytest.mark.parametrize("name, tables, words", [
    ("report.sqlite", ["StringIds", "CUPTI_ACTIVITY_KIND_KERNEL", "TARGET_INFO_GPU"],
     "Nsight Systems SQLite export"),
    ("results.db", ["rocpd_info_agent", "rocpd_kernel_dispatch"], "rocpd / rocprofv3 SQLite"),
    ("other.sqlite", ["t"], "a SQLite database"),
])
def test_sqlite_files_are_named(tmp_path, name, tables, words):
    path = _sqlite(tmp_path / name, tables)
    with pytest.raises(TracekitError, match=words) as info:
        load_run(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "export_chrome_trace" in text


@pytest.mark.parametrize("name, words", [
    ("trace.pftrace", "Perfetto protobuf"),
    ("profile.nsys-rep", "Nsight Systems report"),
    ("host.xplane.pb", "XSpace"),
    ("capture.bin", "protobuf"),
])
def test_binary_formats_are_named(tmp_path, name, words, capsys):
    path = tmp_path / name
    path.write_bytes(b"\x0a\x85\x01\x12\x00\xff\xfe\x00\x01binary")
    with pytest.raises(TracekitError, match=words):
        load_run(path)
    assert main(["summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_a_folder_of_other_formats_says_so(tmp_path):
    _sqlite(tmp_path / "report.sqlite", ["StringIds"])
    (tmp_path / "trace.pftrace").write_bytes(b"\x0a\x01\x00")
    with pytest.raises(TracekitError, match="tracekit does not read"):
        load_run(tmp_path)


def test_kineto_json_is_not_mistaken_for_another_format(a100_trace):
    assert load_run(a100_trace).ranks == [0]
