"""The JSON-lines mechanics the exchange format's kinds of line share: reading one line into
values both stores keep alike, one compact line per value, and checking a line's object
against a key → check table, with messages that name the line and the key."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.faults import KINDS, parse_fault
from evalpipe.options import REQUEST_ORDERS

Check = tuple[Callable[[Any], bool], str]
"""A predicate on a value and what it expects, for the message (``"an integer"``)."""

MAX_DEPTH = 64
"""Deepest nesting of objects and lists a line may hold; evalpipe writes at most a handful."""

UNKNOWN_TIME = "unknown"
"""What the lm-eval and AISBench importers store as a time an output folder does not give."""

# The stores' integer columns are 64-bit (SQLite INTEGER, PostgreSQL BIGINT).
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# PostgreSQL text cannot hold U+0000; a lone surrogate is not Unicode and fails UTF-8 encoding
# in both drivers. SQLite would keep the first and refuse the second: refuse both, everywhere.
_NUL = "\x00"
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WRAPPERS = ("run", "trace")  # lines whose one key wraps the record: {"run": {...}}
_SHOWN = 80  # characters of a refused value a message repeats


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return is_int(v) or isinstance(v, float)


def is_timestamp(v: Any) -> bool:
    """An ISO 8601 date and time (``Z`` for UTC too), or :data:`UNKNOWN_TIME`."""
    if not isinstance(v, str):
        return False
    if v == UNKNOWN_TIME:
        return True
    try:
        datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith("Z") else v)
    except ValueError:
        return False
    return True


def optional(check: Check) -> Check:
    """``check``, or ``null``."""
    return (lambda v: v is None or check[0](v), f"{check[1]} or null")


STR: Check = (lambda v: isinstance(v, str), "a string")
# Ids, versions and targets are often numbers in other harnesses' output; they become text.
TEXT: Check = (lambda v: isinstance(v, str) or is_num(v), "a string or a number")
INT: Check = (
    lambda v: is_int(v) and _INT64_MIN <= v <= _INT64_MAX,
    "an integer that fits in 64 bits",
)
COUNT: Check = (lambda v: is_int(v) and 0 <= v <= _INT64_MAX, "a non-negative 64-bit integer")
NUM: Check = (is_num, "a number")
OBJ: Check = (lambda v: isinstance(v, dict), "an object")
STRS: Check = (
    lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "a list of strings",
)
TIMESTAMP: Check = (
    is_timestamp,
    f"an ISO 8601 date and time like 2026-11-28T03:16:42+00:00 (or {UNKNOWN_TIME})",
)


class _Refused:
    """A number JSON can spell but no store keeps (NaN, ±Infinity, 1e400, 5 000 digits),
    kept in place while parsing so that the message can name its key."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


_NOT_FINITE = "is {}, not a finite number; write null, or leave the key out"


def _constant(name: str) -> _Refused:
    return _Refused(_NOT_FINITE.format(name))


def _float(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(_NOT_FINITE.format(text))


def _int(text: str) -> int | _Refused:
    try:
        return int(text)
    except ValueError:  # longer than sys.get_int_max_str_digits()
        digits = len(text.lstrip("-"))
        return _Refused(f"is a number of {digits} digits; write it as a string")


def read_json(text: str, where: str) -> Any:
    """The JSON value of one line, holding only values both stores keep alike; else an
    :class:`EvalpipeError` naming ``where`` and the key."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except json.JSONDecodeError as exc:
        raise EvalpipeError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise EvalpipeError(
            f"{where}: nested deeper than {MAX_DEPTH} levels; flatten the data"
        ) from None
    _check_values(value, where)
    return value


def _check_values(value: Any, where: str) -> None:
    """Walk ``value`` (without recursion: its depth is what is being checked)."""
    wrapped = isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _WRAPPERS
    field_depth = 2 if wrapped else 1  # how much of a path names the record's field
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            _check_text(v, where, path, "")
        elif isinstance(v, _Refused):
            raise EvalpipeError(f"{where}: {_path(path)} {v.problem}")
        elif isinstance(v, (dict, list)):
            if len(path) >= MAX_DEPTH:
                raise EvalpipeError(
                    f"{where}: {_path(path[:field_depth])} is nested deeper than {MAX_DEPTH} "
                    "levels; flatten the data"
                )
            if isinstance(v, dict):
                for key, item in v.items():
                    _check_text(key, where, path, " in a key")
                    stack.append((item, (*path, key)))
            else:
                stack.extend((item, (*path, i)) for i, item in enumerate(v))


def _check_text(text: str, where: str, path: tuple[str | int, ...], place: str) -> None:
    if _NUL in text:
        raise EvalpipeError(
            f"{where}: {_path(path)} holds a NUL character{place} (\\u0000), which PostgreSQL "
            "cannot store; remove it"
        )
    if _SURROGATE.search(text):
        raise EvalpipeError(
            f"{where}: {_path(path)} holds a lone surrogate{place} (\\ud800-\\udfff), which is "
            "not Unicode text; fix what wrote the file"
        )


def _path(path: tuple[str | int, ...]) -> str:
    """``run.provenance.x``, ``meta.scores[1]``, ``meta["a b"]``: where in a line a value is."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "the line"


def numbered_texts(lines: Iterable[str | bytes], source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; bytes are read as UTF-8 line by line, so a bad byte
    is reported on its own line."""
    number = 0
    try:
        for number, line in enumerate(lines, start=1):
            yield number, line if isinstance(line, str) else _decoded(line, f"{source}:{number}")
    except UnicodeDecodeError as exc:
        # A text stream decodes ahead in blocks: the bad byte is on this line or a later one.
        raise EvalpipeError(
            f"{source}:{number + 1}: not valid UTF-8 at or after this line ({exc.reason}); the "
            "exchange format is UTF-8 text"
        ) from None


def _decoded(line: bytes, where: str) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvalpipeError(
            f"{where}: not valid UTF-8 (byte {exc.start + 1}); the exchange format is UTF-8 text"
        ) from None


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
            shown = repr(value[key])
            if len(shown) > _SHOWN:
                shown = shown[: _SHOWN - 1] + "…"
            raise EvalpipeError(f"{where}: {what} {key!r} must be {expected}, not {shown}")
    return value


def _is_fault(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(parse_fault(value))
    except EvalpipeError:
        return False


FAULT: Check = (_is_fault, f"a fault spec like key-scale:size=0.2 (kinds: {', '.join(KINDS)})")
ORDER: Check = (lambda v: v in REQUEST_ORDERS, f"one of {', '.join(REQUEST_ORDERS)}")
