"""Model metadata recorded inside the job: parameters, DDP buckets, forward order.

:class:`ModelRecorder` watches one module (usually the module a
``DistributedDataParallel`` wraps) and produces the manifest's ``model`` section::

    {"parameters": [{"index": 0, "name": "0.weight", "shape": [512, 512],
                     "dtype": "float32", "bytes": 1048576, "module": "0",
                     "requires_grad": true}, ...],           # registration order
     "ddp": {"bucket_cap_mb": 25.0, "first_bucket_mb": 1.0,
             "bucket_cap_bytes": 26214400, "first_bucket_bytes": 1048576,
             "gradient_as_bucket_view": false, "static_graph": false,
             "find_unused_parameters": false, "buckets_source": "rebuilt",
             "buckets": [{"index": 0, "params": [31, 30], "bytes": 1050624}, ...]},
     "forward_order": [{"module": "0", "params": [0, 1]}, ...],
     "modules": [{"module": "0", "class": "Linear", "params": [0, 1], "order": 1}, ...],
     "fsdp": {"units": [{"module": "0", "class": "Linear", ...}, ...]}}   # or null

- ``index`` is the position in ``module.named_parameters()`` (registration order, shared
  parameters once); every other list refers to parameters by this index.
- ``buckets`` are DDP's own: read from the reducer's logging data
  (``rebuilt_per_bucket_param_indices``) once DDP has rebuilt its buckets in the order
  gradients became ready (end of the first iteration), mapped from DDP's parameter list
  (parameters that require grad, minus ignored ones) to ``index``. Before the rebuild,
  DDP's initial assignment is recomputed (``buckets_source: "initial"``).
- ``first_bucket_mb`` is what DDP used: 1 MB (``dist._DEFAULT_FIRST_BUCKET_BYTES``) only
  when the job left ``bucket_cap_mb`` at its default; equal to the cap otherwise.
- ``forward_order``: the modules in the order their forward first ran (in the first
  forward after the recorder was attached), each with the parameters it uses: its own,
  plus those of child modules whose ``forward`` never runs (``MultiheadAttention`` uses
  ``out_proj.weight`` without calling ``out_proj``), attributed to the nearest ancestor
  that ran. These entries are the *forward units* that get ``tracekit.fwd:`` /
  ``tracekit.bwd:`` annotations (see :mod:`collectors.annotations`).
- ``modules`` (every module, its class and the parameters under it) and ``fsdp`` (the
  FSDP2 units, when ``fully_shard`` wrapped the model): see :mod:`collectors.fsdp_meta`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from collectors.fsdp_meta import ParamIndex, fsdp_units, module_table

_MB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ForwardUnit:
    """A module whose forward ran, with the parameter indices it uses."""

    module: str
    params: tuple[int, ...]


def _qualname_of_param(name: str) -> str:
    return name.rpartition(".")[0]


def describe_parameters(module: torch.nn.Module) -> list[dict[str, Any]]:
    """The ``parameters`` table of a module, in registration order."""
    table = []
    for i, (name, p) in enumerate(module.named_parameters()):
        table.append({
            "index": i,
            "name": name,
            "shape": [int(s) for s in p.shape],
            "dtype": str(p.dtype).removeprefix("torch."),
            "bytes": int(p.numel() * p.element_size()),
            "module": _qualname_of_param(name),
            "requires_grad": bool(p.requires_grad),
        })
    return table


def ddp_parameter_order(ddp: Any) -> list[torch.nn.Parameter]:
    """DDP's own parameter list (what its reducer's indices refer to), built the way
    ``DistributedDataParallel._build_params_for_reducer`` builds it."""
    ignore = set(getattr(ddp, "parameters_to_ignore", ()) or ())
    seen: set[int] = set()
    params = []
    for module_name, module in ddp.module.named_modules():
        for param_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or f"{module_name}.{param_name}" in ignore:
                continue
            if id(p) in seen:
                continue
            seen.add(id(p))
            params.append(p)
    return params


def parse_bucket_indices(text: str) -> list[list[int]]:
    """DDP logging's ``'31 30, 29 28 27'`` -> ``[[31, 30], [29, 28, 27]]``."""
    buckets = []
    for chunk in str(text).split(","):
        ids = [int(x) for x in chunk.split()]
        if ids:
            buckets.append(ids)
    return buckets


