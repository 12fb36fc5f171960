"""The emulated cluster link (benchmarks/cluster.py): shaping really sets the rate, a job
can re-shape its own link, and the namespace is always removed. Needs root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cluster  # noqa: E402

pytestmark = pytest.mark.skipif(cluster.available() is not None,
                                reason=str(cluster.available()))

#: one TCP transfer over the namespace's loopback, timed; with an argument, the link is
#: re-shaped to that rate (from inside the job) and the transfer repeated
TRANSFER = r"""
import socket, sys, threading, time
sys.path.insert(0, sys.argv[1])
import cluster
N = 6 << 20
def once():
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    def sink():
        c, _ = srv.accept(); got = 0
        while got < N:
            got += len(c.recv(1 << 20))
        c.sendall(b"k"); c.close()
    t = threading.Thread(target=sink); t.start()
    s = socket.create_connection(srv.getsockname()); t0 = time.perf_counter()
    s.sendall(b"x" * N); s.recv(1); dt = time.perf_counter() - t0
    t.join(); s.close(); srv.close()
    return dt
print(once())
if len(sys.argv) > 2:
    cluster.shape(sys.argv[2])
    print(once())
"""


def _transfer(name: str, rate: str, *extra: str) -> list[float]:
    out = cluster.run_in(name, [sys.executable, "-c", TRANSFER, str(Path(cluster.__file__).parent),
                                *extra], rate=rate, capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("tk-")}


def test_a_transfer_takes_twice_as_long_at_half_the_rate():
    """6 MiB at 100 and 200 Mbit/s: ~0.5 s and ~0.25 s (tbf lets a 1 MB burst through at
    once, the same at both rates). Only the ratio is asserted, never a time."""
    before = _namespaces()
    with cluster.namespace("100mbit") as slow_ns:
        (slow,) = _transfer(slow_ns, "100mbit")
    with cluster.namespace("200mbit") as fast_ns:
        (fast,) = _transfer(fast_ns, "200mbit")
    assert 1.6 < slow / fast < 2.4
    assert _namespaces() == before


def test_a_job_reshapes_its_own_link_between_blocks():
    with cluster.namespace("100mbit") as name:
        first, second = _transfer(name, "100mbit", "400mbit")
    assert 3.0 < first / second < 5.0


def test_the_namespace_is_removed_on_failure_and_on_errors():
    before = _namespaces()
    res = cluster.run_on_link([sys.executable, "-c", "raise SystemExit(3)"], rate="1gbit")
    assert res.returncode == 3
    with pytest.raises(RuntimeError, match="boom"), cluster.namespace("1gbit") as name:
        assert name in _namespaces()
        raise RuntimeError("boom")
    assert _namespaces() == before


def test_bad_rates_and_shaping_outside_the_harness_are_refused(monkeypatch):
    with pytest.raises(cluster.ClusterError, match="write e.g. 4gbit"):
        cluster.check_rate("fast")
    monkeypatch.delenv("TRACEKIT_NETNS", raising=False)
    with pytest.raises(cluster.ClusterError, match="outside the harness"):
        cluster.shape("1gbit")
