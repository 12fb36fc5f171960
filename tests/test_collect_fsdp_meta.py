"""FSDP2 unit metadata and the module table (collectors/fsdp_meta.py), recorded from a
real ``fully_shard`` model in a one-rank gloo group, and their manifest fields checked on
read (old manifests without them still load)."""

from __future__ import annotations

import copy
import json

import pytest

from tracekit.core.manifest import parse_manifest
from tracekit.errors import TracekitError

pytestmark = pytest.mark.torch


@pytest.fixture
def gloo_world_1(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        yield torch
    finally:
        dist.destroy_process_group()


def _model(torch):
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.blocks = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
            self.head = nn.Linear(8, 3, bias=False)

        def forward(self, x):
            return self.head(self.blocks(self.embed(x)))

    return Net()


@pytest.mark.filterwarnings("ignore:FSDP2-wrapped module")
def test_fsdp_units_are_recorded_in_forward_order(gloo_world_1):
    torch = gloo_world_1
    from torch.distributed.fsdp import fully_shard

    from collectors.model_meta import ModelRecorder

    model = _model(torch)
    fully_shard(model.blocks[2], reshard_after_forward=False)
    fully_shard(model.blocks[0])
    fully_shard(model)  # the root: embed and head stay with it
    rec = ModelRecorder(model)
    model(torch.randint(0, 10, (2, 4))).sum().backward()
    doc = rec.to_manifest()
    names = [p["name"] for p in doc["parameters"]]
    units = {u["module"]: u for u in doc["fsdp"]["units"]}
    assert [u["module"] for u in doc["fsdp"]["units"]] == ["", "blocks.0", "blocks.2"]
    assert [names[i] for i in units[""]["params"]] == ["embed.weight", "head.weight"]
    assert [names[i] for i in units["blocks.0"]["params"]] == ["blocks.0.weight",
                                                               "blocks.0.bias"]
    assert units["blocks.0"]["class"] == "Linear"  # not FSDP's FSDPLinear
    assert units[""]["class"] == "Net"
    assert units["blocks.0"]["bytes"] == (64 + 8) * 4 and units["blocks.0"]["numel"] == 72
    assert units[""]["bytes"] == (80 + 24) * 4
    assert units["blocks.0"]["reshard_after_forward"] is True
    assert units["blocks.2"]["reshard_after_forward"] is False
    # FSDP2 keeps the root's parameters gathered after forward (reshard_after_forward
    # left at its default)
    assert units[""]["reshard_after_forward"] is False
    assert units["blocks.0"]["dtype"] == "float32"
    mods = {m["module"]: m for m in doc["modules"]}
    assert mods["blocks.1"]["class"] == "ReLU" and mods["blocks.1"]["params"] == []
    assert [names[i] for i in mods["blocks"]["params"]] == [
        "blocks.0.weight", "blocks.0.bias", "blocks.2.weight", "blocks.2.bias"]
    order = sorted((m["order"], m["module"]) for m in doc["modules"] if m["order"] is not None)
    assert [m for _, m in order] == ["", "embed", "blocks", "blocks.0", "blocks.1", "blocks.2",
                                     "head"]
    m = parse_manifest(_manifest(json.loads(json.dumps(doc))))
    assert [(u.module, u.cls, u.bytes, u.reshard_after_forward) for u in m.fsdp_units][1] == \
        ("blocks.0", "Linear", 288, True)
    assert {x.module: x.cls for x in m.modules}["blocks.2"] == "Linear"


def test_a_plain_model_has_a_module_table_and_no_fsdp(gloo_world_1):
    from collectors.model_meta import ModelRecorder

    torch = gloo_world_1
    model = _model(torch)
    rec = ModelRecorder(model)
    model(torch.randint(0, 10, (2, 4)))
    doc = rec.to_manifest()
    assert doc["fsdp"] is None
    assert [m["class"] for m in doc["modules"]][:3] == ["Net", "Embedding", "Sequential"]


def _manifest(model: dict | None = None) -> dict:
    doc = {"schema_version": 1, "world_size": 1,
           "ranks": [{"rank": 0, "trace": "rank0.trace.json.gz"}]}
    if model is not None:
        doc["model"] = model
    return doc


_PARAMS = [{"index": 0, "name": "w", "bytes": 16, "shape": [4], "dtype": "float32"}]
_UNIT = {"module": "a", "class": "Linear", "order": 1, "params": [0], "numel": 4,
         "bytes": 16, "dtype": "float32", "reshard_after_forward": True}


def test_an_old_manifest_without_the_new_fields_loads():
    m = parse_manifest(_manifest({"parameters": _PARAMS, "ddp": None, "forward_order": []}))
    assert m.fsdp_units == [] and m.modules == []


@pytest.mark.parametrize("change, field", [
    ({"bytes": -1}, "model.fsdp.units[0].bytes"),
    ({"reshard_after_forward": "yes"}, "model.fsdp.units[0].reshard_after_forward"),
    ({"params": [7]}, "model.fsdp.units[0].params"),
    ({"module": None}, "model.fsdp.units[0].module"),
])
def test_bad_fsdp_units_are_named(change, field):
    unit = {**copy.deepcopy(_UNIT), **change}
    with pytest.raises(TracekitError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(_manifest({"parameters": _PARAMS, "fsdp": {"units": [unit]}}))


def test_a_unit_listed_twice_is_an_error():
    with pytest.raises(TracekitError, match="list each FSDP unit once"):
        parse_manifest(_manifest({"parameters": _PARAMS, "fsdp": {"units": [_UNIT, _UNIT]}}))