class ModelRecorder:
    """Records one model's metadata; see the module docstring for what and how."""

    def __init__(self, module: torch.nn.Module, *, ddp: Any = None,
                 in_forward: bool = False) -> None:
        self.module = module
        self.ddp = ddp
        self.parameters = describe_parameters(module)
        self._index_of = {id(p): i for i, (_, p) in enumerate(module.named_parameters())}
        self._params = ParamIndex(self.parameters, self._index_of)
        self.forward_units: list[ForwardUnit] = []
        self.ddp_config: dict[str, Any] | None = self._ddp_config() if ddp is not None else None
        #: qualname -> position in the first forward ('' already running: ``in_forward``)
        self._first_run: dict[str, int] = {"": 0} if in_forward else {}
        self._hooks: list[Any] = []
        self._arm_forward_order()

    # ----- forward order -------------------------------------------------------------
    def _arm_forward_order(self) -> None:
        for qualname, sub in self.module.named_modules():
            self._hooks.append(sub.register_forward_pre_hook(self._make_seen(qualname)))
        self._hooks.append(self.module.register_forward_hook(self._first_forward_done))

    def _make_seen(self, qualname: str):
        def seen(_module, _args):
            self._first_run.setdefault(qualname, len(self._first_run))
        return seen

    def _first_forward_done(self, _module, _args, _output) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.forward_units = self._units()

    def _units(self) -> list[ForwardUnit]:
        ran = self._first_run
        owned: dict[str, list[int]] = {}
        placed: set[int] = set()  # a shared parameter goes to its first owner only
        for qualname, sub in self.module.named_modules():
            for name, p in sub.named_parameters(recurse=False):
                i = self._params.of(p, f"{qualname}.{name}" if qualname else name)
                if i is None or i in placed:
                    continue
                placed.add(i)
                unit = qualname
                while unit not in ran and unit:
                    unit = unit.rpartition(".")[0]
                owned.setdefault(unit, []).append(i)
        units = [ForwardUnit(module=m, params=tuple(sorted(ix)))
                 for m, ix in owned.items() if ix]
        units.sort(key=lambda u: ran.get(u.module, len(ran)))
        return units

    def unit_modules(self) -> list[tuple[ForwardUnit, torch.nn.Module]]:
        """Each forward unit with its module object."""
        subs = dict(self.module.named_modules())
        return [(u, subs[u.module]) for u in self.forward_units if u.module in subs]

    def parameter_objects(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.module.named_parameters()]

    # ----- DDP ------------------------------------------------------------------------
    def _ddp_config(self) -> dict[str, Any]:
        ddp = self.ddp
        cfg = getattr(ddp, "_bucket_config", None)
        cap = int(getattr(cfg, "bucket_bytes_cap", 0) or getattr(ddp, "bucket_bytes_cap", 0))
        first = int(getattr(cfg, "first_bucket_bytes_cap", 0) or
                    torch.distributed._DEFAULT_FIRST_BUCKET_BYTES)
        return {
            "bucket_cap_mb": round(cap / _MB, 4),
            "first_bucket_mb": round(first / _MB, 4),
            "bucket_cap_bytes": cap,
            "first_bucket_bytes": first,
            "gradient_as_bucket_view": bool(getattr(ddp, "gradient_as_bucket_view", False)),
            "static_graph": bool(getattr(ddp, "static_graph", False)),
            "find_unused_parameters": bool(getattr(ddp, "find_unused_parameters", False)),
            "buckets_source": "",
            "buckets": [],
        }

    def refresh_buckets(self) -> None:
        """Read DDP's current buckets (call at step boundaries; cheap). Keeps the rebuilt
        assignment once seen."""
        if self.ddp is None or self.ddp_config is None:
            return
        if self.ddp_config["buckets_source"] == "rebuilt":
            return
        data = self.ddp._get_ddp_logging_data()
        order = ddp_parameter_order(self.ddp)
        to_index = [self._index_of.get(id(p), -1) for p in order]
        if data.get("has_rebuilt_buckets") and data.get("rebuilt_per_bucket_param_indices"):
            ddp_buckets = parse_bucket_indices(data["rebuilt_per_bucket_param_indices"])
            source = "rebuilt"
        else:
            ddp_buckets = self._initial_buckets(order)
            source = "initial"
        buckets = []
        for b, ids in enumerate(ddp_buckets):
            params = [to_index[i] for i in ids if 0 <= i < len(to_index)]
            size = sum(self.parameters[i]["bytes"] for i in params if i >= 0)
            buckets.append({"index": b, "params": params, "bytes": size})
        self.ddp_config["buckets"] = buckets
        self.ddp_config["buckets_source"] = source

    def _initial_buckets(self, order: list[torch.nn.Parameter]) -> list[list[int]]:
        """DDP's construction-time assignment (before its first-iteration rebuild)."""
        cfg = getattr(self.ddp, "_bucket_config", None)
        if cfg is not None and hasattr(cfg, "compute_bucket_size_limits"):
            limits, _ = cfg.compute_bucket_size_limits(
                static_graph=bool(getattr(self.ddp, "static_graph", False)),
                find_unused_parameters=bool(getattr(self.ddp, "find_unused_parameters", False)),
            )
        else:
            limits = [int(self.ddp_config["bucket_cap_bytes"])]
        indices, _ = torch.distributed._compute_bucket_assignment_by_size(order, limits)
        return [list(b) for b in reversed(indices)]

    # ----- output ---------------------------------------------------------------------
    def to_manifest(self) -> dict[str, Any]:
        units = fsdp_units(self.module, self.parameters, self._params, self._first_run)
        return {
            "parameters": self.parameters,
            "ddp": self.ddp_config,
            "forward_order": [{"module": u.module, "params": list(u.params)}
                              for u in self.forward_units],
            "modules": module_table(self.module, self._params, self._first_run),
            "fsdp": {"units": units} if units else None,
        }


@dataclass(kw_only=True)
class ModelRegistry:
    """The models seen in this process (the first one is the one recorded)."""

    recorders: list[ModelRecorder] = field(default_factory=list)

    def add(self, recorder: ModelRecorder) -> None:
        self.recorders.append(recorder)

    @property
    def primary(self) -> ModelRecorder | None:
        return self.recorders[0] if self.recorders else None
