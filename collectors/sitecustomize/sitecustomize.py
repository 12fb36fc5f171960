"""Injected into every Python process of a job run under ``tracekit profile``.

``tracekit profile`` prepends this folder to ``PYTHONPATH``. Python imports the first
``sitecustomize`` on its path at start-up, so this file runs first in the launcher, in each
rank, and in any helper process. It

1. runs the ``sitecustomize`` that would have run without us (the next one on
   ``sys.path``), so a site's own customization keeps working;
2. arms the tracekit collector, which decides by itself whether this process is a training
   rank (see ``collectors.activation``) and otherwise does nothing.

It never raises: a failure is one line on stderr and the process goes on unprofiled.
"""

import os
import sys


def _chain_next_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    if spec.origin and os.path.abspath(spec.origin) == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    globals()["chained_sitecustomize"] = module


def _arm_collector() -> None:
    from collectors.bootstrap import arm

    arm()


try:
    _chain_next_sitecustomize()
except Exception as exc:  # a broken site customization must not stop the job
    sys.stderr.write(f"Error in sitecustomize (chained by tracekit): {exc!r}\n")

try:
    _arm_collector()
except ModuleNotFoundError as exc:
    if exc.name == "collectors":
        sys.stderr.write(f"tracekit: not installed in {sys.executable}, so pid {os.getpid()} "
                         "is not profiled; install tracekit into that environment\n")
    else:
        sys.stderr.write(f"tracekit: collector not started in pid {os.getpid()}: {exc!r}\n")
except Exception as exc:  # the collector must never stop the job
    sys.stderr.write(f"tracekit: collector not started in pid {os.getpid()}: {exc!r}\n")
