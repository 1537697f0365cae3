"""A :class:`~evalpipe.compare.tokens.types.TokenComparison` as plain JSON: the ``tokens`` key of
``evalpipe compare --json`` (and what the gate keeps of it). Pure.

Every field of the typed records is carried, in field order, as plain JSON: tuples become
lists, and a non-finite number (an infinite interval bound, a NaN p-value from a degenerate
test) becomes ``null`` so that strict JSON parsers accept the output. Both paths are always
present as keys (``null`` when not compared), so a script can index them without guessing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from evalpipe.compare.tokens.types import PATHS, PathComparison, TokenComparison
from evalpipe.compare.tokens.view import divergence


def plain(value: object) -> Any:
    """``value`` (dataclasses, mappings, sequences, numbers, text) as JSON-able values with
    every non-finite float mapped to None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def path_to_json(p: PathComparison) -> dict[str, Any]:
    """Every field of ``p``, plus the first-divergence summary the text report shows."""
    return {**plain(p), "first_divergence_summary": plain(divergence(p))}


def tokens_to_json(t: TokenComparison | None) -> dict[str, Any] | None:
    """The ``tokens`` object of a comparison's JSON; None when there was no token comparison."""
    if t is None:
        return None
    paths = {name: t.paths.get(name) for name in PATHS}
    return {
        "run_id": t.run_id,
        "baseline_id": t.baseline_id,
        "period": t.period,
        "verdict": t.verdict,
        "reason": t.reason,
        "paths": {name: None if p is None else path_to_json(p) for name, p in paths.items()},
        "unavailable": dict(t.unavailable),
    }
