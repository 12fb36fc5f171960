"""Reference outputs (TraceLens-style): the ``--json`` documents of ``tracekit summary``
and ``tracekit replay`` (baseline, and with what-ifs) on the recorded runs in
``tests/data``, compared field by field with the files checked in under
``tests/references/<run>/`` (``summary.json``, ``replay.json``, ``whatif.json``).

Any change in the numbers the tools print shows up here as a per-field diff (see
``tests/reference_diff.py`` for the tolerances and the normalizations). When a change is
intended, regenerate the files and review their git diff::

    PYTHONPATH=. python -m pytest tests/test_references.py --update-references
    git diff tests/references

(the tests then skip with "updated ..." rather than pass).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reference_diff import compare, format_diff, normalize

from tracekit.cli import main

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REFERENCES = TESTS / "references"

#: what-ifs of the issue's list, in its order
ALL_WHAT_IFS = ["fusion=4MB", "overlap=off", "dear", "fusion=1MB..16MB", "bandwidth=2x",
                "compute-scale=0.5"]
#: run name -> (CLI arguments naming the run, what-ifs it supports). ``dear`` needs the
#: forward order of the parameters, which only a ``tracekit profile`` run folder's
#: manifest has (whatif_ddp_2rank); on the bare trace folders it is a user error
#: (checked below).
RUNS = {
    "gloo_2rank": ([DATA / "gloo_2rank"], [w for w in ALL_WHAT_IFS if w != "dear"]),
    "whatif_ddp_2rank": ([DATA / "whatif_ddp_2rank"], ALL_WHAT_IFS),
    "graph_probe": ([DATA / "graph" / f"gloo_probe_rank{r}.json.gz" for r in (0, 1)],
                    [w for w in ALL_WHAT_IFS if w != "dear"]),
}
DOCUMENTS = ["replay", "summary", "whatif"]


def cli_json(capsys, args: list[str]) -> dict:
    """Run ``tracekit ARGS --json`` in this process; the parsed stdout."""
    code = main([*args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return json.loads(out)


def produce(capsys, run: str, document: str) -> dict:
    """The document as the CLI prints it, normalized (see tests/reference_diff.py)."""
    paths, what_ifs = RUNS[run]
    args = ["summary" if document == "summary" else "replay", *map(str, paths)]
    if document == "whatif":
        args += [a for w in what_ifs for a in ("--what-if", w)]
    doc = cli_json(capsys, args)
    return normalize(doc, {str(DATA): "<data>"})


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from an unrelated working directory: nothing may depend on it."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("run", sorted(RUNS))
def test_matches_reference(run, document, capsys, elsewhere, recording_machine_cores,
                           update_references):
    got = produce(capsys, run, document)
    path = REFERENCES / run / f"{document}.json"
    if update_references:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n")
        pytest.skip(f"updated {path.relative_to(TESTS.parent)} (--update-references)")
    assert path.exists(), (f"no reference {path}; create it with "
                           "'pytest tests/test_references.py --update-references'")
    reference = json.loads(path.read_text())
    diff = compare(reference, got)
    if diff:
        pytest.fail(format_diff(f"{run}/{document}.json", diff), pytrace=False)


def test_outputs_are_deterministic(capsys, recording_machine_cores):
    """The same input twice in one process gives the same document (no state carried
    over between runs, no dependence on dict or set order)."""
    first = produce(capsys, "whatif_ddp_2rank", "whatif")
    again = produce(capsys, "whatif_ddp_2rank", "whatif")
    assert first == again


def test_the_core_count_pin_matters(capsys, recording_machine_cores, monkeypatch):
    """The references are only machine-independent because the fixture pins the core
    count: check that it is the input it claims to be (another core count changes the
    core-sharing prediction and its note)."""
    pinned = produce(capsys, "gloo_2rank", "whatif")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    other = produce(capsys, "gloo_2rank", "whatif")
    notes = [n for n in pinned["what_if_notes"] if "this machine's" in n]
    assert notes and "assumed 2" in notes[0]
    assert compare(pinned["what_ifs"], other["what_ifs"])


@pytest.mark.parametrize("run", ["gloo_2rank", "graph_probe"])
def test_dear_needs_a_run_folder(run, capsys):
    """Why ``dear`` is left out of those runs' what-ifs."""
    paths, _ = RUNS[run]
    code = main(["replay", *map(str, paths), "--json", "--what-if", "dear"])
    _, err = capsys.readouterr()
    assert code == 2 and "no forward order" in err and "tracekit profile" in err
