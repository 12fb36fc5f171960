"""What a command loads before it runs: ``tracekit summary`` of a cached trace is mostly
import time, so the modules only a parse, a NCCL log, a run folder's manifest, a SQLite
file or a written file need are imported when one is met, not up front."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tracekit.core import manifest, run

ROOT = Path(__file__).resolve().parent.parent

#: imported on first use only (the parser: tracekit.core.ingest.parse_trace)
_ON_USE = ("msgspec", "sqlite3", "socket", "tracekit.core.kineto", "tracekit.core.kineto_json",
           "tracekit.core.validate", "tracekit.core.collectives", "tracekit.core.nccl_kernels",
           "tracekit.core.nccl_log", "tracekit.core.manifest", "tracekit.core.parallel")


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(*sys.modules)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_summary_command_imports_no_parser_and_no_optional_reader():
    loaded = _modules_after("import tracekit.cli.summary")
    assert "pandas" in loaded and "tracekit.core.run" in loaded
    assert sorted(loaded & set(_ON_USE)) == []


def test_the_parser_is_still_there_on_use():
    loaded = _modules_after("from tracekit.core.ingest import parse_trace\n"
                            "parse_trace.__call__")
    assert "tracekit.core.kineto" not in loaded
    from tracekit.core import ingest, kineto
    assert ingest.parse_trace(ROOT / "tests/data/gloo_2rank/rank0.json.gz")[1] == \
        kineto.parse_trace(ROOT / "tests/data/gloo_2rank/rank0.json.gz")[1]


def test_run_loader_knows_the_manifest_name_without_importing_it():
    assert run._MANIFEST == manifest.MANIFEST_NAME
