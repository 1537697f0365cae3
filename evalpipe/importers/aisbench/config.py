"""Read an AISBench config dump (``configs/<time>_<pid>.py``) without executing it.

AISBench writes the merged config with mmengine's ``Config.dump`` after turning every
``type`` into a dotted-name string (``cli/utils.py`` ``recur_convert_config_type``), so the
file is top-level assignments of literals, lists, tuples, dicts and ``dict(key=…)`` calls.
Those are evaluated here from the syntax tree; any other expression is kept as its source
text, so an unusual value never runs code and never stops an import.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from evalpipe.errors import EvalpipeError


def read_config(path: Path) -> dict[str, Any]:
    """The top-level names assigned in the config file ``path`` and their values."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalpipeError(f"cannot read {path}: {exc}") from None
    return parse_config(source, str(path))


def parse_config(source: str, name: str = "config") -> dict[str, Any]:
    """:func:`read_config` on text; ``name`` is used in error messages."""
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as exc:
        raise EvalpipeError(
            f"{name}:{exc.lineno}: not a readable AISBench config dump ({exc.msg}); the file "
            "is damaged: restore it from the AISBench run folder"
        ) from None
    values: dict[str, Any] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            values[node.targets[0].id] = literal(node.value)
    return values


def literal(node: ast.expr) -> Any:
    """The value of a literal expression; tuples and sets become lists (JSON-ready)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_key(k): literal(v) for k, v in zip(node.keys, node.values, strict=True) if k}
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
    ):
        return {kw.arg: literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
        and not isinstance(node.operand.value, bool)
    ):
        value = node.operand.value
        return -value if isinstance(node.op, ast.USub) else value
    return ast.unparse(node)


def _key(node: ast.expr) -> str:
    value = literal(node)
    return value if isinstance(value, str) else str(value)
