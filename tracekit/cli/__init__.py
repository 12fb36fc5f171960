"""The ``tracekit`` command line: a thin click layer over library functions.

Each subcommand lives in its own module of this package and only parses options, calls
the library, and prints (text, or one JSON object with ``--json``). A
:class:`~tracekit.errors.TracekitError` becomes ``error: <message>`` on stderr and exit
code 2, never a traceback; so does every usage error click finds (a bad option value, a
missing argument: :mod:`tracekit.cli.usage`). Log records print as ``warning: ...``,
``info: ...`` (the level in lower case).
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys

import click

from tracekit._version import __version__
from tracekit.errors import TracekitError

#: subcommand name -> "module:attribute" (imported lazily so `tracekit --help` stays fast)
_COMMANDS = {
    "summary": "tracekit.cli.summary:summary",
    "profile": "tracekit.cli.profile:profile",
    "replay": "tracekit.cli.replay:replay",
    "graph": "tracekit.cli.graph:graph",
    "calibrate": "tracekit.cli.calibrate:calibrate",
    "timeline": "tracekit.cli.timeline:timeline",
    "report": "tracekit.cli.report:report",
}


#: set by :func:`console_main`: this process runs one command, then exits
_ONE_SHOT = False


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(_COMMANDS)

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = _COMMANDS.get(name)
        if target is None:
            return None
        mod, attr = target.split(":")
        if _ONE_SHOT and mod not in sys.modules:
            return getattr(_import_frozen(mod), attr)
        return getattr(importlib.import_module(mod), attr)


def _import_frozen(mod: str):
    """Import a command's module (pandas, numpy and the library: some 50k objects) with
    cyclic GC off, then move everything alive into the permanent generation
    (:func:`gc.freeze`): modules live until the process exits, so neither the collections
    during the import nor the later ones (the full one at exit included) need to walk
    them. Only for a process that ends with the command (:func:`console_main`): in a
    longer-lived caller of :func:`main` frozen garbage would never be freed."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(mod)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


EPILOG = """\b
Examples:
  tracekit profile --out runs/mlp -- torchrun --nproc_per_node 2 samples/train_ddp.py
  tracekit summary runs/mlp
  tracekit replay runs/mlp --what-if fusion=4MB --what-if dear
  tracekit timeline runs/mlp --what-if dear -o mlp.html

Every command also takes a plain folder (or list) of Kineto traces written by
torch.profiler, torchtitan or any other tool.
"""


@click.group(cls=_LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tracekit")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def cli(verbose: int, quiet: bool) -> None:
    """tracekit: record distributed PyTorch training, replay it, and predict what an
    optimization (bucket size, DeAR, overlap, network, world size) would buy."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else
                                         logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerLevelFormatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("tracekit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _LowerLevelFormatter(logging.Formatter):
    """``warning: ...``, not ``WARNING: ...``: the same form as ``error: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        return super().format(record)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI, turn user errors into one line and exit code 2."""
    try:
        # a command that ends with ctx.exit(N) (e.g. `profile`, passing its command's exit
        # code through) makes click return N here in non-standalone mode
        rv = cli.main(args=argv, prog_name="tracekit", standalone_mode=False)
    except TracekitError as exc:
        for line in exc.problems:
            click.echo(f"error: {line}", err=True)
        return 2
    except click.UsageError as exc:
        from tracekit.cli.usage import format_usage_error

        name = next((a for a in (sys.argv[1:] if argv is None else argv) if a in _COMMANDS), "")
        command = _LazyGroup._load(name) if name else None
        click.echo(f"error: {format_usage_error(exc, command, name)}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        return 0
    return rv if type(rv) is int else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def console_main() -> None:
    """The ``tracekit`` console script and ``python -m tracekit``: :func:`main` in a
    process that exits when the command is done (so the command's modules are imported
    as :func:`_import_frozen` says)."""
    global _ONE_SHOT
    _ONE_SHOT = True
    sys.exit(main())
