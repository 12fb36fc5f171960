"""The emulated cluster link: run a job inside a private network namespace whose loopback
is shaped to a given rate, the bed tracekit's what-if predictions are validated on.

Loopback gloo on a small machine is CPU-bound (gloo's threads compete with the training
threads for the cores) and noisy; a shaped link makes the transfers wire-bound, like a
cluster's network (DESIGN.md, "The validation bed")::

    python benchmarks/cluster.py --link 4gbit -- torchrun --nproc_per_node 2 samples/train_ddp.py
    python benchmarks/cluster.py --link 4gbit --pin -- tracekit profile --out runs/x -- torchrun ...
    python benchmarks/cluster.py --link loopback -- tracekit calibrate --out comm.json -- torchrun ...

What it does:

- creates a fresh namespace (``tk-<pid>-<n>``), brings its loopback up and shapes it with
  ``tc qdisc replace dev lo root tbf rate RATE burst 1mb latency 20ms`` (``netem`` does
  not work in this kernel; ``tbf`` does). Both ranks share the one loopback, so a 2-rank
  ring all-reduce of B bytes moves about 2B through it;
- runs the command inside it (``ip netns exec``) with ``TRACEKIT_LINK`` set to the rate
  and ``TRACEKIT_NETNS`` to the namespace, so a job can re-shape its own link between
  interleaved blocks with :func:`shape` (``bandwidth=`` what-ifs are measured against the
  same process at another rate);
- ``--pin``: sets ``TRACEKIT_PIN_CORES=1``; the sample trainers then pin each local rank
  to its own core;
- always removes the namespace (and kills what still runs in it): on success, on failure,
  on Ctrl-C and on SIGTERM.

It needs root (``ip netns``, ``tc``); :func:`available` says why not otherwise. The only
address it ever uses is loopback inside the namespace it created.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

#: tbf's bucket and queue limits (DESIGN.md): a 1 MB burst keeps rates exact at Gbit/s
BURST = "1mb"
LATENCY = "20ms"
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|tbit)$", re.IGNORECASE)
_counter = itertools.count()


class ClusterError(RuntimeError):
    """The emulated link cannot be set up here (the message says why and what to do)."""


def available() -> str | None:
    """None when namespaces and shaping work here, else the reason they do not."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the emulated link needs root (ip netns, tc); run as root, as CI does"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed; apt-get install iproute2"
    return None


def check_rate(rate: str) -> str:
    """``'4gbit'`` -> ``'4gbit'``; ``'loopback'`` means unshaped."""
    r = rate.strip().lower()
    if r != "loopback" and not _RATE.match(r):
        raise ClusterError(f"--link {rate!r} is not a rate; write e.g. 4gbit, 500mbit or "
                           "loopback (unshaped)")
    return r


def _run(cmd: Sequence[str]) -> None:
    res = subprocess.run(list(cmd), capture_output=True, text=True)
    if res.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {res.stderr.strip() or res.returncode}")


def shape(rate: str, netns: str | None = None) -> None:
    """Shape the loopback of ``netns`` (None: the namespace this process runs in, which
    must be one the harness created) to ``rate``; ``'loopback'`` removes the shaping."""
    rate = check_rate(rate)
    if netns is None:
        netns = os.environ.get("TRACEKIT_NETNS")
        if not netns:
            raise ClusterError("shape() outside the harness: not re-shaping this machine's "
                               "own loopback; run the job under benchmarks/cluster.py")
    prefix = ["ip", "netns", "exec", netns]
    if rate == "loopback":
        subprocess.run([*prefix, "tc", "qdisc", "del", "dev", "lo", "root"],
                       capture_output=True)
        return
    _run([*prefix, "tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", rate,
          "burst", BURST, "latency", LATENCY])


def _remove(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.contextmanager
def namespace(rate: str) -> Iterator[str]:
    """A fresh namespace with its loopback up and shaped to ``rate``; removed on exit,
    whatever happens (SIGTERM is turned into an exception so the removal runs)."""
    why = available()
    if why:
        raise ClusterError(why)
    rate = check_rate(rate)
    name = f"tk-{os.getpid()}-{next(_counter)}"
    previous = signal.getsignal(signal.SIGTERM)

    def _terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)
    _run(["ip", "netns", "add", name])
    try:
        _run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        shape(rate, name)
        yield name
    finally:
        _remove(name)
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_in(name: str, command: Sequence[str], *, rate: str, pin: bool = False,
           env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` inside namespace ``name`` (see module doc for the environment)."""
    full_env = {**os.environ, **(env or {}), "TRACEKIT_NETNS": name, "TRACEKIT_LINK": rate,
                "MASTER_ADDR": "127.0.0.1"}
    if pin:
        full_env["TRACEKIT_PIN_CORES"] = "1"
    return subprocess.run(["ip", "netns", "exec", name, *command], env=full_env, **kwargs)


def run_on_link(command: Sequence[str], *, rate: str, pin: bool = False,
                env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` on a fresh link of ``rate``; the namespace is gone afterwards."""
    with namespace(rate) as name:
        return run_in(name, command, rate=rate, pin=pin, env=env, **kwargs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python benchmarks/cluster.py --link 4gbit "
                                        "-- torchrun --nproc_per_node 2 samples/train_ddp.py")
    ap.add_argument("--link", default="4gbit", help="rate of the shaped loopback, e.g. 2gbit, "
                    "4gbit, 8gbit, or 'loopback' (unshaped); default 4gbit")
    ap.add_argument("--pin", action="store_true", help="pin each rank to its own core")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the launcher command")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("a command is required after --; e.g. -- torchrun --nproc_per_node 2 "
                 "samples/train_ddp.py")
    try:
        return run_on_link(command, rate=args.link, pin=args.pin).returncode
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the namespace was removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
