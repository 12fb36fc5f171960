"""The manifest's schema, checked on read (:func:`tracekit.core.manifest.parse_manifest`):
types, ranges, duplicate ranks, trace paths that leave the run folder, world size versus
the ranks present, parameter sizes.

Every problem is one line naming the field and the fix; :func:`check_manifest` raises one
:class:`~tracekit.errors.TracekitError` carrying all of them (the CLI prints each as an
``error:`` line)::

    runs/mlp/manifest.json: ranks[1].rank: 0 is also the rank of ranks[0]; give each rank
    one entry (or re-record the run with 'tracekit profile')

Fields the schema documents are checked when present; unknown fields are ignored (a newer
collector may add some). ``null`` counts as absent wherever a field may be missing.
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any

from tracekit.errors import TracekitError

#: the largest world a manifest may record (also the workers= what-if's limit)
MAX_WORLD_SIZE = 1_000_000
#: the largest parameter a manifest may record: 1 TiB
MAX_PARAM_BYTES = 2**40
#: the most problems listed one per line; the rest are counted
MAX_LINES = 12
_FIX = "fix manifest.json or re-record the run with 'tracekit profile'"
#: what the collector writes into ranks[*].errors when the job ended mid-step
INCOMPLETE_STEP = re.compile(r"incomplete ProfilerStep#(\d+)")


class _Problems:
    """The problems found so far, one line each."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, field: str, what: str, fix: str = _FIX) -> None:
        self.lines.append(f"{field}: {what}; {fix}")

    # --- typed getters: the value when it has the type, else None (and a problem) -------

    def typed(self, obj: dict, key: str, where: str, kind: str, *, required: bool = False):
        value = obj.get(key)
        if value is None:
            if required:
                self.add(f"{where}{key}", f"missing (expected {_KINDS[kind][1]})")
            return None
        if not _KINDS[kind][0](value):
            self.add(f"{where}{key}", f"{_describe(value)}, expected {_KINDS[kind][1]}")
            return None
        return value

    def int_in(self, obj: dict, key: str, where: str, low: int, high: int, *,
               required: bool = False) -> int | None:
        value = self.typed(obj, key, where, "int", required=required)
        if value is not None and not low <= value <= high:
            self.add(f"{where}{key}", f"{value} is outside {low}..{high:,}")
            return None
        return value

    def list_of(self, obj: dict, key: str, where: str, kind: str) -> list:
        """The list's items that have ``kind`` (a problem for each that does not)."""
        items = self.typed(obj, key, where, "list")
        if items is None:
            return []
        good = []
        for i, v in enumerate(items):
            if _KINDS[kind][0](v):
                good.append(v)
            else:
                self.add(f"{where}{key}[{i}]", f"{_describe(v)}, expected {_KINDS[kind][1]}")
        return good


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _is_ms(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and 0 <= v < 86_400e3


def _is_positive(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and 0 < v <= 2**40


_KINDS = {
    "int": (_is_int, "an integer"),
    "count": (_is_count, "an integer >= 0"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: type(v) is bool, "true or false"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "ms": (_is_ms, "a time in ms >= 0 (under a day)"),
    "positive": (_is_positive, "a positive number"),
}


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"{str(v).lower()} (a boolean)"
    if isinstance(v, str):
        return f"the string {v[:40]!r}"
    if isinstance(v, (list, dict)):
        return "a list" if isinstance(v, list) else "an object"
    return f"{v!r}"


def check_manifest(doc: dict, path: str) -> None:
    """Raise one :class:`TracekitError` listing every problem of ``doc`` (a manifest
    object whose ``schema_version`` was already checked), or return."""
    p = _Problems()
    world = p.int_in(doc, "world_size", "", 1, MAX_WORLD_SIZE, required=True)
    p.typed(doc, "backend", "", "str")
    p.list_of(doc, "hosts", "", "str")
    p.list_of(doc, "command", "", "str")
    p.typed(doc, "exit_code", "", "int")
    for key in ("versions", "profiler", "overhead"):
        p.typed(doc, key, "", "dict")
    p.list_of(doc, "errors", "", "str")
    _check_ranks(p, doc, world)
    model = p.typed(doc, "model", "", "dict")
    if model is not None:
        _check_model(p, model)
    if p.lines:
        shown = p.lines[:MAX_LINES]
        if len(p.lines) > MAX_LINES:
            shown.append(f"... and {len(p.lines) - MAX_LINES} more problems")
        first = shown[0] + (f" (and {len(p.lines) - 1} more)" if len(p.lines) > 1 else "")
        raise TracekitError(first, path=path, problems=shown)


def _check_ranks(p: _Problems, doc: dict, world: int | None) -> None:
    entries = p.typed(doc, "ranks", "", "list") or []
    owner: dict[int, int] = {}
    traces: dict[str, int] = {}
    for i, r in enumerate(entries):
        where = f"ranks[{i}]."
        if not isinstance(r, dict):
            p.add(f"ranks[{i}]", f"{_describe(r)}, expected an object with rank and trace")
            continue
        rank = p.int_in(r, "rank", where, 0, MAX_WORLD_SIZE - 1, required=True)
        if rank is not None:
            if rank in owner:
                p.add(f"{where}rank", f"{rank} is also the rank of ranks[{owner[rank]}]",
                      "give each rank one entry (or re-record the run with 'tracekit profile')")
            else:
                owner[rank] = i
            if world is not None and rank >= world:
                p.add(f"{where}rank", f"{rank} is outside the world of world_size {world} "
                      f"(ranks 0..{world - 1})",
                      "set world_size to the job's number of ranks, or fix the rank")
        for key in ("trace", "nccl_log"):
            rel = p.typed(r, key, where, "str")
            if rel and _leaves_folder(rel):
                p.add(f"{where}{key}", f"{rel!r} leaves the run folder",
                      "write it relative to the run folder, e.g. rank0.trace.json.gz")
            elif rel and key == "trace":
                if rel in traces:
                    p.add(f"{where}trace", f"{rel!r} is also the trace of ranks[{traces[rel]}]",
                          "give each rank its own trace file")
                traces.setdefault(rel, i)
        _check_rank_fields(p, r, where)


def _check_rank_fields(p: _Problems, r: dict, where: str) -> None:
    p.typed(r, "host", where, "str")
    p.typed(r, "pid", where, "int")
    p.typed(r, "cpu_cores", where, "count")
    p.list_of(r, "cpu_set", where, "count")
    steps = p.list_of(r, "steps", where, "count")
    times = p.list_of(r, "step_times_ms", where, "ms")
    if steps and times and len(steps) != len(r.get("step_times_ms") or []):
        p.add(f"{where}step_times_ms", f"has {len(r['step_times_ms'])} times for "
              f"{len(steps)} steps", "give one time per entry of steps")
    p.typed(r, "unprofiled_step_ms", where, "ms")
    p.list_of(r, "unprofiled_step_times_ms", where, "ms")
    p.list_of(r, "errors", where, "str")
    p.list_of(r, "incomplete_steps", where, "count")


def _leaves_folder(rel: str) -> bool:
    """An absolute path, or one whose ``..`` climbs out of the run folder."""
    norm = posixpath.normpath(rel.replace("\\", "/"))
    return (norm.startswith("/") or norm == ".." or norm.startswith("../")
            or re.match(r"^[A-Za-z]:", norm) is not None)


def _check_model(p: _Problems, model: dict) -> None:
    indices: dict[int, int] = {}
    for i, prm in enumerate(p.list_of(model, "parameters", "model.", "dict")):
        where = f"model.parameters[{i}]."
        index = p.typed(prm, "index", where, "count", required=True)
        _once(p, index, indices, i, f"{where}index", "model.parameters",
              "give each parameter its own index")
        p.typed(prm, "name", where, "str", required=True)
        p.int_in(prm, "bytes", where, 0, MAX_PARAM_BYTES, required=True)
        p.list_of(prm, "shape", where, "count")
        for key in ("dtype", "module"):
            p.typed(prm, key, where, "str")
        p.typed(prm, "requires_grad", where, "bool")
    ddp = p.typed(model, "ddp", "model.", "dict")
    if ddp is not None:
        _check_ddp(p, ddp, indices)
    for i, m in enumerate(p.list_of(model, "forward_order", "model.", "dict")):
        where = f"model.forward_order[{i}]."
        p.typed(m, "module", where, "str", required=True)
        p.list_of(m, "params", where, "count")
    for i, m in enumerate(p.list_of(model, "modules", "model.", "dict")):
        where = f"model.modules[{i}]."
        p.typed(m, "module", where, "str", required=True)
        p.typed(m, "class", where, "str")
        p.typed(m, "order", where, "count")
        _check_indices(p, p.list_of(m, "params", where, "count"), f"{where}params", indices)
    fsdp = p.typed(model, "fsdp", "model.", "dict")
    if fsdp is not None:
        _check_fsdp(p, fsdp, indices)


def _once(p: _Problems, value, seen: dict, i: int, field: str, listing: str, fix: str) -> None:
    """``value`` (entry ``i`` of ``listing``) must not repeat an earlier entry's; ``seen``
    maps each value to the first entry that had it."""
    if value is None:
        return
    if value in seen:
        what = field.rsplit(".", 1)[-1]
        shown = value if isinstance(value, int) else repr(value)
        p.add(field, f"{shown} is also the {what} of {listing}[{seen[value]}]", fix)
    seen.setdefault(value, i)


def _check_indices(p: _Problems, params: list, field: str, indices: dict[int, int]) -> None:
    unknown = sorted(set(params) - set(indices)) if indices else []
    if unknown:
        p.add(field, f"parameter {unknown[0]} is not in model.parameters",
              "list only indices of model.parameters")


def _check_fsdp(p: _Problems, fsdp: dict, indices: dict[int, int]) -> None:
    """``model.fsdp.units``: FSDP2 units (see :mod:`collectors.fsdp_meta`)."""
    seen: dict[str, int] = {}
    for i, u in enumerate(p.list_of(fsdp, "units", "model.fsdp.", "dict")):
        where = f"model.fsdp.units[{i}]."
        module = p.typed(u, "module", where, "str", required=True)
        _once(p, module, seen, i, f"{where}module", "model.fsdp.units",
              "list each FSDP unit once")
        p.typed(u, "class", where, "str")
        p.typed(u, "dtype", where, "str")
        p.typed(u, "order", where, "count")
        p.typed(u, "numel", where, "count")
        p.int_in(u, "bytes", where, 0, MAX_PARAM_BYTES * 1024, required=True)
        p.typed(u, "reshard_after_forward", where, "bool")
        params = p.list_of(u, "params", where, "count")
        _check_indices(p, params, f"{where}params", indices)


def _check_ddp(p: _Problems, ddp: dict, indices: dict[int, int]) -> None:
    where = "model.ddp."
    for key in ("bucket_cap_mb", "first_bucket_mb"):
        p.typed(ddp, key, where, "positive")
    for key in ("bucket_cap_bytes", "first_bucket_bytes"):
        p.typed(ddp, key, where, "count")
    for key in ("gradient_as_bucket_view", "static_graph", "find_unused_parameters"):
        p.typed(ddp, key, where, "bool")
    p.typed(ddp, "buckets_source", where, "str")
    for i, b in enumerate(p.list_of(ddp, "buckets", where, "dict")):
        at = f"{where}buckets[{i}]."
        params = p.list_of(b, "params", at, "count")
        if "params" not in b:
            p.add(f"{at}params", "missing (expected a list of parameter indices)")
        _check_indices(p, params, f"{at}params", indices)
        p.typed(b, "index", at, "count")
        p.int_in(b, "bytes", at, 0, MAX_PARAM_BYTES * 1024)
