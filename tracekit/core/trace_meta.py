"""What one trace file says about itself, beside its events: :class:`TraceMeta`.

Made by the parser (:func:`tracekit.core.kineto.parse_trace`) and kept in every cache
entry (:mod:`tracekit.core.cache`); a module of its own so that a run read from the
cache builds its metadata without importing the JSON parser (msgspec and the decoders).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class TraceMeta:
    """What one trace file says about itself, beside its events."""

    path: str
    #: global rank, from ``distributedInfo``, else the file name; None when neither says.
    rank: int | None
    #: where ``rank`` came from: 'distributedInfo', 'filename', 'manifest', 'none', or
    #: 'assumed' (a lone trace without rank information: rank 0, see core.unranked).
    rank_source: str
    #: world size from ``distributedInfo``, None when absent.
    world_size: int | None
    #: 'nccl', 'gloo', ... or '' when the trace does not say.
    backend: str
    #: ``distributedInfo['pg_config']`` as recorded (list of dicts), or [].
    process_groups: list[dict] = field(default_factory=list)
    #: ``deviceProperties`` as recorded (list of dicts), or [].
    device_properties: list[dict] = field(default_factory=list)
    #: True when timestamps were relative to ``baseTimeNanoseconds`` (newer Kineto).
    relative_timestamps: bool = False
    #: step numbers found (``ProfilerStep#N``), in order; [] when the trace has none.
    steps: list[int] = field(default_factory=list)
    #: number of duration events kept.
    n_events: int = 0
    #: host name when the trace records it, else ''.
    host: str = ""
    #: the NCCL version when recorded, else ''.
    nccl_version: str = ""

    @property
    def has_steps(self) -> bool:
        return bool(self.steps)
