"""The JSON-lines mechanics the exchange format's kinds of line share: one compact line per
value, and checking a line's object against a key → check table, with messages that name the
line and the key."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from evalpipe.errors import EvalpipeError

Check = tuple[Callable[[Any], bool], str]
"""A predicate on a value and what it expects, for the message (``"an integer"``)."""


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return is_int(v) or isinstance(v, float)


def optional(check: Check) -> Check:
    """``check``, or ``null``."""
    return (lambda v: v is None or check[0](v), f"{check[1]} or null")


STR: Check = (lambda v: isinstance(v, str), "a string")
# Ids, versions and targets are often numbers in other harnesses' output; they become text.
TEXT: Check = (lambda v: isinstance(v, str) or is_num(v), "a string or a number")
INT: Check = (is_int, "an integer")
NUM: Check = (is_num, "a number")
OBJ: Check = (lambda v: isinstance(v, dict), "an object")
STRS: Check = (
    lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "a list of strings",
)


def json_line(value: Any) -> str:
    """``value`` as one compact JSON line (UTF-8 text kept as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def checked(
    value: Any,
    spec: Mapping[str, Check],
    required: Iterable[str],
    where: str,
    what: str,
    hint: str = "",
) -> dict[str, Any]:
    """``value`` if it is an object with every ``required`` key, no key outside ``spec`` and
    each value passing its check; else :class:`EvalpipeError` naming ``where`` and the key
    (``hint`` is added to the unknown-key message)."""
    if not isinstance(value, dict):
        raise EvalpipeError(f"{where}: a {what} must be a JSON object")
    missing = [k for k in required if k not in value]
    if missing:
        raise EvalpipeError(f"{where}: {what} is missing {', '.join(map(repr, missing))}")
    unknown = sorted(set(value) - set(spec))
    if unknown:
        raise EvalpipeError(
            f"{where}: unknown {what} key {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(spec)}){hint}"
        )
    for key, (ok, expected) in spec.items():
        if key in value and not ok(value[key]):
            raise EvalpipeError(f"{where}: {what} {key!r} must be {expected}, not {value[key]!r}")
    return value
