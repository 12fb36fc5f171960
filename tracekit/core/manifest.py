"""``manifest.json``: the contract between collection (``collectors/``) and analysis.

A run folder looks like::

    runs/mlp/
      manifest.json            this file
      rank0.trace.json.gz ...  one Kineto trace per rank
      nccl/rank0.log ...       NCCL_DEBUG=INFO / SUBSYS=COLL lines, when NCCL ran

The manifest (``schema_version`` 1) is a JSON object::

    {
      "schema_version": 1,
      "tool": "tracekit 0.1.0",
      "created": "2026-11-21T23:38:10+00:00",
      "command": ["torchrun", "--nproc_per_node", "2", "samples/train_ddp.py"],
      "exit_code": 0,                          # the command's (128 + N: killed by signal N)
      "world_size": 2,
      "backend": "gloo",
      "versions": {"torch": "2.13.0", "nccl": "", "python": "3.11.7"},
      "hosts": ["host-a"],
      "profiler": {"wait": 1, "warmup": 2, "active": 5, "record_shapes": true,
                   "annotate_modules": true},  # tracekit.fwd:/bwd: ranges, see collectors
      "ranks": [
        {"rank": 0, "host": "host-a", "pid": 4242, "trace": "rank0.trace.json.gz",
         "cpu_cores": 2,                       # cores this rank's process could run on
         "cpu_set": [0, 1],                    # which ones (its affinity mask)
         "nccl_log": "",                       # path under the folder, '' when none
         "steps": [3, 4, 5, 6, 7],             # ProfilerStep numbers of step_times_ms
         "step_times_ms": [51.2, 49.8, ...],   # wall-clock of every recorded step
         "unprofiled_step_ms": 47.1,           # median step time with the profiler off
         "unprofiled_step_times_ms": [...],    # the unprofiled steps it is the median of
         "errors": [],                         # collector problems on this rank; the
                                               # incomplete step of a job that ended
                                               # mid-step ("... the incomplete
                                               # ProfilerStep#8") is left out on read
         "incomplete_steps": [8]}              # optional: steps known to be cut short
      ],
      "model": {
        "parameters": [                        # registration order
          {"index": 0, "name": "0.weight", "shape": [512, 512], "dtype": "float32",
           "bytes": 1048576, "module": "0", "requires_grad": true}
        ],
        "ddp": {                               # null when the model is not DDP-wrapped
          "bucket_cap_mb": 25.0, "first_bucket_mb": 1.0,   # what DDP used: the first
          "bucket_cap_bytes": 26214400,                    # bucket is 1 MB only when
          "first_bucket_bytes": 1048576,                   # bucket_cap_mb is DDP's default
          "gradient_as_bucket_view": false, "static_graph": false,
          "find_unused_parameters": false,
          "buckets_source": "rebuilt",         # or "initial" (DDP had not rebuilt yet)
          "buckets": [{"index": 0, "params": [31, 30], "bytes": 1050624}]  # DDP's final buckets
        },
        "forward_order": [                     # modules in the order their forward ran
          {"module": "0", "params": [0, 1]}
        ],
        "modules": [                           # every module (named_modules order), its
          {"module": "0", "class": "Linear",   # class, the parameters under it, its place
           "params": [0, 1], "order": 1}       # in the first forward (null: never ran)
        ],
        "fsdp": {"units": [                    # FSDP2 units (fully_shard); null: none
          {"module": "0", "class": "Linear", "order": 1, "params": [0, 1],
           "numel": 262656, "bytes": 1050624, "dtype": "float32",
           "reshard_after_forward": true}]}
      },
      "overhead": {"profiled_step_ms": 51.0, "unprofiled_step_ms": 47.1, "ratio": 1.08,
                   "how": "..."},              # medians pooled over ranks
      "errors": []
    }

Everything but ``schema_version``, ``world_size`` and ``ranks[*].rank/trace`` may be
missing; readers must cope (a bare folder of traces has no manifest at all). On read the
document is checked against this schema (:mod:`tracekit.core.manifest_check`: types,
ranges, duplicate ranks, trace paths that leave the folder, ranks outside the world,
parameter sizes): every problem is one line naming the field and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit.core.manifest_check import INCOMPLETE_STEP, check_manifest
from tracekit.errors import TracekitError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class ParamInfo:
    """One model parameter as recorded in the manifest."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    module: str
    requires_grad: bool = True


@dataclass(frozen=True, kw_only=True)
class ModuleInfo:
    """One module of the model (``model.modules``), or one FSDP2 unit (``model.fsdp``)."""

    module: str
    cls: str
    #: parameter indices under the module (an FSDP unit: those it all-gathers)
    params: tuple[int, ...]
    #: position in the first forward (None: never ran or unknown)
    order: int | None = None
    #: FSDP units only: unsharded bytes and ``reshard_after_forward`` (None unknown)
    bytes: int = 0
    reshard_after_forward: bool | None = None


