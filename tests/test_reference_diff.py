"""The reference comparison helper (tests/reference_diff.py): it finds differences, names
them by path, and its tolerances let through only floating-point noise."""

from __future__ import annotations

import json
import math

import pytest
from reference_diff import compare, format_diff, normalize, numbers_match

REF = {
    "step_ms": 23.877938,
    "steps": [{"step": 2, "ms": 28.6}, {"step": 3, "ms": 17.7}],
    "what_ifs": [{"spec": "fusion=4MB", "speedup": 1.0423, "notes": ["a", "b"]},
                 {"spec": "dear", "speedup": 0.65, "best": "x"}],
    "flag": True,
    "nothing": None,
}


def copy(doc):
    return json.loads(json.dumps(doc))


def test_identical_documents_have_no_diff():
    assert compare(REF, copy(REF)) == []
    assert compare(float("nan"), float("nan")) == []
    assert compare(math.inf, math.inf) == []


def test_a_changed_number_is_one_line_with_the_relative_change():
    got = copy(REF)
    got["what_ifs"][0]["speedup"] = 1.0611
    assert compare(REF, got) == ["what_ifs[0].speedup: reference 1.0423, got 1.0611 (+1.8%)"]


def test_every_kind_of_difference_is_reported():
    got = copy(REF)
    got["steps"][1]["ms"] = 17.0                  # number
    got["what_ifs"][0]["notes"][1] = "c"         # string in a list
    del got["what_ifs"][1]["best"]               # missing key
    got["what_ifs"][1]["sweep"] = []             # extra key
    got["steps"].append({"step": 4, "ms": 1.0})  # extra item
    got["flag"] = 1                              # bool vs number: not equal
    got["nothing"] = 0.0
    got["step_ms"] = "23.877938"                 # type
    lines = compare(REF, got)
    assert lines == [
        "step_ms: reference 23.877938 (float), got '23.877938' (str)",
        "steps: reference has 2 items, got 3",
        "steps[1].ms: reference 17.7, got 17 (-3.95%)",
        "steps[2]: extra item (got {'step': 4, 'ms': 1.0})",
        "what_ifs[0].notes[1]: reference 'b', got 'c'",
        "what_ifs[1].best: missing (reference 'x')",
        "what_ifs[1].sweep: extra key (got [])",
        "flag: reference True (bool), got 1 (int)",
        "nothing: reference None (NoneType), got 0 (float)",
    ]
    message = format_diff("run/whatif.json", lines)
    assert message.splitlines()[0] == "run/whatif.json: 9 field(s) differ from the reference"
    assert "--update-references" in message


def test_missing_list_items_and_a_changed_zero():
    assert compare([1, 2, 3], [1, 2]) == ["<document>: reference has 3 items, got 2",
                                          "[2]: missing (reference 3)"]
    assert compare({"x": 0.0}, {"x": 0.5}) == ["x: reference 0, got 0.5 (+0.5)"]
    assert compare({"x": 1.0}, {"x": float("nan")}) == ["x: reference 1, got nan"]


@pytest.mark.parametrize("ref, got, same", [
    (23.877938, 23.877938 * (1 + 5e-7), True),    # floating-point noise passes
    (23.877938, 23.877938 * (1 + 5e-6), False),   # a real change, even a small one, fails
    (0.0, 5e-10, True),                           # absolute tolerance near zero
    (0.0, 1e-6, False),
    (1e9, 1e9 + 500, True),                       # relative tolerance scales
    (1e9, 1e9 + 2000, False),
    (math.inf, 1e308, False),
    (float("nan"), 0.0, False),
])
def test_tolerances(ref, got, same):
    assert numbers_match(ref, got) is same
    assert (compare({"v": ref}, {"v": got}) == []) is same


def test_tolerances_are_adjustable():
    assert compare(1.0, 1.01) != [] and compare(1.0, 1.01, rel=0.02) == []
    assert compare(0.0, 0.1, abs_tol=0.2) == []


def test_normalize_replaces_path_prefixes_everywhere():
    doc = {"notes": ["/x/tests/data/run/rank0.json: odd", "keep"],
           "/x/tests/data/k": 1.5, "n": 2}
    out = normalize(doc, {"/x/tests/data": "<data>", "/x": "<root>"})
    assert out == {"notes": ["<data>/run/rank0.json: odd", "keep"], "<data>/k": 1.5, "n": 2}
