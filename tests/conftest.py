"""Shared fixtures: paths of the real traces in tests/data, and a writer for small
synthetic traces.

Real traces (see tests/data/README.md for where each comes from):

- ``a100_trace``: rank 0 of 2, NCCL kernels with collective args, relative timestamps,
  ProfilerStep#4..#6.
- ``world128_traces``: ranks 0 and 1 of 128 (incomplete world), absolute timestamps,
  ProfilerStep#551, #552; ``world128_rank0_trace`` / ``world128_rank1_trace`` singly.
- ``alexnet_trace``: one GPU, cuda_sync events, no ProfilerStep.
- ``gloo300_trace``: a tiny CPU-only gloo trace, rank 34 of 300, 10 process groups.
- ``gloo_2rank_dir`` / ``gloo_2rank_traces``: a real 2-rank gloo DDP run recorded here
  with torch 2.13 (``tests/data/gloo_2rank/record.py``), ProfilerStep#2..#4.
- ``gpu_traces``: every single-file GPU-era trace above, for parametrized tests.

``trace_named(name)`` gives any of them by a short name (for parametrized tests).
``write_trace(doc, name="rank0.json", gz=False)`` writes a trace dict (or raw bytes)
to a fresh temporary folder and returns its path.

Cache entries (:mod:`tracekit.core.cache`) go to a temporary folder of the session
(``TRACEKIT_CACHE_DIR``), never beside the traces in tests/data.

``recording_machine_cores`` pins the CPU core count the what-if core-sharing model
assumes for runs whose manifest does not record it (2, the recording machine's), so
predictions do not depend on the machine running the tests. ``update_references`` is
True under ``pytest --update-references`` (``tests/test_references.py`` then rewrites
its reference files instead of comparing).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# cache entries of the traces in tests/data (and of every other test) go to one temporary
# folder of this session, never into the repository (tests of the cache's own locations
# unset this)
os.environ.setdefault("TRACEKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tracekit-test-cache-"))

A100 = DATA / "a100_world2_rank0_nccl_args.json.gz"
GLOO300 = DATA / "cpu_only_gloo_world300_rank34.json.gz"
ALEXNET = DATA / "single_gpu_alexnet.json.gz"
WORLD128 = [DATA / "world128_rank0_sendrecv.json.gz", DATA / "world128_rank1_sendrecv.json.gz"]
GLOO_2RANK = DATA / "gloo_2rank"
#: every single-file trace in tests/data, by a short name
ALL_TRACES = {
    "a100": A100,
    "gloo300": GLOO300,
    "alexnet": ALEXNET,
    "world128_rank0": WORLD128[0],
    "world128_rank1": WORLD128[1],
    "gloo_2rank_rank0": GLOO_2RANK / "rank0.json.gz",
    "gloo_2rank_rank1": GLOO_2RANK / "rank1.json.gz",
}

#: cores of the 2-core machine every CPU run in tests/data was recorded on
RECORDING_MACHINE_CORES = 2


def pytest_addoption(parser):
    parser.addoption(
        "--update-references", action="store_true", default=False,
        help="tests/test_references.py: rewrite the reference files in tests/references "
             "from the current outputs instead of comparing (review the git diff after).")


@pytest.fixture
def update_references(request) -> bool:
    return bool(request.config.getoption("--update-references"))


@pytest.fixture
def recording_machine_cores(monkeypatch) -> int:
    """The CPU core-sharing what-if model (``replay.interference.cores``) assumes this machine's
    core count when a run's manifest does not record one (every CPU run in tests/data):
    make "this machine" the 2-core machine the runs were recorded on."""
    cores = set(range(RECORDING_MACHINE_CORES))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(cores), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: RECORDING_MACHINE_CORES)
    return RECORDING_MACHINE_CORES


@pytest.fixture(autouse=True)
def _restore_tracekit_logger():
    """``tracekit.cli.cli`` points the 'tracekit' logger at the sys.stderr of the moment
    (pytest's capture stream in a test): put the logger back after each test, or later
    log records would go to a closed stream."""
    logger = logging.getLogger("tracekit")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def a100_trace() -> Path:
    return A100


@pytest.fixture
def gloo300_trace() -> Path:
    return GLOO300


@pytest.fixture
def alexnet_trace() -> Path:
    return ALEXNET


@pytest.fixture
def world128_rank0_trace() -> Path:
    return WORLD128[0]


@pytest.fixture
def world128_rank1_trace() -> Path:
    return WORLD128[1]


@pytest.fixture
def world128_traces() -> list[Path]:
    return list(WORLD128)


@pytest.fixture
def gloo_2rank_dir() -> Path:
    return GLOO_2RANK


@pytest.fixture
def gloo_2rank_traces() -> list[Path]:
    return [GLOO_2RANK / "rank0.json.gz", GLOO_2RANK / "rank1.json.gz"]


@pytest.fixture(params=sorted(ALL_TRACES))
def any_trace(request) -> Path:
    """Each real trace file in turn."""
    return ALL_TRACES[request.param]


@pytest.fixture
def trace_named():
    """``trace_named("a100") -> Path``: a real trace by its short name (see ALL_TRACES);
    ``"world128"`` and ``"gloo_2rank"`` name the two-file runs (a list, a folder)."""
    runs = {"world128": list(WORLD128), "gloo_2rank": GLOO_2RANK}
    return lambda name: runs.get(name) or ALL_TRACES[name]


@pytest.fixture
def gpu_traces() -> list[Path]:
    return [A100, ALEXNET, *WORLD128]


@pytest.fixture
def write_trace(tmp_path):
    """``write_trace(doc_or_bytes, name="rank0.json", gz=False) -> Path`` in a temp folder."""

    def write(doc, name: str = "rank0.json", gz: bool = False) -> Path:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write
