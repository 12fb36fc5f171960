"""FSDP2 (``fully_shard``) unit structure and the module table, for the manifest.

:func:`fsdp_units` reads, from a model whose modules ``fully_shard`` wrapped, one entry
per FSDP unit (a module that is an ``FSDPModule``)::

    {"module": "layers.0", "class": "Linear", "order": 1,
     "params": [2, 3], "numel": 262656, "bytes": 1050624, "dtype": "float32",
     "reshard_after_forward": true}

- ``module``: the qualified name under the recorded root ('' is the root itself);
  ``class``: the module's own class (``fully_shard`` swaps in a subclass named
  ``FSDP<class>``; the name recorded is the class it was built from);
- ``params``: indices into ``model.parameters`` of the parameters the unit manages (its
  own and those of submodules that are no unit of their own); ``numel`` / ``bytes``:
  their unsharded size (what one all-gather brings together); ``dtype``: theirs;
- ``reshard_after_forward``: whether the unit frees its gathered parameters after
  forward, so backward all-gathers them again (FSDP2 decides the root's at its first
  forward: read this once a forward ran);
- ``order``: the unit's position in the first forward (``null`` when it never ran).

:func:`module_table` is the ``modules`` table of any model (DDP or not): every module in
``named_modules()`` order with its class, the parameters under it (recursively) and its
position in the first forward; ``fsdp=CLASS`` reads which modules of ``CLASS`` exist
from it. Both refer to parameters by their index in the parameter table, matched by
object identity and, when FSDP swapped a parameter object, by name.
"""

from __future__ import annotations

import sys
from typing import Any

import torch


def fsdp_module_class() -> type | None:
    """``torch.distributed.fsdp.FSDPModule`` when the job imported FSDP, else None (the
    collector never imports FSDP itself)."""
    mod = sys.modules.get("torch.distributed.fsdp")
    return getattr(mod, "FSDPModule", None) if mod is not None else None


def is_fsdp_module(module: Any) -> bool:
    cls = fsdp_module_class()
    return cls is not None and isinstance(module, cls)


def original_class(module: torch.nn.Module) -> str:
    """The class a module was built from (not FSDP's ``FSDP<class>`` subclass)."""
    cls = fsdp_module_class()
    for c in type(module).__mro__:
        if cls is None or not issubclass(c, cls):
            return c.__name__
    return type(module).__name__


class ParamIndex:
    """Parameter -> its index in the manifest's table, by identity, else by name."""

    def __init__(self, parameters: list[dict[str, Any]], by_id: dict[int, int]) -> None:
        self.by_id = by_id
        self.by_name = {p["name"]: int(p["index"]) for p in parameters}

    def of(self, p: Any, name: str) -> int | None:
        i = self.by_id.get(id(p))
        return i if i is not None else self.by_name.get(name)


def _under(root: torch.nn.Module, index: ParamIndex, prefix: str,
           module: torch.nn.Module) -> list[int]:
    out = []
    for name, p in module.named_parameters():
        full = f"{prefix}.{name}" if prefix else name
        i = index.of(p, full)
        if i is not None:
            out.append(i)
    return sorted(set(out))


def module_table(root: torch.nn.Module, index: ParamIndex,
                 first_run: dict[str, int]) -> list[dict[str, Any]]:
    """The ``modules`` table (see module doc)."""
    table = []
    for qualname, sub in root.named_modules():
        table.append({"module": qualname, "class": original_class(sub),
                      "params": _under(root, index, qualname, sub),
                      "order": first_run.get(qualname)})
    return table


def _reshards(module: Any) -> bool | None:
    try:
        groups = module._get_fsdp_state()._fsdp_param_groups
    except Exception:
        return None
    flags = [bool(g._reshard_after_forward) for g in groups]
    return any(flags) if flags else None


def fsdp_units(root: torch.nn.Module, parameters: list[dict[str, Any]], index: ParamIndex,
               first_run: dict[str, int]) -> list[dict[str, Any]]:
    """One entry per FSDP unit of ``root``, in forward order (see module doc); [] when no
    module of ``root`` is an ``FSDPModule``."""
    units = [(q, m) for q, m in root.named_modules() if is_fsdp_module(m)]
    if not units:
        return []
    names = {q for q, _ in units}
    owned: dict[str, set[int]] = {q: set() for q in names}
    for qualname, sub in root.named_modules():
        unit = qualname
        while unit not in names and unit:
            unit = unit.rpartition(".")[0]
        if unit not in names:
            continue
        for name, p in sub.named_parameters(recurse=False):
            i = index.of(p, f"{qualname}.{name}" if qualname else name)
            if i is not None:
                owned[unit].add(i)
    by_index = {int(p["index"]): p for p in parameters}
    out = []
    for qualname, m in units:
        ps = sorted(owned[qualname])
        dtypes = sorted({by_index[i]["dtype"] for i in ps if i in by_index})
        out.append({
            "module": qualname, "class": original_class(m), "order": first_run.get(qualname),
            "params": ps,
            "numel": sum(_numel(by_index[i]) for i in ps if i in by_index),
            "bytes": sum(int(by_index[i]["bytes"]) for i in ps if i in by_index),
            "dtype": dtypes[0] if len(dtypes) == 1 else ",".join(dtypes),
            "reshard_after_forward": _reshards(m),
        })
    out.sort(key=lambda u: (u["order"] is None, u["order"] or 0))
    return out


def _numel(p: dict[str, Any]) -> int:
    n = 1
    for s in p.get("shape") or []:
        n *= int(s)
    return n
