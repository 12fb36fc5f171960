"""DDP's gradient bucket assignment, reproduced without torch.

``DistributedDataParallel`` groups gradients into buckets and all-reduces one bucket as
soon as all its gradients are ready. Which parameters share a bucket decides how many
collectives a step issues, how big they are, and when each can start, so the ``fusion=``
what-if must reproduce it exactly. This module ports ``compute_bucket_assignment_by_size``
(``torch/csrc/distributed/c10d/reducer.cpp``) and the bucket-size rules of
``torch/nn/parallel/distributed.py`` as of torch 2.13, checked against real DDP in
``tests/test_bucketing.py``.

The rules (torch 2.13):

- only parameters with ``requires_grad`` take part; each ``(dtype, device)`` has its own
  running bucket; a parameter expecting a sparse gradient gets a bucket of its own;
- a bucket closes as soon as its bytes reach its size limit (``>=``, so a bucket usually
  ends slightly above the cap); the first bucket of each dtype uses the first limit,
  every later one the second;
- size limits: ``bucket_cap_mb=None`` (DDP's default) means 25 MiB with a first bucket of
  1 MiB (``dist._DEFAULT_FIRST_BUCKET_BYTES``); an explicit ``bucket_cap_mb=X`` means X MiB
  for *every* bucket, the first included (torch >= 2.0 only uses the small first bucket
  for the default). ``MB`` here is MiB, as in DDP;
- steady state (what a profiled step sees): with ``find_unused_parameters=False`` (the
  default) or ``static_graph=True``, DDP starts with one bucket holding everything and
  *rebuilds* its buckets after the first iteration in the order gradients became ready,
  with the limits above. With ``find_unused_parameters=True`` it never rebuilds: buckets
  are assigned once at construction, in registration order, sorted by their lowest
  parameter index and then reversed.

:func:`ddp_buckets` implements the steady state. When the gradient-ready order is not
known it uses reverse registration order, DDP's own approximation (exact for sequential
models such as an MLP or a CNN; layers whose gradients become ready out of registration
order make it an approximation: pass ``ready_order`` from the trace or the manifest's
recorded buckets then).

Example: eight ``Linear(256, 256)`` layers (weight 262144 B, bias 1024 B, indices 0..15 in
registration order), ``bucket_cap_mb=0.5`` (524288 B)::

    >>> cfg = DDPBucketConfig.from_bucket_cap_mb(0.5)
    >>> params = [ParamSpec(index=i, bytes=262144 if i % 2 == 0 else 1024) for i in range(16)]
    >>> [b.params for b in ddp_buckets(params, cfg)][:2]
    [(15, 14, 13, 12), (11, 10, 9, 8)]
    >>> ddp_buckets(params, cfg)[0].bytes
    526336
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tracekit.errors import TracekitError

#: DDP's ``bucket_cap_mb`` unit: MiB.
MIB = 1024 * 1024
#: ``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES``
DEFAULT_FIRST_BUCKET_BYTES = 1 * MIB
#: DDP's default ``bucket_cap_mb``
DEFAULT_BUCKET_CAP_MB = 25.0


class ParamLike(Protocol):
    """What bucketing needs of a parameter (``tracekit.core.manifest.ParamInfo`` fits)."""

    index: int
    bytes: int


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """A parameter as bucketing sees it; ``index`` is its registration position."""

    index: int
    bytes: int
    dtype: str = "float32"
    device: str = ""
    requires_grad: bool = True
    sparse_grad: bool = False


@dataclass(frozen=True, kw_only=True)
class DDPBucketConfig:
    """The DDP settings that decide bucket assignment."""

    bucket_cap_bytes: int
    first_bucket_bytes: int
    find_unused_parameters: bool = False
    static_graph: bool = False

    @classmethod
    def from_bucket_cap_mb(
        cls,
        bucket_cap_mb: float | None,
        *,
        first_bucket_mb: float | None = None,
        find_unused_parameters: bool = False,
        static_graph: bool = False,
    ) -> DDPBucketConfig:
        """Limits the way ``DDP(bucket_cap_mb=...)`` computes them in torch 2.13.

        ``bucket_cap_mb=None`` is DDP's default (25 MiB, first bucket 1 MiB); an explicit
        value caps every bucket, the first included, unless ``first_bucket_mb`` says
        otherwise (e.g. from a manifest recorded with an older torch).
        """
        if bucket_cap_mb is not None and bucket_cap_mb <= 0:
            raise TracekitError(
                f"bucket size must be positive, got {bucket_cap_mb} MB; e.g. fusion=25MB"
            )
        cap = int((DEFAULT_BUCKET_CAP_MB if bucket_cap_mb is None else bucket_cap_mb) * MIB)
        if first_bucket_mb is not None:
            first = int(first_bucket_mb * MIB)
        else:
            first = DEFAULT_FIRST_BUCKET_BYTES if bucket_cap_mb is None else cap
        return cls(bucket_cap_bytes=cap, first_bucket_bytes=min(first, cap),
                   find_unused_parameters=find_unused_parameters, static_graph=static_graph)

    @classmethod
    def from_bucket_bytes(cls, cap_bytes: int, **kw) -> DDPBucketConfig:
        """``fusion=SIZE``: every bucket (the first included) capped at ``cap_bytes``."""
        return cls.from_bucket_cap_mb(cap_bytes / MIB, **kw)

    @property
    def rebuilds(self) -> bool:
        """True when DDP rebuilds its buckets after the first iteration."""
        return self.static_graph or not self.find_unused_parameters

    def size_limits(self) -> list[int]:
        """Limits for the rebuild (and for construction with ``find_unused_parameters``)."""
        if self.first_bucket_bytes < self.bucket_cap_bytes:
            return [self.first_bucket_bytes, self.bucket_cap_bytes]
        return [self.bucket_cap_bytes]


@dataclass(frozen=True, kw_only=True)
class Bucket:
    """One DDP bucket: its parameters in bucket order, their bytes and its size limit."""

    index: int
    #: parameter indices (registration positions), in the order DDP lays them out
    params: tuple[int, ...]
    bytes: int
    dtype: str
    size_limit: int


def _dtype_key(p) -> tuple[str, str]:
    dt = str(getattr(p, "dtype", "") or "float32").lower().removeprefix("torch.")
    return dt, str(getattr(p, "device", "") or "")


def assign_by_size(
    params: Sequence, limits: Sequence[int], *, sort_by_min_index: bool
) -> list[tuple[list[int], int, str]]:
    """Port of ``compute_bucket_assignment_by_size``: ``params`` in the order DDP walks
    them -> ``[(param indices, size limit, dtype), ...]``.

    Leftover (unclosed) buckets of several dtypes are appended in order of each dtype's
    first appearance (C++ walks an ``unordered_map``, whose order is unspecified).
    """
    if not limits:
        raise ValueError("limits must not be empty")
    result: list[tuple[list[int], int, str]] = []
    open_buckets: dict[tuple[str, str], tuple[list[int], int]] = {}
    limit_pos: dict[tuple[str, str], int] = {}
    for p in params:
        if getattr(p, "sparse_grad", False):
            result.append(([p.index], limits[0], _dtype_key(p)[0]))
            continue
        key = _dtype_key(p)
        indices, size = open_buckets.get(key, ([], 0))
        indices.append(p.index)
        size += int(p.bytes)
        pos = limit_pos.setdefault(key, 0)
        if size >= limits[pos]:
            result.append((indices, limits[pos], key[0]))
            open_buckets[key] = ([], 0)
            limit_pos[key] = min(pos + 1, len(limits) - 1)
        else:
            open_buckets[key] = (indices, size)
    for key, (indices, _) in open_buckets.items():
        if indices:
            result.append((indices, limits[limit_pos[key]], key[0]))
    if sort_by_min_index:
        result.sort(key=lambda b: min(b[0]))
    return result


def _to_buckets(groups: Iterable[tuple[list[int], int, str]], by_index: dict) -> list[Bucket]:
    return [
        Bucket(index=i, params=tuple(idx), bytes=sum(int(by_index[j].bytes) for j in idx),
               dtype=dt, size_limit=limit)
        for i, (idx, limit, dt) in enumerate(groups)
    ]


def _trainable(params: Sequence) -> list:
    out = [p for p in params if getattr(p, "requires_grad", True)]
    seen: set[int] = set()
    for p in out:
        if p.index in seen:
            raise TracekitError(
                f"parameter index {p.index} appears twice in the parameter table; "
                "re-record the manifest with 'tracekit profile'"
            )
        seen.add(p.index)
    return sorted(out, key=lambda p: p.index)


def ddp_initial_buckets(params: Sequence, config: DDPBucketConfig) -> list[Bucket]:
    """The buckets DDP builds at construction (all a run ever uses when it does not
    rebuild, i.e. ``find_unused_parameters=True`` without ``static_graph``).

    Registration order, grouped by size, sorted by lowest index, then reversed, so bucket 0
    holds the last-registered parameters.
    """
    trainable = _trainable(params)
    by_index = {p.index: p for p in trainable}
    limits = [2**63 - 1] if config.rebuilds else config.size_limits()
    groups = assign_by_size(trainable, limits, sort_by_min_index=True)
    return _to_buckets(reversed(groups), by_index)


def ddp_buckets(
    params: Sequence, config: DDPBucketConfig, *, ready_order: Sequence[int] | None = None
) -> list[Bucket]:
    """The buckets a profiled (steady-state) DDP step uses.

    Args:
        params: the parameter table (``ParamInfo`` / :class:`ParamSpec`), any order;
            parameters without ``requires_grad`` are left out, as DDP does.
        config: bucket limits and the DDP flags that decide whether buckets are rebuilt.
        ready_order: parameter indices in the order their gradients became ready in the
            first iteration (what DDP's rebuild uses). ``None``: reverse registration
            order. Parameters it does not list are appended in reverse registration order.

    Returns:
        buckets in the order DDP reduces them (bucket 0 first).
    """
    if not config.rebuilds:
        return ddp_initial_buckets(params, config)
    trainable = _trainable(params)
    by_index = {p.index: p for p in trainable}
    if ready_order is None:
        ordered = list(reversed(trainable))
    else:
        unknown = [i for i in ready_order if i not in by_index]
        if unknown:
            raise TracekitError(
                f"gradient ready order names parameter {unknown[0]}, which is not a trainable "
                "parameter of the model; check the manifest's parameter table"
            )
        listed = set(ready_order)
        ordered = [by_index[i] for i in dict.fromkeys(ready_order)]
        ordered += [p for p in reversed(trainable) if p.index not in listed]
    groups = assign_by_size(ordered, config.size_limits(), sort_by_min_index=False)
    return _to_buckets(groups, by_index)