@dataclass(kw_only=True)
class Manifest:
    """Typed view of ``manifest.json``; :attr:`raw` keeps the whole document."""

    raw: dict[str, Any]
    world_size: int
    backend: str = ""
    #: rank -> trace file name (relative to the run folder)
    trace_files: dict[int, str] = field(default_factory=dict)
    #: rank -> measured wall-clock step times in ms
    step_times_ms: dict[int, list[float]] = field(default_factory=dict)
    parameters: list[ParamInfo] = field(default_factory=list)
    #: DDP's buckets, each a list of parameter indices, in bucket order; [] when unknown
    ddp_buckets: list[list[int]] = field(default_factory=list)
    bucket_cap_mb: float | None = None
    first_bucket_mb: float | None = None
    #: modules in forward execution order, each with the parameter indices it uses
    forward_order: list[tuple[str, list[int]]] = field(default_factory=list)
    #: every module with its class (older manifests: [])
    modules: list[ModuleInfo] = field(default_factory=list)
    #: FSDP2 units in forward order ([]: not an FSDP run, or an older manifest)
    fsdp_units: list[ModuleInfo] = field(default_factory=list)
    #: rank -> host name ('' unknown)
    hosts: dict[int, str] = field(default_factory=dict)
    #: rank -> CPU cores its process could run on (absent when not recorded)
    cpu_cores: dict[int, int] = field(default_factory=dict)
    #: rank -> the CPUs its process could run on (absent when not recorded)
    cpu_sets: dict[int, tuple[int, ...]] = field(default_factory=dict)
    #: rank -> steps the run recorded as cut short (the job ended during them)
    incomplete_steps: dict[int, list[int]] = field(default_factory=dict)

    @property
    def model(self) -> dict[str, Any]:
        return self.raw.get("model") or {}


def parse_manifest(doc: Any, path: str = MANIFEST_NAME) -> Manifest:
    """Validate a manifest document and build a :class:`Manifest`."""
    if not isinstance(doc, dict):
        raise TracekitError("manifest is not a JSON object; re-run 'tracekit profile'", path=path)
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise TracekitError(
            f"manifest schema_version {version!r} is not supported (this tracekit reads "
            f"{SCHEMA_VERSION}); upgrade tracekit or re-record the run",
            path=path,
        )
    check_manifest(doc, path)
    try:
        world = int(doc["world_size"])
        trace_files = {int(r["rank"]): str(r["trace"]) for r in (doc.get("ranks") or []) if r.get("trace")}
        step_times = {int(r["rank"]): [float(x) for x in r.get("step_times_ms") or []]
                      for r in (doc.get("ranks") or [])}
        hosts = {int(r["rank"]): str(r.get("host") or "") for r in (doc.get("ranks") or [])}
        cores = {int(r["rank"]): int(r["cpu_cores"]) for r in (doc.get("ranks") or [])
                 if r.get("cpu_cores")}
        cpu_sets = {int(r["rank"]): tuple(int(c) for c in r["cpu_set"])
                    for r in (doc.get("ranks") or []) if r.get("cpu_set")}
        model = doc.get("model") or {}
        params = [
            ParamInfo(
                index=int(p["index"]), name=str(p["name"]), shape=tuple(p.get("shape") or ()),
                dtype=str(p.get("dtype") or ""), bytes=int(p["bytes"]),
                module=str(p.get("module") or ""),
                requires_grad=bool(p.get("requires_grad", True)),
            )
            for p in model.get("parameters") or []
        ]
        ddp = model.get("ddp") or {}
        buckets = [[int(i) for i in b["params"]] for b in ddp.get("buckets") or []]
        fwd = [(str(m["module"]), [int(i) for i in m.get("params") or []])
               for m in model.get("forward_order") or []]
        modules = [_module_info(m) for m in model.get("modules") or []]
        units = [_module_info(u) for u in (model.get("fsdp") or {}).get("units") or []]
    except (KeyError, TypeError, ValueError) as exc:
        raise TracekitError(f"manifest is malformed ({exc!r}); re-run 'tracekit profile'",
                            path=path) from None
    return Manifest(
        raw=doc,
        world_size=world,
        backend=str(doc.get("backend", "") or ""),
        trace_files=trace_files,
        step_times_ms=step_times,
        parameters=params,
        ddp_buckets=buckets,
        bucket_cap_mb=ddp.get("bucket_cap_mb"),
        first_bucket_mb=ddp.get("first_bucket_mb"),
        forward_order=fwd,
        modules=modules,
        fsdp_units=units,
        hosts=hosts,
        cpu_cores=cores,
        cpu_sets=cpu_sets,
        incomplete_steps=_incomplete_steps(doc.get("ranks") or []),
    )


def _module_info(m: dict) -> ModuleInfo:
    order = m.get("order")
    return ModuleInfo(module=str(m["module"]), cls=str(m.get("class") or ""),
                      params=tuple(int(i) for i in m.get("params") or []),
                      order=None if order is None else int(order),
                      bytes=int(m.get("bytes") or 0),
                      reshard_after_forward=m.get("reshard_after_forward"))


def _incomplete_steps(ranks: list[dict]) -> dict[int, list[int]]:
    """rank -> steps cut short: ``incomplete_steps``, and the step the collector names in
    ``errors`` when the job ended during the profiled window."""
    out = {}
    for r in ranks:
        steps = set(r.get("incomplete_steps") or [])
        for e in r.get("errors") or []:
            steps.update(int(m) for m in INCOMPLETE_STEP.findall(e))
        if steps:
            out[int(r["rank"])] = sorted(steps)
    return out


def read_manifest(folder: str | Path) -> Manifest:
    """Read and validate ``folder/manifest.json``."""
    path = Path(folder) / MANIFEST_NAME
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise TracekitError("no manifest.json in this folder", path=str(folder)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TracekitError(f"manifest is not valid JSON ({exc}); re-run 'tracekit profile'",
                            path=str(path)) from None
    return parse_manifest(doc, str(path))
