"""The library's architecture, checked from its source with :mod:`ast`.

Layers, lowest first; a module may import only modules of its own layer or a lower one
(imports inside functions count, relative imports are resolved)::

    Ingest (tracekit.core, tracekit.errors, tracekit.log, tracekit._version)
      -> Graph (tracekit.graph)
      -> Replay (replay, tracekit.analysis)
      -> API (tracekit.api)
      -> Views (tracekit.views)
      -> CLI (tracekit.cli, tracekit.__main__)

``collectors`` stands apart: it may import Ingest-level tracekit modules and itself, and
only the CLI may import it. Nothing below the CLI imports torch. The package root
``tracekit/__init__.py`` is the front door's re-export and may import anything.

Sizes: no module over 600 lines, no function (methods and nested functions counted on
their own, from the ``def`` line to its last line) over 100 lines.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracekit", "replay", "collectors")

INGEST, GRAPH, REPLAY, API, VIEWS, CLI = range(6)
LAYER_NAMES = {INGEST: "Ingest", GRAPH: "Graph", REPLAY: "Replay", API: "API",
               VIEWS: "Views", CLI: "CLI"}
#: module prefix -> layer (the longest matching prefix wins)
LAYERS = {
    "tracekit.core": INGEST,
    "tracekit._version": INGEST,
    "tracekit.errors": INGEST,
    "tracekit.log": INGEST,
    "tracekit.graph": GRAPH,
    "replay": REPLAY,
    "tracekit.analysis": REPLAY,
    "tracekit.api": API,
    "tracekit.views": VIEWS,
    "tracekit.cli": CLI,
    "tracekit.__main__": CLI,
}
#: the front door: imports anything, and is not a layer of its own
EXEMPT = ("tracekit",)
COLLECTORS = "collectors"
#: third-party packages only the CLI and the collectors may import
FORBIDDEN_BELOW_CLI = ("torch",)

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen in one module."""

    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    path: str  # the importing file, relative to the scanned root
    line: int


def _has_prefix(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a .py file below ``root`` (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path, packages=PACKAGES) -> list[Path]:
    """Every .py file of ``packages`` below ``root``, sorted."""
    return sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(tree: ast.AST, module: str, path: str, is_package: bool,
               known: set[str]) -> list[Import]:
    """Every import in ``tree``, module-level or inside functions.

    ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module in
    ``known``, else as importing ``pkg``.
    """
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, is_package, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(module, sub if sub in known else base, path, node.lineno))
    return found


def layer_of(module: str) -> int | None:
    """The layer of a library module by its longest matching prefix; None if unmapped."""
    best = max((p for p in LAYERS if _has_prefix(module, p)), key=len, default=None)
    return None if best is None else LAYERS[best]


def _layer_label(module: str) -> str:
    """What a module is, for messages: its layer, 'collectors', 'third-party', ..."""
    if _has_prefix(module, COLLECTORS):
        return "collectors"
    if not any(_has_prefix(module, p) for p in PACKAGES):
        return "third-party"
    if module in EXEMPT:
        return "front door"
    return LAYER_NAMES.get(layer_of(module), "no layer")


def import_violation(imp: Import) -> str | None:
    """Why ``imp`` breaks the layer rule, or None when it is allowed."""
    src, dst = imp.module, imp.target
    if src in EXEMPT:
        return None
    src_collectors = _has_prefix(src, COLLECTORS)
    if _has_prefix(dst, COLLECTORS):
        if src_collectors or layer_of(src) == CLI:
            return None
        return "only the CLI and the collectors themselves may import collectors"
    if any(_has_prefix(dst, p) for p in FORBIDDEN_BELOW_CLI):
        if src_collectors or layer_of(src) == CLI:
            return None
        return "only the CLI and the collectors may import torch"
    if not any(_has_prefix(dst, p) for p in PACKAGES):
        return None  # the standard library or a third-party package
    if dst in EXEMPT:
        return "imports the package root (the front door); import the module itself"
    dst_layer = layer_of(dst)
    if dst_layer is None:
        return "imports a module no layer is mapped for; add it to LAYERS"
    if src_collectors:
        return None if dst_layer == INGEST else "collectors may import only Ingest modules"
    src_layer = layer_of(src)
    if src_layer is None:
        return "a module no layer is mapped for; add it to LAYERS"
    if dst_layer > src_layer:
        return "a lower layer imports a higher one"
    return None


def describe_import(imp: Import, why: str) -> str:
    """One readable line: where the import is, what imports what, and why it is wrong."""
    return (f"{imp.path}:{imp.line}: {imp.module} ({_layer_label(imp.module)}) imports "
            f"{imp.target} ({_layer_label(imp.target)}): {why}")


