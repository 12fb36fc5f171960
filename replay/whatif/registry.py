"""The what-if registry: every what-if is one module under ``replay/whatif/`` that defines
one :class:`WhatIf` subclass and registers it with :func:`register`.

A what-if class holds everything about it: its key and aliases, the syntax and examples
``--help`` shows, how its value is parsed and swept, which other what-ifs it cannot be
combined with, the :class:`Stage` it applies in and the edit it makes
(:meth:`WhatIf.apply`). The spec parser (:mod:`replay.whatif.spec`), the evaluator
(:mod:`replay.whatif.predict`), the CLI help and the JSON output all read this registry,
so a new what-if is one new module (and its test)::

    @register
    @dataclass(frozen=True, kw_only=True)
    class CommScale(WhatIf):
        key = "comm-scale"
        syntax = "comm-scale=X"
        example = "comm-scale=0.5"
        range_example = "comm-scale=0.25..1"
        summary = "every collective's transfer time multiplied by X"
        stage = Stage.NETWORK
        factor: float

        @classmethod
        def parse(cls, value): return cls(factor=parse_factor(value, cls.key))
        @property
        def label(self): return f"comm-scale={self.factor:g}"
        def apply(self, edit): edit.retiming.time_factor *= self.factor

Modules are discovered by importing every module of the ``replay.whatif`` package once
(:func:`what_ifs`); a module that registers nothing (the shared machinery) costs an
import and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import asdict
from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar

from tracekit.errors import TracekitError

if TYPE_CHECKING:
    from replay.whatif.variant_edit import VariantEdit


class Stage(IntEnum):
    """When a what-if applies: stages run in this order, whatever order the spec gives."""

    #: re-plan DDP's gradient communication (buckets, issue points, DeAR): edits the graph
    GRADIENTS = 1
    #: re-time collectives (network speed, world size)
    NETWORK = 2
    #: re-time compute (device speed, stragglers)
    DEVICES = 3


class WhatIf(ABC):
    """One parsed what-if (``fusion=4MB``); subclasses are frozen keyword-only
    dataclasses whose fields are the parsed value."""

    #: the key in a spec (``fusion`` in ``fusion=4MB``), lower case
    key: ClassVar[str]
    #: other spellings of the key accepted by the parser
    aliases: ClassVar[tuple[str, ...]] = ()
    #: the form ``--help`` lists, e.g. ``fusion=SIZE``
    syntax: ClassVar[str]
    #: one valid spec, used in help and in error messages
    example: ClassVar[str]
    #: a valid range of this what-if, or None when it cannot be swept
    range_example: ClassVar[str | None] = None
    #: one line: what the what-if predicts
    summary: ClassVar[str]
    #: the key alone is a complete spec (``dear``)
    bare: ClassVar[bool] = False
    stage: ClassVar[Stage]
    #: needs a collective cost model (fitted from the run or calibrated)
    needs_comm_model: ClassVar[bool] = False
    #: needs DDP's gradient synchronization found in the graph
    needs_gradient_sync: ClassVar[bool] = False
    #: within its stage, what-ifs apply in this order (then in the order given)
    apply_order: ClassVar[int] = 0

    @classmethod
    @abstractmethod
    def parse(cls, value: str) -> WhatIf:
        """The what-if for one value (``'4MB'``); a :class:`TracekitError` that says what
        was expected, with an example, on a bad value."""

    @property
    @abstractmethod
    def label(self) -> str:
        """Canonical text, e.g. ``fusion=4MB``."""

    @abstractmethod
    def apply(self, edit: VariantEdit) -> None:
        """Make this what-if's change to the variant under construction."""

    def scalar(self) -> float:
        """The number a range steps over (sweepable what-ifs override this)."""
        raise TracekitError(f"{self.key} cannot be swept; use separate --what-if options")

    def with_scalar(self, x: float) -> WhatIf:
        """The same what-if at another point of a range."""
        raise TracekitError(f"{self.key} cannot be swept; use separate --what-if options")

    def same_kind_of_value(self, other: WhatIf) -> bool:
        """Whether a range from ``self`` to ``other`` makes sense (e.g. not 2x..100Gbps)."""
        return type(self) is type(other)

    def conflict(self, other: WhatIf) -> str | None:
        """Why this what-if cannot be combined with ``other`` in one variant, or None."""
        return None

    def to_json(self) -> dict:
        """``{"what_if": key, **fields}`` for ``--json`` output."""
        return {"what_if": self.key, **asdict(self)}  # type: ignore[call-overload]


_REGISTRY: dict[str, type[WhatIf]] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register(cls: type[WhatIf]) -> type[WhatIf]:
    """Class decorator: make ``cls`` known to the parser, evaluator and help."""
    for name in (cls.key, *cls.aliases):
        owner = _ALIASES.get(name)
        if owner is not None and owner != cls.key:
            raise TypeError(f"what-if key {name!r} of {cls.__name__} is taken by {owner!r}")
        _ALIASES[name] = cls.key
    _REGISTRY[cls.key] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    import replay.whatif as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _loaded = True


def what_ifs() -> list[type[WhatIf]]:
    """Every registered what-if, in stage order, then by key."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda c: (c.stage, c.key))


def lookup(key: str) -> type[WhatIf] | None:
    """The what-if registered under ``key`` or one of its aliases (case-insensitive)."""
    _load()
    name = _ALIASES.get(key.strip().lower())
    return _REGISTRY.get(name) if name else None


def known() -> str:
    """Every what-if's syntax, for error messages: ``fusion=SIZE, overlap=on|off, ...``."""
    return ", ".join(c.syntax for c in what_ifs())


def help_table() -> list[tuple[str, str, str]]:
    """``(syntax, example, summary)`` per what-if, for ``--help`` and docs."""
    return [(c.syntax, c.example, c.summary) for c in what_ifs()]
