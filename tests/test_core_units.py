"""Sizes in binary units and rates in decimal ones (tracekit.core.units)."""

from __future__ import annotations

import pytest

from tracekit.core.units import (
    MIB,
    RATE_UNITS,
    SIZE_UNITS,
    format_rate,
    format_size,
    parse_rate,
    parse_size,
)
from tracekit.errors import TracekitError


@pytest.mark.parametrize(("text", "nbytes"), [
    ("4MB", 4 * MIB), ("0.5MB", MIB // 2), ("1048576", MIB), ("512KB", 512 << 10),
    ("1GB", 1 << 30), ("2MiB", 2 * MIB), ("64kb", 64 << 10), ("100B", 100), ("3k", 3072),
    (" 25 mb ", 25 * MIB), ("1e3", 1000), (".5KB", 512), ("1.5g", 3 << 29),
])
def test_parse_size_is_binary(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize(("nbytes", "text"), [
    (4 * MIB, "4MB"), (MIB // 2, "512KB"), (1 << 30, "1GB"), (1536 * 1024, "1.5MB"),
    (1000, "1000B"), (1023, "1023B"), (1024, "1KB"), (3 << 29, "1.5GB"), (0, "0B"),
])
def test_format_size_picks_the_largest_exact_unit(nbytes, text):
    assert format_size(nbytes) == text


def test_sizes_round_trip():
    for n in (1, 100, 1024, MIB, 4 * MIB, MIB // 2, 1536 * 1024, 1 << 30, 5 << 30):
        assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(("text", "bps"), [
    ("100Gbps", 12.5e9), ("10GB/s", 1e10), ("400Mbps", 50e6), ("1GiB/s", 2**30),
    ("8bps", 1.0), ("2 tbps", 2.5e11), ("1.5KiB/s", 1536.0),
])
def test_parse_rate_is_decimal_unless_binary(text, bps):
    assert parse_rate(text) == pytest.approx(bps)


@pytest.mark.parametrize(("bps", "text"), [
    (12.5e9, "100Gbps"), (1e10, "80Gbps"), (1.25e11, "1Tbps"), (50e6, "400Mbps"),
    (1e5, "100000B/s"), (1.25e5, "1Mbps"), (100.0, "100B/s"),
])
def test_format_rate_in_bits_per_second(bps, text):
    assert format_rate(bps) == text


@pytest.mark.parametrize(("text", "message"), [
    ("lots", "cannot read size 'lots'; expected a number with an optional unit B, KB, MB or "
             "GB (binary, as DDP's bucket_cap_mb), e.g. fusion=25MB or fusion=0.5MB"),
    ("4TB", "cannot read size '4TB'"),
    ("0.1B", "size '0.1B' is below one byte; e.g. fusion=4MB"),
    ("0", "size '0' is below one byte"),
])
def test_bad_sizes_say_what_is_expected(text, message):
    with pytest.raises(TracekitError) as err:
        parse_size(text)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("text", "message"), [
    ("fast", "cannot read bandwidth 'fast'; expected a factor like 2x or a rate like "
             "100Gbps, 400Mbps or 10GB/s, e.g. bandwidth=2x"),
    ("100", "cannot read bandwidth '100'"),
    ("10 furlongs", "cannot read bandwidth '10 furlongs'"),
    ("0Gbps", "bandwidth '0Gbps' must be positive; e.g. bandwidth=100Gbps"),
])
def test_bad_rates_say_what_is_expected(text, message):
    with pytest.raises(TracekitError) as err:
        parse_rate(text)
    assert str(err.value).startswith(message)


def test_unit_tables():
    assert SIZE_UNITS["mb"] == SIZE_UNITS["mib"] == SIZE_UNITS["m"] == MIB == 1 << 20
    assert RATE_UNITS["gbps"] == 1e9 / 8 and RATE_UNITS["gib/s"] == 2.0**30


