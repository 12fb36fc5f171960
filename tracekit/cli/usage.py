"""click's own usage errors in tracekit's one form: ``error: <what>; <how to fix it>``.

click would print a Usage block, a hint line and ``Error: ...``; tracekit prints one
line, with an example taken from the command itself (its epilog's examples, the option's
default, or its first choice)::

    error: --interference: 'magic' is not one of auto, factor, cores, none; e.g. --interference auto
    error: -o/--output: '/tmp' is a folder, expected a file; e.g. -o timeline.html
    error: --steps: 0 is not in the range >= 1; e.g. --steps 5
"""

from __future__ import annotations

import re

import click

_QUOTED_CHOICES = re.compile(r"is not one of (.*)$")


def format_usage_error(exc: click.UsageError, command: click.Command | None = None,
                       name: str = "") -> str:
    """The one line (without ``error: ``) for a click usage error; ``command`` (and its
    ``name``) stand in when click's error carries no context (a missing option value)."""
    ctx = exc.ctx
    if ctx is None and command is not None:
        ctx = click.Context(command, info_name=f"tracekit {name}".strip())
    command_path = ctx.command_path if ctx is not None else "tracekit"
    help_hint = f"see '{command_path} --help'"
    if isinstance(exc, click.MissingParameter):
        name = _param_name(exc.param) if exc.param is not None else "an argument"
        kind = "argument" if isinstance(exc.param, click.Argument) else "option"
        example = _example(exc.param, ctx) if exc.param is not None else None
        fix = f"e.g. {example}" if example else help_hint
        return f"missing {kind} {name}; {fix}"
    if isinstance(exc, click.BadParameter):
        param = exc.param
        name = _param_name(param) if param is not None else (exc.param_hint or "value")
        what = _reword(exc.format_message(), name)
        example = _example(param, ctx) if param is not None else None
        if what.endswith("does not exist"):
            return f"{name}: {what}; check the path"
        return f"{name}: {what}; " + (f"e.g. {example}" if example else help_hint)
    if isinstance(exc, click.NoSuchOption):
        close = f"did you mean {' or '.join(exc.possibilities)}?" if exc.possibilities else \
            help_hint
        return f"{command_path}: no such option {exc.option_name}; {close}"
    if isinstance(exc, click.BadOptionUsage):
        param = _option_named(ctx, exc.option_name)
        example = _example(param, ctx) if param is not None else None
        return (f"{_sentence(exc.message)}; "
                + (f"e.g. {example}" if example else help_hint))
    message = _sentence(exc.format_message())
    if message.startswith("no such command") and ctx is not None:
        names = ", ".join(ctx.command.list_commands(ctx))  # type: ignore[attr-defined]
        return f"{message}; expected one of {names} (see 'tracekit --help')"
    return message if ";" in message or ": " in message else f"{message}; {help_hint}"


def _sentence(text: str) -> str:
    """click's ``Error text.`` -> ``error text`` (one line, no final period)."""
    text = " ".join(text.split()).rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _param_name(param: click.Parameter) -> str:
    if isinstance(param, click.Option):
        return "/".join(param.opts)
    return (param.human_readable_name or param.name or "argument").upper().rstrip(".")


def _reword(message: str, name: str) -> str:
    """click's ``Invalid value for '-o' / '--output': File 'x' is a directory.`` -> the
    part after the option, reworded where click's wording is unclear."""
    text = _sentence(message.split(": ", 1)[1] if message.startswith("Invalid value")
                     else message)
    text = re.sub(r"^(?:file|directory|path) ('.*') is a directory$",
                  r"\1 is a folder, expected a file", text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:file|directory|path) ('.*') is a file$",
                  r"\1 is a file, expected a folder", text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:file|directory|path) ('.*') does not exist$",
                  r"\1 does not exist", text, flags=re.IGNORECASE)
    text = text.replace("is not a valid integer range", "is not a whole number")
    text = text.replace("is not a valid float range", "is not a number")
    text = text.replace("is not a valid integer", "is not a whole number")
    text = text.replace("is not a valid float", "is not a number")
    text = re.sub(r"the range x?([<>]=?)", r"the range \1 ", text)
    m = _QUOTED_CHOICES.search(text)
    if m:
        text = text[: m.start(1)] + m.group(1).replace("'", "")
    return text


def _option_named(ctx: click.Context | None, opt: str | None) -> click.Parameter | None:
    if ctx is None or opt is None:
        return None
    return next((p for p in ctx.command.params if opt in getattr(p, "opts", ())), None)


def _example(param: click.Parameter, ctx: click.Context | None) -> str | None:
    """``--step 6``: the option with a value from the command's examples, else its
    default, else its first choice; an argument: the command's first example."""
    epilog = (ctx.command.epilog or "") if ctx is not None else ""
    examples = [ln.strip() for ln in epilog.splitlines() if ln.strip().startswith("tracekit ")]
    if not isinstance(param, click.Option):
        return examples[0] if examples else None
    for line in examples:
        words = line.split()
        for i, w in enumerate(words[:-1]):
            if w in param.opts and not words[i + 1].startswith("-"):
                return f"{w} {words[i + 1]}"
    opt = max(param.opts, key=len)
    if param.is_flag:
        return opt
    default = param.default
    if isinstance(param.type, click.Choice):
        choices = [str(c) for c in param.type.choices]
        value = default if default in choices else choices[0]
        return f"{opt} {value}"
    if default is not None and not callable(default) and default not in ((), ""):
        return f"{opt} {default}"
    return None
