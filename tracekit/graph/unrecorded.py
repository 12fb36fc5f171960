"""Device ops that waited for something the trace does not record.

A device op starts when its launch has been queued and its stream is free, or later when
it waits for an event (``cudaStreamWaitEvent``). When it starts long after both, with no
recorded or inferred stream wait to explain it, it waited for something outside the
trace: work its stream (or the device) ran before the profiler started recording, an
event recorded before the trace began, another process on the GPU. Inference servers
show it most (sglang's overlap scheduler, vLLM's CUDA graphs): the profiler is switched on
while the previous batch still runs, and the first kernel of the trace starts hundreds of
milliseconds after its launch.

Such a wait cannot be recreated from arrival times: nothing in the trace arrives then.
:func:`add_unrecorded_waits` adds an ``UNRECORDED`` edge from the launch to the op;
delay calibration (:mod:`tracekit.graph.delays`) gives it the measured gap and the
parallel ``LAUNCH`` edge the rank's usual launch latency, so the one-off wait does not
pass for launch latency elsewhere. Typical delays
(:func:`tracekit.graph.edit.typical_delays`) take the median over steps of the same
``UNRECORDED`` edge when it repeats and keep the measured gap otherwise: with one
window (a trace without ``ProfilerStep``) that gap is all the trace says.

Example (µs): ``hipLaunchKernel`` [120, 125], its kernel on stream 3 [493_365, 493_372],
nothing before it on stream 3, no stream wait -> ``UNRECORDED`` edge launch -> kernel,
delay 493_240; the LAUNCH edge's delay is the rank's median launch latency.
"""

from __future__ import annotations

import numpy as np

from tracekit.graph.draft import GraphDraft
from tracekit.graph.model import EdgeKind

#: a device op that starts this long after both its launch and its stream predecessor,
#: with nothing recorded to explain it, waited for something outside the trace
UNRECORDED_WAIT_NS = 500_000
#: "no such predecessor" (far in the past, yet no overflow when subtracted)
_NEVER = -(2**62)


def add_unrecorded_waits(d: GraphDraft) -> int:
    """Add an ``UNRECORDED`` edge beside the binding edge of every node that waited for
    something the trace does not hold: a device op that started long after its launch
    and its stream predecessor, or a host op that resumed long after the device op its
    blocking call waited for (``cudaDeviceSynchronize`` returning 12 ms after the last
    recorded kernel ended). Call after every other edge is in."""
    if not d.is_gpu.any():
        return 0
    lsrc, ldst = d.edges_of(EdgeKind.LAUNCH)
    hsrc, hdst = d.edges_of(EdgeKind.HOST_WAIT)
    from_dev = d.is_gpu[hsrc]
    src = np.concatenate([lsrc, hsrc[from_dev]])
    dst = np.concatenate([ldst, hdst[from_dev]])
    if len(src) == 0:
        return 0
    # the latest-ending launch / awaited device op of each node, and its lane predecessor
    last_end = np.full(d.n, _NEVER, dtype=np.int64)
    np.maximum.at(last_end, dst, d.end[src])
    prev_end = np.full(d.n, _NEVER, dtype=np.int64)
    same = np.flatnonzero(d.lane[1:] == d.lane[:-1]) + 1
    prev_end[same] = d.end[same - 1]
    waited = np.zeros(d.n, dtype=bool)
    _, wdst = d.edges_of(EdgeKind.STREAM_WAIT)
    waited[wdst] = True
    binds = d.end[src] == last_end[dst]
    late = ((d.start[dst] - last_end[dst] > UNRECORDED_WAIT_NS)
            & (d.start[dst] - prev_end[dst] > UNRECORDED_WAIT_NS) & ~waited[dst] & binds)
    src, dst = src[late], dst[late]
    _, first = np.unique(dst, return_index=True)
    return d.add_edges(src[first], dst[first], EdgeKind.UNRECORDED)
