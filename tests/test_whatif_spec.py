"""What-if SPEC strings: units, combinations, sweeps, and error messages."""

from __future__ import annotations

import pytest

from replay.whatif.bandwidth import Bandwidth
from replay.whatif.comm_scale import CommScale
from replay.whatif.compute_scale import ComputeScale
from replay.whatif.dear import DeAR
from replay.whatif.fusion import Fusion
from replay.whatif.overlap import Overlap
from replay.whatif.spec import parse_spec
from replay.whatif.values import format_size, parse_rate, parse_size
from replay.whatif.workers import Workers
from tracekit.errors import TracekitError

MiB = 1 << 20


@pytest.mark.parametrize(("text", "nbytes"), [
    ("4MB", 4 * MiB), ("25MB", 25 * MiB), ("0.5MB", MiB // 2), ("1048576", MiB),
    ("512KB", 512 << 10), ("1GB", 1 << 30), ("2MiB", 2 * MiB), ("64kb", 64 << 10),
    ("100B", 100),
])
def test_sizes_are_binary_like_bucket_cap_mb(text, nbytes):
    assert parse_size(text) == nbytes


def test_rates_are_decimal_like_links():
    assert parse_rate("100Gbps") == pytest.approx(12.5e9)
    assert parse_rate("10GB/s") == pytest.approx(10e9)
    assert parse_rate("400Mbps") == pytest.approx(50e6)
    assert parse_rate("1GiB/s") == pytest.approx(2**30)


def test_format_size_round_trips():
    for n in (MiB, 4 * MiB, MiB // 2, 1536 * 1024, 1 << 30, 100):
        assert parse_size(format_size(n)) == n
    assert format_size(MiB // 2) == "512KB"


def test_each_transform_parses_to_its_type():
    cases = {
        "fusion=4MB": Fusion(bucket_bytes=4 * MiB),
        "overlap=off": Overlap(enabled=False),
        "overlap=ON": Overlap(enabled=True),
        "dear": DeAR(),
        "bandwidth=2x": Bandwidth(factor=2.0),
        "comm-scale=0.5": CommScale(factor=0.5),
        "compute-scale=0.25": ComputeScale(factor=0.25),
        "workers=8": Workers(n=8),
    }
    for text, expected in cases.items():
        spec = parse_spec(text)
        assert not spec.is_sweep
        assert spec.variants[0].transforms == (expected,)
    bw = parse_spec("bandwidth=100Gbps").variants[0].get(Bandwidth)
    assert bw.bytes_per_s == pytest.approx(12.5e9) and bw.factor is None


def test_plus_combines_in_one_variant():
    spec = parse_spec("fusion=64MB+dear")
    assert len(spec.variants) == 1
    v = spec.variants[0]
    assert v.spec == "fusion=64MB+dear"
    assert v.get(Fusion).bucket_bytes == 64 * MiB and v.get(DeAR) == DeAR()
    assert v.get(Workers) is None


def test_ranges_double_and_lists_are_explicit():
    sweep = parse_spec("fusion=1MB..256MB")
    assert sweep.is_sweep
    assert [v.get(Fusion).bucket_bytes for v in sweep.variants] == [2**i * MiB for i in range(9)]
    assert [v.spec for v in parse_spec("fusion=1MB,4MB,16MB").variants] == [
        "fusion=1MB", "fusion=4MB", "fusion=16MB"]
    assert [v.get(Workers).n for v in parse_spec("workers=2..16").variants] == [2, 4, 8, 16]
    # an end that is not on the doubling is still included
    assert [v.get(Workers).n for v in parse_spec("workers=3..16").variants] == [3, 6, 12, 16]
    both = parse_spec("fusion=1MB..4MB+overlap=off")
    assert [v.spec for v in both.variants] == [
        "fusion=1MB+overlap=off", "fusion=2MB+overlap=off", "fusion=4MB+overlap=off"]
    grid = parse_spec("fusion=1MB,2MB+workers=2..4")
    assert len(grid.variants) == 4


def test_spec_text_is_kept_stripped():
    assert parse_spec(" fusion=4MB ").text == "fusion=4MB"


@pytest.mark.parametrize(("text", "message"), [
    ("fusion=abc", "e.g. fusion=25MB"),
    ("fusion=4XB", "B, KB, MB or GB"),
    ("fusion=", "has no value"),
    ("speed=2", "unknown what-if 'speed'"),
    ("turbo", "expected one of"),
    ("overlap=maybe", "overlap=on or overlap=off"),
    ("workers=0", "e.g. workers=8"),
    ("workers=2.5", "whole number"),
    ("bandwidth=fast", "e.g. bandwidth=2x"),
    ("comm-scale=-1", "positive number"),
    ("fusion=4MB..1MB", "small to large"),
    ("fusion=1MB+fusion=2MB", "sets fusion twice"),
    ("dear+overlap=off", "drop one of them"),
    ("fusion=1MB++dear", "empty part"),
    ("fusion=1B..1GB+workers=1..1024", "max 256"),
    ("", "empty what-if"),
])
def test_errors_say_what_was_expected(text, message):
    with pytest.raises(TracekitError, match=message.replace("+", r"\+").replace(".", r"\.")):
        parse_spec(text)