def size_offenders(tree: ast.AST, path: str, n_lines: int) -> list[str]:
    """The module itself if over :data:`MAX_MODULE_LINES`, and every function over
    :data:`MAX_FUNCTION_LINES` (def line to last line), one line each, in line order."""
    found: list[tuple[int, str]] = []
    if n_lines > MAX_MODULE_LINES:
        found.append((1, f"module has {n_lines} lines (max {MAX_MODULE_LINES})"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_FUNCTION_LINES:
                found.append((node.lineno, f"function {node.name} has {size} lines "
                                           f"(max {MAX_FUNCTION_LINES})"))
    return [f"{path}:{line}: {what}" for line, what in sorted(found)]


def check(root: Path, packages=PACKAGES) -> tuple[list[str], list[str]]:
    """(layer violations, size violations) of every module of ``packages`` below ``root``."""
    files = source_files(root, packages)
    known = {module_name(p, root) for p in files}
    layer_problems: list[str] = []
    size_problems: list[str] = []
    for p in files:
        text = p.read_text()
        rel = p.relative_to(root).as_posix()
        tree = ast.parse(text, filename=rel)
        imps = imports_of(tree, module_name(p, root), rel, p.name == "__init__.py", known)
        for imp in sorted(imps, key=lambda i: i.line):
            why = import_violation(imp)
            if why:
                layer_problems.append(describe_import(imp, why))
        size_problems += size_offenders(tree, rel, len(text.splitlines()))
    return layer_problems, size_problems


def _report(title: str, problems: list[str]) -> str:
    """A failure message listing every problem on a line of its own."""
    return f"{len(problems)} {title}:\n  " + "\n  ".join(problems)


# --- the rules, on the library ------------------------------------------------------


def test_every_module_has_a_layer():
    modules = [module_name(p, ROOT) for p in source_files(ROOT)]
    unmapped = [m for m in modules if not _has_prefix(m, COLLECTORS) and m not in EXEMPT
                and layer_of(m) is None]
    assert not unmapped, _report("modules with no layer (add them to LAYERS)", unmapped)


def test_no_import_goes_up_a_layer():
    layer_problems, _ = check(ROOT)
    assert not layer_problems, _report("imports against the layer order", layer_problems)


def test_no_module_or_function_is_too_long():
    _, size_problems = check(ROOT)
    assert not size_problems, _report("modules or functions too long", size_problems)


# --- the checker catches what it should ---------------------------------------------


def _write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def _function(name: str, n_lines: int, *, indent: str = "", prefix: str = "def") -> str:
    """Source of a function ``n_lines`` long, from its ``def`` line to its last line."""
    body = [f"{indent}    x{i} = {i}" for i in range(n_lines - 2)]
    return "\n".join([f"{indent}{prefix} {name}():", *body, f"{indent}    return 0"]) + "\n"


def test_checker_reports_every_back_edge(tmp_path):
    _write_package(tmp_path, {
        "tracekit/__init__.py": "from tracekit.analysis import summarize\n",  # exempt
        "tracekit/core/__init__.py": "",
        "tracekit/core/run.py": "def load():\n    from replay.engine import schedule\n",
        "tracekit/graph/__init__.py": "",
        "tracekit/graph/checks.py": "from ..views import html\nimport torch\n",
        "tracekit/views/__init__.py": "",
        "tracekit/views/html.py": "from tracekit.graph import checks\nfrom tracekit import v\n",
        "tracekit/cli/__init__.py": "from collectors import launch\nfrom tracekit.api import x\n",
        "replay/__init__.py": "",
        "replay/engine.py": "import numpy\n\ndef f():\n    import tracekit.api.runs\n",
        "collectors/__init__.py": "",
        "collectors/launch.py": "from tracekit.core import run\nfrom tracekit.graph import checks\n",
    })
    assert check(tmp_path)[0] == [
        "collectors/launch.py:2: collectors.launch (collectors) imports tracekit.graph.checks "
        "(Graph): collectors may import only Ingest modules",
        "replay/engine.py:4: replay.engine (Replay) imports tracekit.api.runs (API): "
        "a lower layer imports a higher one",
        "tracekit/core/run.py:2: tracekit.core.run (Ingest) imports replay.engine (Replay): "
        "a lower layer imports a higher one",
        "tracekit/graph/checks.py:1: tracekit.graph.checks (Graph) imports tracekit.views.html "
        "(Views): a lower layer imports a higher one",
        "tracekit/graph/checks.py:2: tracekit.graph.checks (Graph) imports torch "
        "(third-party): only the CLI and the collectors may import torch",
        "tracekit/views/html.py:2: tracekit.views.html (Views) imports tracekit (front door): "
        "imports the package root (the front door); import the module itself",
    ]


def test_checker_reports_every_function_over_100_lines(tmp_path):
    nested = _function("outer", 105).replace(
        "    return 0\n", _function("inner", 101, indent="    ") + "    return 0\n")
    _write_package(tmp_path, {
        "replay/__init__.py": "",
        "replay/a.py": _function("fine", 100) + _function("long", 101),
        "replay/b.py": "class C:\n" + _function("method", 101, indent="    "),
        "replay/c.py": _function("waits", 120, prefix="async def"),
        "replay/d.py": nested,
    })
    assert check(tmp_path)[1] == [
        "replay/a.py:101: function long has 101 lines (max 100)",
        "replay/b.py:2: function method has 101 lines (max 100)",
        "replay/c.py:1: function waits has 120 lines (max 100)",
        "replay/d.py:1: function outer has 206 lines (max 100)",
        "replay/d.py:105: function inner has 101 lines (max 100)",
    ]


def test_checker_flags_long_modules_and_resolves_relative_imports(tmp_path):
    _write_package(tmp_path, {
        "tracekit/__init__.py": "",
        "tracekit/graph/__init__.py": "from . import build\n",
        "tracekit/graph/build.py": "from .. import errors\nfrom ..analysis.x import y\n",
        "tracekit/analysis/__init__.py": "",
        "tracekit/analysis/x.py": "y = 1\n" * 601,
        "tracekit/errors.py": "from . import log\n",
        "tracekit/log.py": "y = 1\n" * 600,
    })
    layer_problems, size_problems = check(tmp_path)
    assert layer_problems == [
        "tracekit/graph/build.py:2: tracekit.graph.build (Graph) imports tracekit.analysis.x "
        "(Replay): a lower layer imports a higher one",
    ]
    assert size_problems == ["tracekit/analysis/x.py:1: module has 601 lines (max 600)"]
