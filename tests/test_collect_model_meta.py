"""Model metadata and module annotations, in process: which module first uses each
parameter, and fwd/bwd ranges that change no value and survive in-place ops."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from collectors.annotations import BWD_PREFIX, FWD_PREFIX, ModuleAnnotator  # noqa: E402
from collectors.model_meta import ModelRecorder, parse_bucket_indices  # noqa: E402

pytestmark = pytest.mark.torch


class Tied(nn.Module):
    """Embedding and head share a weight; `spare` is never called; `block` runs twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU(inplace=True))
        self.spare = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, tokens):
        x = self.block(self.block(self.embed(tokens))) * self.scale
        return self.head(x)


def test_forward_units_and_parameter_table():
    model = Tied()
    rec = ModelRecorder(model)
    names = [p["name"] for p in rec.parameters]
    # shared weight listed once, under its first registration
    assert names == ["scale", "embed.weight", "block.0.weight", "block.0.bias",
                     "spare.weight", "spare.bias"]
    assert rec.forward_units == []  # nothing ran yet
    model(torch.randint(0, 10, (2, 3)))
    units = [(u.module, [names[i] for i in u.params]) for u in rec.forward_units]
    assert units == [
        ("", ["scale", "spare.weight", "spare.bias"]),  # root runs first; absorbs `spare`
        ("embed", ["embed.weight"]),                     # the tied head adds nothing
        ("block.0", ["block.0.weight", "block.0.bias"]),
    ]
    assert rec.ddp_config is None
    assert rec.to_manifest()["forward_order"][2] == {"module": "block.0", "params": [2, 3]}
    model(torch.randint(0, 10, (2, 3)))  # later forwards change nothing
    assert [u.module for u in rec.forward_units] == ["", "embed", "block.0"]


def test_ddp_bucket_text_parses():
    assert parse_bucket_indices("31 30, 29 28 27") == [[31, 30], [29, 28, 27]]
    assert parse_bucket_indices("") == []


def _grads(model, x):
    model.zero_grad(set_to_none=True)
    model(x).pow(2).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def test_annotations_change_no_value_and_mark_backward_on_its_thread():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Linear(16, 4))
    x = torch.randn(5, 16)
    rec = ModelRecorder(model)
    model(x)
    errors: list[str] = []
    annot = ModuleAnnotator(rec, errors.append)
    plain = _grads(model, x)
    annot.enable()
    with torch.profiler.profile() as prof:
        hooked = _grads(model, x)
    annot.disable()
    assert errors == []
    for a, b in zip(plain, hooked):
        assert torch.equal(a, b)
    events = prof.events()
    ranges = {e.name: e for e in events if e.name.startswith(("tracekit.", "AddmmBackward0"))}
    assert {FWD_PREFIX + "0", FWD_PREFIX + "2", BWD_PREFIX + "0", BWD_PREFIX + "2"} <= set(ranges)
    bwd_threads = {e.thread for e in events if e.name == "AddmmBackward0"}
    assert {ranges[BWD_PREFIX + "0"].thread, ranges[BWD_PREFIX + "2"].thread} == bwd_threads
    # the last layer's backward ends before the first layer's begins
    last, first = ranges[BWD_PREFIX + "2"], ranges[BWD_PREFIX + "0"]
    assert last.time_range.end <= first.time_range.start
    assert not annot._handles  # disable removed every hook
