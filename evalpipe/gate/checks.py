"""Strict checks of policy values: one line naming the file and the key, exit code 3. Pure.

Shared by the policy (:mod:`evalpipe.gate.policy`) and its parts; a bad value never falls
back to a default, and no input ends in a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from evalpipe.errors import EvalpipeError

EXIT_BAD_POLICY = 3
"""Exit code of ``evalpipe gate`` for a bad policy file or bad usage."""


def as_layout(value: object, source: str, where: str) -> str:
    """``value`` as a canonical layout name."""
    from evalpipe.layout import parse

    text = as_text(value, source, where)
    try:
        return parse(text).canonical
    except EvalpipeError as exc:  # LayoutError: re-raised as a policy error (exit 3)
        raise bad(source, f"{where}: {exc.message}") from exc


def check_keys(data: Mapping[Any, Any], allowed: set[str], source: str, prefix: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise bad(
            source,
            f"{prefix}{unknown[0]}: unknown key (allowed here: {', '.join(sorted(allowed))})",
        )


def as_number(value: object, source: str, where: str) -> float:
    # bool is an int subclass: `margin: yes` must not become 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(source, f"{where}: must be a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int of 309+ digits has no float
        number = math.inf
    if not math.isfinite(number):
        raise bad(source, f"{where}: must be a finite number, got {shown(value)}")
    return number


def as_text(value: object, source: str, where: str, empty: bool = False) -> str:
    if not isinstance(value, str) or not (empty or value.strip()):
        raise bad(source, f"{where}: must be a non-empty string, got {shown(value)}")
    if "\x00" in value:
        raise bad(source, f"{where}: must not contain a NUL character (no store can keep it)")
    return value.strip()


def shown(value: object) -> str:
    """``repr`` cut to 60 characters: a policy value can be a 4000-digit number."""
    text = (
        repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge integer"
    )
    return text if len(text) <= 60 else text[:57] + "..."


def kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def bad(source: str, message: str) -> EvalpipeError:
    return EvalpipeError(f"bad policy {source}: {message}", exit_code=EXIT_BAD_POLICY)
