"""The global dataflow graph: compact numpy arrays for the hot path.

One node per op instance that occupies a lane; one edge per "cannot start before".
A *lane* is a CPU thread or GPU stream of one rank, or a comm channel, and runs its
nodes one at a time in recorded order (FIFO). Replay (``replay/engine.py``) computes
every node's start as::

    start[v] = max( max_{e=(u,v)} end[u] + delay[e],      # every predecessor, plus gap
                    end[prev node on v's lane] )          # FIFO lanes (LANE_ORDER edges)
    end[v]   = start[v] + dur[v]

and a collective instance (all nodes sharing ``coll_id``) starts on every participant
at once: at the latest of the participants' ready times.

Node table (arrays of length ``n_nodes``), e.g. for two ranks, one bucket all-reduce::

    id rank lane kind     step name             start_ns  dur_ns  wait_ns bytes    coll_id event_row
    0  0    0    compute  3    AddmmBackward0   0         1200000 0       -1       -1      4711
    1  0    2    comm     3    gloo:all_reduce  1300000   900000  150000  526336   0       4790
    2  1    3    comm     3    gloo:all_reduce  1150000   1050000 0       526336   0       9120

``dur_ns`` is what replay uses: for a comm node it is the transfer only; ``wait_ns`` is
the measured time it spent waiting for the slowest peer (recreated by replay, never
copied). ``start_ns`` is the measured start (for reporting and accuracy), ``event_row``
the row in ``Run.events`` (-1 for nodes a what-if created).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class NodeKind(IntEnum):
    """What a node does. Stored as int8 in :attr:`Graph.kind`."""

    COMPUTE = 0  #: a kernel, or a host op doing work (CPU training)
    COMM = 1  #: a collective's transfer (NCCL kernel, gloo work)
    LAUNCH = 2  #: a host call that queues device work (cudaLaunchKernel, ...)
    SYNC = 3  #: a stream / event / device synchronization
    HOST = 4  #: other host time on a thread (python, dispatcher, optimizer glue)
    MEMCPY = 5  #: a copy or fill on a device stream


class EdgeKind(IntEnum):
    """Why one node cannot start before another. Stored as int8 in :attr:`Graph.edge_kind`."""

    LANE_ORDER = 0  #: previous node on the same FIFO lane
    LAUNCH = 1  #: host launch -> the device op it queued (correlation / ac2g)
    STREAM_WAIT = 2  #: cudaStreamWaitEvent / stream or device synchronize
    HOST_WAIT = 3  #: a host thread blocked until device or comm work finished
    GRAD_READY = 4  #: last gradient of a bucket -> the bucket's collective
    COMM_DONE = 5  #: collective finished -> the op that waits for it
    COLLECTIVE = 6  #: joins the participants of one collective instance across ranks
    ISSUE = 7  #: host op that issues a collective -> the collective (c10d::allreduce_)
    PARAM_READY = 8  #: all-gather of parameters -> the forward op that needs them (DeAR)
    #: launch -> a device op that waited for something the trace does not record (work
    #: before the trace began); its delay is the measured gap (tracekit.graph.unrecorded)
    UNRECORDED = 9


@dataclass(frozen=True)
class Edge:
    """One edge, for readable code and exports (the graph stores edges as arrays)."""

    src: int
    dst: int
    kind: EdgeKind
    delay_ns: int = 0
    inferred: bool = False


@dataclass(frozen=True, kw_only=True)
class Lane:
    """One FIFO lane."""

    id: int
    rank: int
    #: 'cpu', 'gpu' or 'comm'
    kind: str
    #: thread id, stream id, or channel number
    local_id: int
    name: str
    #: the rank's main host thread (the one with the ProfilerStep#N annotations); step
    #: times are measured and predicted on it
    is_main: bool = False

    @property
    def label(self) -> str:
        """Readable and unique within a run, e.g. ``'rank0 cpu python3 2394'``."""
        return f"rank{self.rank} {self.kind} {self.name}"


@dataclass(kw_only=True)
class Graph:
    """The global dataflow graph. All per-node arrays have length :attr:`n_nodes`, all
    per-edge arrays length :attr:`n_edges`. Node ids are array indices."""

    # --- nodes ---
    rank: np.ndarray  #: int32
    lane: np.ndarray  #: int32, index into :attr:`lanes`
    kind: np.ndarray  #: int8, NodeKind
    step: np.ndarray  #: int32, step number (-1 outside steps)
    name: np.ndarray  #: int32, index into :attr:`names`
    start_ns: np.ndarray  #: int64, measured start (for accuracy and views)
    dur_ns: np.ndarray  #: int64, duration replay uses (comm: transfer only)
    wait_ns: np.ndarray  #: int64, measured waiting inside a comm node (0 for others)
    bytes: np.ndarray  #: int64, comm bytes (full buffer), -1 for non-comm
    #: collective instance id shared across ranks, -1 (int32 in a built graph while the
    #: ids fit, int64 where a what-if added nodes)
    coll_id: np.ndarray
    #: row in Run.events, -1 for synthetic nodes (int32 in a built graph while the rows
    #: fit, int64 where a what-if added nodes)
    event_row: np.ndarray
    # --- edges ---
    #: node ids: int32 in a built graph (while they fit), int64 where a what-if made them
    src: np.ndarray
    dst: np.ndarray
    edge_kind: np.ndarray  #: int8, EdgeKind
    delay_ns: np.ndarray  #: int64, minimum gap between src end and dst start
    inferred: np.ndarray  #: bool, True when no event recorded this dependency
    # --- tables ---
    names: list[str] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    #: free-form statements about how the graph was built (inferred edges, mismatches)
    notes: list[str] = field(default_factory=list)

    @property
    def n_nodes(self) -> int:
        return len(self.kind)

    @property
    def n_edges(self) -> int:
        return len(self.src)

    @property
    def has_gpu_lanes(self) -> bool:
        """Whether any lane is a GPU stream (a CPU-only run has none)."""
        return any(ln.kind == "gpu" for ln in self.lanes)

    @property
    def measured_end_ns(self) -> np.ndarray:
        """Each node's measured end: ``start_ns + wait_ns + dur_ns`` (a comm node arrived
        at ``start_ns``, waited ``wait_ns`` for its peers, then transferred ``dur_ns``)."""
        return self.start_ns + self.wait_ns + self.dur_ns

    def node_name(self, v: int) -> str:
        return self.names[int(self.name[v])]

    def edges(self):
        """Iterate edges as :class:`Edge` objects (slow; for exports and tests)."""
        for i in range(self.n_edges):
            yield Edge(int(self.src[i]), int(self.dst[i]), EdgeKind(int(self.edge_kind[i])),
                       int(self.delay_ns[i]), bool(self.inferred[i]))
