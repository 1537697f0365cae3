"""The package's shape, checked: imports point down, no circles, the CLI goes through the API,
and modules and functions stay small enough to read."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "evalpipe"

# Lower layers never import higher ones; a package and its modules share a layer. The first
# matching prefix wins.
LAYERS: list[tuple[str, int]] = [
    ("evalpipe.cli", 7),
    ("evalpipe.__main__", 7),
    ("evalpipe.api", 6),
    ("evalpipe.report", 5),
    ("evalpipe.canary", 5),
    ("evalpipe.sweep", 5),
    ("evalpipe.run", 4),
    ("evalpipe.gate", 4),
    ("evalpipe.importers", 3),
    ("evalpipe.compare", 3),
    ("evalpipe.store", 2),
    ("evalpipe.engine", 2),
    ("evalpipe.tasks", 2),
    ("evalpipe.github", 2),
    ("evalpipe.layout", 1),
    ("evalpipe.backends", 1),
    ("evalpipe.options", 1),
    ("evalpipe.faults", 1),
    ("evalpipe.records", 1),
    ("evalpipe.traces", 1),
    ("evalpipe.errors", 0),
    ("evalpipe.limits", 0),
    ("evalpipe.yamlload", 0),
    ("evalpipe.paths", 0),
    ("evalpipe", 0),
]
CLI_MAY_IMPORT = {"evalpipe", "evalpipe.api", "evalpipe.errors"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every evalpipe module ``name`` imports, at any depth of its code (lazy ones too)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    return next(
        level for prefix, level in LAYERS if name == prefix or name.startswith(prefix + ".")
    )


def _package(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2])


def test_no_import_circles() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_imports_point_down() -> None:
    upward = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, targets in GRAPH.items()
        for b in targets
        if _package(a) != _package(b) and _layer(b) > _layer(a)
    ]
    assert not upward, "\n".join(sorted(upward))


def test_cli_calls_only_the_api() -> None:
    outside = {
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name == "evalpipe.cli" or name.startswith("evalpipe.cli.")
        for target in targets
        if target not in CLI_MAY_IMPORT and not target.startswith("evalpipe.cli")
    }
    assert not outside, "\n".join(sorted(outside))


def _private_uses(name: str) -> list[str]:
    """``from evalpipe.x import _y`` and ``mod._y`` where ``mod`` is an imported evalpipe module."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    bad, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("evalpipe"):
            for a in node.names:
                if a.name.startswith("_") and a.name != "__version__":
                    bad.append(f"{name}: from {node.module} import {a.name}")
                if f"{node.module}.{a.name}" in MODULES:
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            aliases.update(a.asname for a in node.names if a.asname and a.name in MODULES)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            bad.append(f"{name}: {node.value.id}.{node.attr}")
    return bad


def test_no_module_uses_another_modules_private_names() -> None:
    bad = [b for name in MODULES for b in _private_uses(name)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name: str) -> None:
    text = MODULES[name].read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{name}: split it by concept"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{name}: {', '.join(long)}"


def test_the_layer_table_covers_every_module() -> None:
    for name in MODULES:
        assert any(name == p or name.startswith(p + ".") for p, _ in LAYERS), name
    assert list(itertools.chain(MODULES)), "no modules found"


OPTIONAL_EXTRAS = {
    "ray": {"evalpipe.sweep.rayexec"},
    "pandas": {"evalpipe.api.frames.columns"},
    "pyarrow": {"evalpipe.api.frames.write"},
}
"""Optional extras and the only modules that may import them (lazily, inside functions)."""


@pytest.mark.parametrize("extra", sorted(OPTIONAL_EXTRAS))
def test_an_optional_extra_is_imported_only_by_its_module(extra: str) -> None:
    users = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n == extra or n.startswith(extra + ".") for n in names):
                users.add(name)
    assert users == OPTIONAL_EXTRAS[extra]
