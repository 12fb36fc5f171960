"""The measured error that widens each what-if's interval (replay/validated_error.py) and
the table it is built from (benchmarks/validated_error.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from validated_error import build_table, conformal_width  # noqa: E402

from replay.validated_error import TABLE, family_of, validated_error

TABLE_DOC = {"quantile": 0.95, "families": {
    "fusion": {"log_width": 0.10, "n": 60}, "dear": {"log_width": 0.15, "n": 12},
    "dear+fusion": {"log_width": 0.25, "n": 12}, "bandwidth": {"log_width": 0.2, "n": 24}}}


def test_a_family_is_its_what_ifs_keys_sorted():
    assert family_of(["fusion", "dear"]) == "dear+fusion" == family_of(["dear", "fusion"])
    assert family_of(["fusion", "fusion"]) == "fusion"


def test_a_measured_family_takes_its_own_width_a_combination_its_widest_part():
    assert validated_error(["fusion"], TABLE_DOC).log_width == 0.10
    assert validated_error(["fusion", "dear"], TABLE_DOC).log_width == 0.25  # measured itself
    combo = validated_error(["fusion", "bandwidth"], TABLE_DOC)
    assert combo.log_width == 0.2 and combo.family == "bandwidth+fusion"
    assert validated_error(["workers"], TABLE_DOC) is None
    assert validated_error(["workers", "fusion"], TABLE_DOC) is None  # a part never measured
    note = validated_error(["dear"], TABLE_DOC).note()
    assert "±16.2%" in note and "95th percentile of 12" in note


def test_the_width_is_the_split_conformal_quantile():
    errors = [i / 100 for i in range(1, 20)]  # 19 values: ceil(20 * 0.95) = 19th
    assert conformal_width(errors, 0.95) == pytest.approx(0.19)
    assert conformal_width(errors, 0.5) == pytest.approx(0.10)  # ceil(10) = 10th
    assert conformal_width([0.3, 0.1], 0.95) == pytest.approx(0.3)  # past n: the largest


def test_the_table_is_built_from_shaped_link_rows_by_family():
    rows = [{"spec": "fusion=1MB", "predicted": 1.1, "measured": 1.0},
            {"spec": "fusion=4MB", "predicted": 1.0, "measured": 1.0},
            {"spec": "dear+fusion=4MB", "predicted": 0.9, "measured": 1.0}]
    report = [{"rate": "4gbit", "rows": rows},
              {"rate": "loopback", "rows": [{"spec": "dear", "predicted": 2.0, "measured": 1.0}]}]
    table = build_table([report], quantile=0.95, source="test")
    assert set(table["families"]) == {"fusion", "dear+fusion"}
    assert table["families"]["fusion"]["n"] == 2
    assert table["families"]["fusion"]["log_width"] == pytest.approx(math.log(1.1), abs=1e-5)


def test_the_shipped_table_covers_every_what_if_the_benchmark_measures():
    """The table beside the module is read by every prediction: it must parse and hold
    the families issue 11's and 16's what-ifs belong to."""
    assert TABLE.exists()
    for keys in (["fusion"], ["overlap"], ["dear"], ["dear", "fusion"], ["bandwidth"],
                 ["fsdp"], ["fsdp", "reshard"], ["reshard"], ["stragglers"]):
        err = validated_error(keys)
        assert err is not None and 0 < err.log_width < 1, keys
