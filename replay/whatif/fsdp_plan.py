"""Which FSDP2 units ``fully_shard`` on every module of one class (and on the root)
would make, from the manifest's module table and parameter table.

A parameter belongs to the innermost wrapped module that holds it (FSDP2 gives a
module's parameters to its own ``fully_shard`` call, minus those a nested call took);
whatever no module of the class holds stays with the root. Units without parameters
gather nothing and are left out. Each unit lists the *forward units* of the manifest
(``forward_order``, the modules ``tracekit profile`` annotated) it covers, which is how
the trace says where the unit's forward and backward run.

Before/after (``fsdp=Linear`` on an embedding + 2 x Linear + head model)::

    modules: '' Net, 'embed' Embedding, 'blocks.0' Linear, 'blocks.2' Linear, 'head' Linear
    units:   '' [embed.weight] (root), 'blocks.0', 'blocks.2', 'head'
"""

from __future__ import annotations

from dataclasses import dataclass

from tracekit.core.manifest import Manifest
from tracekit.errors import TracekitError

ROOT = ""


@dataclass(frozen=True, kw_only=True)
class PlannedUnit:
    module: str
    params: tuple[int, ...]
    #: unsharded bytes (what one all-gather brings together)
    bytes: int
    #: the manifest's forward units it covers (their annotations locate it in the trace)
    forward_modules: tuple[str, ...]


def _covers(unit: str, module: str) -> bool:
    return unit == ROOT or module == unit or module.startswith(unit + ".")


def _innermost(units: list[str], module: str) -> str:
    inside = [u for u in units if _covers(u, module)]
    return max(inside, key=len) if inside else ROOT


def plan_units(manifest: Manifest | None, cls: str) -> list[PlannedUnit]:
    """The units of ``fsdp=cls`` in forward order (the root first); raises
    :class:`TracekitError` naming the classes there are when none is ``cls``."""
    if manifest is None or not manifest.modules or not manifest.parameters:
        raise TracekitError(
            f"fsdp={cls} needs the manifest's module and parameter tables (model.modules, "
            "model.parameters), which this run lacks; record it with 'tracekit profile' "
            "(tracekit 0.2 or later records them)")
    classes = sorted({m.cls for m in manifest.modules if m.params and m.module})
    wrapped = [m.module for m in manifest.modules if m.cls == cls and m.module]
    if not wrapped:
        raise TracekitError(f"fsdp={cls}: the model has no module of class {cls!r}; its "
                            f"classes with parameters: {', '.join(classes) or 'none'} "
                            f"(e.g. fsdp={classes[0] if classes else 'Linear'})")
    names = [ROOT, *wrapped]
    owner: dict[int, str] = {}
    for m in sorted(manifest.modules, key=lambda m: len(m.module)):
        unit = _innermost(wrapped, m.module) if m.module else ROOT
        for i in m.params:
            if unit == ROOT and i in owner:
                continue
            if i not in owner or len(unit) >= len(owner[i]):
                owner[i] = unit
    size = {p.index: p.bytes for p in manifest.parameters if p.requires_grad}
    order = {m.module: (m.order if m.order is not None else 1 << 30) for m in manifest.modules}
    fwd_units = [mod for mod, _ in manifest.forward_order]
    units = []
    for u in sorted(names, key=lambda u: (u != ROOT, order.get(u, 1 << 30))):
        params = tuple(sorted(i for i, o in owner.items() if o == u and i in size))
        if not params:
            continue
        covered = tuple(m for m in fwd_units if _innermost(wrapped, m) == u)
        units.append(PlannedUnit(module=u, params=params,
                                 bytes=sum(size[i] for i in params), forward_modules=covered))
    return units
