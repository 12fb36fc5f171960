"""The what-if registry: every what-if is complete, and a new one is one class that the
parser, the evaluator, the help and the JSON output pick up without other edits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from click.testing import CliRunner
from test_whatif_transforms import _evaluate, ddp_run

from replay.whatif import registry
from replay.whatif.registry import Stage, WhatIf, register
from replay.whatif.spec import parse_spec
from tracekit.graph.model import NodeKind

ALL = registry.what_ifs()


def test_the_registry_finds_every_what_if_module():
    keys = {c.key for c in ALL}
    assert {"fusion", "overlap", "dear", "bandwidth", "comm-scale", "compute-scale",
            "workers", "stragglers", "slow-rank"} <= keys
    # stage order: gradient re-plans, then network, then devices
    assert [c.stage for c in ALL] == sorted(c.stage for c in ALL)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.key)
def test_each_what_if_documents_and_parses_its_example(cls):
    assert cls.key == cls.key.lower() and cls.syntax.startswith(cls.key) and cls.summary
    (variant,) = parse_spec(cls.example).variants
    (t,) = variant.transforms
    assert isinstance(t, cls) and t.stage is cls.stage
    assert parse_spec(t.label).variants[0].transforms == (t,)  # the label round-trips
    assert t.to_json()["what_if"] == cls.key
    if cls.range_example is not None:
        sweep = parse_spec(cls.range_example)
        assert sweep.is_sweep and len(sweep.variants) >= 2
    else:
        with pytest.raises(Exception, match="not a range|cannot"):
            parse_spec(f"{cls.key}=1..2")


def test_a_key_is_registered_once():
    with pytest.raises(TypeError, match="taken by 'fusion'"):
        @register
        @dataclass(frozen=True, kw_only=True)
        class Bucket2(WhatIf):  # noqa: F811 - never registered
            key = "bucket"
            syntax = example = "bucket=1"
            summary = "clash"
            stage = Stage.DEVICES

            @classmethod
            def parse(cls, value):
                return cls()

            label = "bucket"

            def apply(self, edit):
                pass


@pytest.fixture
def halve_backward(monkeypatch):
    """A what-if defined here, in one class, as a new module would: ``halve=backward``
    halves the AccumulateGrad ops."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))

    @register
    @dataclass(frozen=True, kw_only=True)
    class Halve(WhatIf):
        key = "halve"
        syntax = "halve=backward"
        example = "halve=backward"
        summary = "the gradient accumulation ops take half as long"
        stage = Stage.DEVICES

        @classmethod
        def parse(cls, value):
            return cls()

        @property
        def label(self):
            return "halve=backward"

        def apply(self, edit):
            names = np.array(edit.graph.names, dtype=object)[edit.graph.name]
            sel = (names == "torch::autograd::AccumulateGrad") & (
                edit.graph.kind == NodeKind.COMPUTE)
            edit.dur_ns = np.where(sel, edit.dur_ns // 2, edit.dur_ns)
            edit.notes.append(f"halved {int(sel.sum())} ops")

    return Halve


def test_a_new_what_if_is_parsed_evaluated_and_listed(halve_backward):
    assert "halve=backward" in registry.known()
    run, g = ddp_run()
    base, (res,) = _evaluate(run, g, ["halve=backward+compute-scale=1"])
    assert "halved 8 ops" in res.notes  # 4 gradients x 2 ranks
    assert res.result.median_step_ms < base.median_step_ms

    from tracekit.cli import cli

    out = CliRunner().invoke(cli, ["replay", "--help"]).output
    assert "halve=backward" in out and "the gradient accumulation ops take half" in out
