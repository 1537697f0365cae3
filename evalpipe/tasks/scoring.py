"""Answer extraction and per-sample verdicts: pure functions of (extractor specs, output, target).

The HTTP and the offline engine paths both score through :func:`score`, so a verdict never
depends on how the text was produced. A model output with no extractable answer is a wrong
answer; engine errors never reach this module (the runner stores them unscored).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Protocol

from evalpipe.errors import EvalpipeError

EXTRACTOR_KINDS = ("regex", "last_number", "last_line_number", "all_numbers")
METRICS = ("exact_match", "all_of")
REGEX_SELECT = ("first", "last")

# A number as a model writes it: optional sign and `$`, digits with optional thousands
# commas, optional decimals. The look-behind keeps "x-5" or "abc12" from yielding "-5"/"12"
# mid-token; thousands groups must be complete so "5,6,7" is three numbers, not "567".
_NUMBER = re.compile(
    r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
    r"|(?<![\w.])-?\$?\.\d+"
)
# What remains after dropping `$`, commas and a trailing period must be a plain decimal;
# exponents, fractions and percentages are not numbers here (GSM8K answers never use them).
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class ExtractorSpec:
    """One way to pull an answer out of an output.

    ``kind`` is one of :data:`EXTRACTOR_KINDS`. ``regex`` takes ``pattern`` (group 1 if the
    pattern has a group, else the whole match) and ``select`` ("first" or "last" match);
    ``last_number`` takes the last number anywhere; ``last_line_number`` the last number on
    the last non-empty line; ``all_numbers`` every number, space-separated, in order.
    """

    name: str
    kind: str
    pattern: str | None = None
    select: str = "first"


class ScoringConfig(Protocol):
    """What :func:`score` needs; :class:`evalpipe.tasks.load.TaskSpec` satisfies it."""

    @property
    def extractors(self) -> Sequence[ExtractorSpec]: ...

    @property
    def primary(self) -> str: ...

    @property
    def metric(self) -> str: ...


@dataclass(frozen=True)
class Scoring:
    """A stand-alone :class:`ScoringConfig`, for scoring without a task file."""

    extractors: tuple[ExtractorSpec, ...]
    primary: str
    metric: str = "exact_match"


@dataclass(frozen=True)
class Score:
    """One output's verdicts: every extractor's normalised answer and whether it matched.

    ``correct`` is the primary extractor's verdict; ``target`` is the normalised target.
    """

    extracted: Mapping[str, str | None]
    correct_by: Mapping[str, bool]
    correct: bool
    target: str


def normalize_number(text: str) -> str | None:
    """Canonical text of a number, or None when ``text`` is not one.

    Drops surrounding space, ``$``, thousands commas and a trailing sentence period, then
    normalises through :class:`~decimal.Decimal` so ``"$1,000."``, ``"1000"`` and
    ``"1000.00"`` all give ``"1000"``, ``".5"`` gives ``"0.5"`` and ``"-0"`` gives ``"0"``.
    """
    s = text.strip().replace("\u2212", "-")  # U+2212 MINUS SIGN, common in formatted output
    s = s.replace("$", "").replace(",", "").rstrip(".").strip()
    if not _PLAIN_DECIMAL.fullmatch(s):
        return None
    value = Decimal(s)
    if value == value.to_integral_value():
        return str(int(value))
    # normalize() strips trailing zeros; "f" avoids exponent notation for small magnitudes.
    return format(value.normalize(), "f")


def check_extractor(spec: ExtractorSpec) -> None:
    """Raise ValueError if ``spec`` cannot run (unknown kind, bad regex or select)."""
    if spec.kind not in EXTRACTOR_KINDS:
        raise ValueError(f"unknown extractor kind {spec.kind!r} (one of {EXTRACTOR_KINDS})")
    if spec.kind == "regex":
        if not spec.pattern:
            raise ValueError("a regex extractor needs a non-empty 'pattern'")
        if spec.select not in REGEX_SELECT:
            raise ValueError(f"select must be one of {REGEX_SELECT}, not {spec.select!r}")
        try:
            _compiled(spec.pattern)
        except re.error as exc:
            raise ValueError(f"bad regex {spec.pattern!r}: {exc}") from exc


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def extract(spec: ExtractorSpec, output: str) -> str | None:
    """The normalised number ``spec`` finds in ``output``, or None.

    For ``regex`` the selected match is final: if it is not a number the answer is None
    (the next match is not tried), which is what "strict" means.
    """
    if spec.kind == "regex":
        assert spec.pattern is not None  # check_extractor ran when the task was loaded
        rx = _compiled(spec.pattern)
        matches = list(rx.finditer(output))
        if not matches:
            return None
        m = matches[0] if spec.select == "first" else matches[-1]
        found = m.group(1) if rx.groups else m.group(0)
        return None if found is None else normalize_number(found)
    if spec.kind == "last_number":
        return _last_number(output)
    if spec.kind == "all_numbers":
        found = [x for x in (normalize_number(m) for m in _NUMBER.findall(output)) if x]
        return " ".join(found) if found else None
    if spec.kind == "last_line_number":
        lines = [line for line in output.splitlines() if line.strip()]
        return _last_number(lines[-1]) if lines else None
    raise ValueError(f"unknown extractor kind {spec.kind!r}")


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def normalize_target(metric: str, target: str) -> str | None:
    """The normalised target for ``metric``, or None when it is unusable: one number for
    ``exact_match``; for ``all_of``, space-separated numbers (every one must be found)."""
    if metric == "all_of":
        parts = [normalize_number(p) for p in target.split()]
        if not parts or any(p is None for p in parts):
            return None
        return " ".join(p for p in parts if p is not None)
    return normalize_number(target)


def score(config: ScoringConfig, output: str, target: str) -> Score:
    """Score one model output against its target with every extractor of ``config``.

    ``exact_match``: an extractor is right when its answer equals the target. ``all_of``:
    when every target number is among the numbers it extracted (use ``all_numbers``), and
    each target number also gets its own verdict ``PRIMARY[i]`` (1-based), so multi-needle
    tasks are scored per needle. Raises :class:`EvalpipeError` if the target is not usable:
    that is a data problem, and scoring it as "wrong" would hide it.
    """
    expected = normalize_target(config.metric, target)
    if expected is None:
        raise EvalpipeError(
            f"target {target!r} is not a number (metric {config.metric}); check the task's "
            "data fields and target_transform"
        )
    parts = expected.split()
    extracted: dict[str, str | None] = {}
    correct_by: dict[str, bool] = {}
    for spec in config.extractors:
        answer = extract(spec, output)
        extracted[spec.name] = answer
        if config.metric == "all_of":
            found = set(answer.split()) if answer else set()
            correct_by[spec.name] = all(p in found for p in parts)
            if spec.name == config.primary:
                for i, p in enumerate(parts, 1):
                    correct_by[f"{spec.name}[{i}]"] = p in found
        else:
            correct_by[spec.name] = answer is not None and answer == expected
    if config.primary not in correct_by:
        raise EvalpipeError(
            f"primary extractor {config.primary!r} is not one of {sorted(correct_by)}"
        )
    return Score(extracted, correct_by, correct_by[config.primary], expected)
