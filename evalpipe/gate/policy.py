"""Release-gate policies: load and validate the policy YAML into a frozen :class:`Policy`; pure.

A policy names what a release needs (which models, tasks and layouts must each match their
baseline) and how strictly (margin, alpha, minimum n, infrastructure-error rate, whether an
inconclusive verdict blocks). The file is read with :func:`evalpipe.yamlload.load_yaml`, which
is safe and refuses a duplicate key (plain YAML would keep the second ``margin:`` silently), and
checked strictly: unknown keys, wrong types, out-of-range values and invalid layouts are refused
with the file and key named, in one line, and exit code 3, so a typo (``margins:``) can never
fall back to a default and quietly relax a gate, and no input ends in a traceback.

Decisions recorded here:

- ``margin`` and ``alpha`` have no default: a release gate must state them. ``min_n`` defaults
  to 100 (:data:`evalpipe.compare.power.DEFAULT_MIN_N`), ``max_error_rate`` to 0 and
  ``inconclusive_blocks`` to true, the strict choices. ``min_n`` is at most
  :data:`MAX_MIN_N`: no evaluation has more paired items, and the stored decision keeps it
  in a 64-bit column.
- No text value may hold a NUL character: PostgreSQL cannot store one in a text column.
- ``model`` is matched against ``run.config.model`` case-insensitively, either in full or by
  its last path component, and may be a glob (``deepseek-v3.2*``): runs store a local path
  (``/models/DeepSeek-V3.2``) or a hub name (``deepseek-ai/DeepSeek-V3.2``), and the policy
  should not depend on where the weights sit. Pairing still requires identical model bytes.
- The policy hash is sha256 of the canonical JSON of the *parsed* policy (layouts
  canonicalised), so comments, key order and spelling (``DP2TP8DCP8``) do not change it, and
  any change that can move a decision does.
- ``token_drift: block | warn | off`` (default ``warn``) says what a token-level drift
  (``Comparison.tokens.verdict == "token-drift"``) does to a gate: fail it, warn, or nothing.
  It enters the hashed JSON only when it is not the default, so every policy written before
  the key existed keeps its hash (and its loosening history). YAML 1.1 reads a bare ``off``
  as false: false is taken as ``off``, and true (``on``, ``yes``) is refused as ambiguous.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from evalpipe.errors import EvalpipeError
from evalpipe.records import canonical_json

EXIT_BAD_POLICY = 3
"""Exit code of ``evalpipe gate`` for a bad policy file or bad usage."""

DEFAULT_MIN_N = 100
MAX_MIN_N = 10**9
TokenDrift = Literal["block", "warn", "off"]
TOKEN_DRIFT_VALUES: tuple[TokenDrift, ...] = get_args(TokenDrift)
DEFAULT_TOKEN_DRIFT: TokenDrift = "warn"
_TOP_KEYS = {"name", "requirements", "margin", "alpha", "min_n", "max_error_rate"}
_TOP_KEYS |= {"inconclusive_blocks", "description", "token_drift"}
_REQUIRED_TOP = ("name", "requirements", "margin", "alpha")
_REQUIREMENT_KEYS = {"model", "task", "layouts", "baseline_layout"}


@dataclass(frozen=True)
class Requirement:
    """One required comparison: ``layout`` against ``baseline_layout`` for a model and task.

    ``baseline_layout`` is the layout's non-CP twin unless the policy overrides it.
    """

    model: str
    task: str
    layout: str
    baseline_layout: str
    baseline_override: bool = False

    @property
    def label(self) -> str:
        return f"{self.model} {self.task} {self.layout} vs {self.baseline_layout}"

    def matches_model(self, run_model: str) -> bool:
        """True when the policy's model (name, basename or glob) names ``run_model``."""
        pattern = self.model.lower()
        full = run_model.lower().rstrip("/")
        base = PurePosixPath(full.replace("\\", "/")).name
        return any(fnmatch.fnmatchcase(x, pattern) for x in (full, base))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "layout": self.layout,
            "baseline_layout": self.baseline_layout,
        }


@dataclass(frozen=True)
class Policy:
    """A validated policy. ``margin`` is in points (1.0 = one accuracy point)."""

    name: str
    requirements: tuple[Requirement, ...]
    margin: float
    alpha: float
    min_n: int = DEFAULT_MIN_N
    max_error_rate: float = 0.0
    inconclusive_blocks: bool = True
    description: str = ""
    source: str = "<policy>"
    token_drift: TokenDrift = DEFAULT_TOKEN_DRIFT

    def settings(self) -> dict[str, Any]:
        """The knobs a gate can be loosened by, as stored with every decision."""
        return {
            "margin": self.margin,
            "alpha": self.alpha,
            "min_n": self.min_n,
            "max_error_rate": self.max_error_rate,
            "inconclusive_blocks": self.inconclusive_blocks,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON of the parsed policy (what is hashed; ``source`` is left out).

        ``token_drift`` is only there when not the default, so that policies from before it
        existed hash as they always did."""
        extra = {} if self.token_drift == DEFAULT_TOKEN_DRIFT else {"token_drift": self.token_drift}
        return {
            "name": self.name,
            "description": self.description,
            "requirements": [r.to_dict() for r in self.requirements],
            **self.settings(),
            **extra,
        }

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`to_dict` (comments and order do not count)."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode("utf-8")).hexdigest()

    @property
    def scope_key(self) -> str:
        """What the policy gates (name + requirements), not how strictly: decisions with the
        same scope are compared to detect a loosened policy."""
        scope = {"name": self.name, "requirements": [r.to_dict() for r in self.requirements]}
        return hashlib.sha256(canonical_json(scope).encode("utf-8")).hexdigest()


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; any problem is an ``EvalpipeError`` with exit code 3.

    Example::

        policy = load_policy("examples/release.yaml")
        print(policy.name, [r.label for r in policy.requirements])
    """
    from evalpipe.yamlload import YamlInputError, load_yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _bad(source, f"cannot read the policy file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise _bad(source, f"not UTF-8 text ({exc.reason})") from exc
    try:
        data = load_yaml(text)
    except YamlInputError as exc:  # duplicate keys, deep nesting, unreadable values
        raise _bad(source, f"not valid YAML: {exc.message}") from exc
    return parse_policy(data, source)


def parse_policy(data: object, source: str = "<policy>") -> Policy:
    """Validate already-loaded YAML (a mapping) into a :class:`Policy`; exit code 3 if bad."""
    if not isinstance(data, Mapping):
        raise _bad(source, f"the policy must be a mapping of keys, got {_kind(data)}")
    _check_keys(data, _TOP_KEYS, source, "")
    for key in _REQUIRED_TOP:
        if key not in data:
            raise _bad(source, f"{key}: required (a release gate must state it)")
    margin = _number(data["margin"], source, "margin")
    if not 0 < margin < 100:
        raise _bad(source, f"margin: must be in points, above 0 and below 100, got {margin}")
    alpha = _number(data["alpha"], source, "alpha")
    if not 0 < alpha < 0.5:
        raise _bad(source, f"alpha: must be above 0 and below 0.5, got {alpha}")
    min_n = data.get("min_n", DEFAULT_MIN_N)
    if isinstance(min_n, bool) or not isinstance(min_n, int) or not 1 <= min_n <= MAX_MIN_N:
        raise _bad(
            source, f"min_n: must be a positive integer up to {MAX_MIN_N:_}, got {_shown(min_n)}"
        )
    max_error_rate = _number(data.get("max_error_rate", 0.0), source, "max_error_rate")
    if not 0 <= max_error_rate <= 1:
        raise _bad(source, f"max_error_rate: must be in [0, 1], got {max_error_rate}")
    blocks = data.get("inconclusive_blocks", True)
    if not isinstance(blocks, bool):
        raise _bad(source, f"inconclusive_blocks: must be true or false, got {_shown(blocks)}")
    return Policy(
        name=_text(data["name"], source, "name"),
        requirements=_requirements(data["requirements"], source),
        margin=margin,
        alpha=alpha,
        min_n=min_n,
        max_error_rate=max_error_rate,
        inconclusive_blocks=blocks,
        description=_text(data.get("description", ""), source, "description", empty=True),
        source=source,
        token_drift=_token_drift(data.get("token_drift", DEFAULT_TOKEN_DRIFT), source),
    )


def _token_drift(value: object, source: str) -> TokenDrift:
    if value is False:  # YAML 1.1: a bare `off` (or `no`, `false`) arrives as false
        return "off"
    for allowed in TOKEN_DRIFT_VALUES:
        if value == allowed:
            return allowed
    shown = "true (YAML reads on/yes/true so)" if value is True else _shown(value)
    raise _bad(source, f"token_drift: must be one of {', '.join(TOKEN_DRIFT_VALUES)}, got {shown}")


def _requirements(value: object, source: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise _bad(source, f"requirements: must be a non-empty list, got {_kind(value)}")
    out: list[Requirement] = []
    for i, entry in enumerate(value):
        where = f"requirements[{i}]"
        if not isinstance(entry, Mapping):
            raise _bad(source, f"{where}: must be a mapping, got {_kind(entry)}")
        _check_keys(entry, _REQUIREMENT_KEYS, source, f"{where}.")
        for key in ("model", "task", "layouts"):
            if key not in entry:
                raise _bad(source, f"{where}.{key}: required")
        model = _text(entry["model"], source, f"{where}.model")
        task = _text(entry["task"], source, f"{where}.task")
        layouts = entry["layouts"]
        if not isinstance(layouts, list) or not layouts:
            raise _bad(source, f"{where}.layouts: must be a non-empty list of layouts")
        override = None
        if entry.get("baseline_layout") is not None:
            override = _layout(entry["baseline_layout"], source, f"{where}.baseline_layout")
        for j, raw in enumerate(layouts):
            out.append(_requirement(model, task, raw, override, source, f"{where}.layouts[{j}]"))
    seen: set[tuple[str, str, str, str]] = set()
    for r in out:
        ident = (r.model.lower(), r.task, r.layout, r.baseline_layout)
        if ident in seen:
            raise _bad(source, f"requirements: {r.label} is listed twice")
        seen.add(ident)
    return tuple(out)


def _requirement(
    model: str, task: str, raw: object, override: str | None, source: str, where: str
) -> Requirement:
    from evalpipe.layout import parse

    layout = _layout(raw, source, where)
    if override is None:
        parsed = parse(layout)
        if not parsed.is_cp:
            raise _bad(
                source,
                f"{where}: {layout} is not context-parallel, so it has no automatic baseline; "
                "add baseline_layout: (e.g. tp1 to compare tp2 with tp1)",
            )
        baseline = parsed.baseline().canonical
    else:
        baseline = override
    if baseline == layout:
        raise _bad(source, f"{where}: {layout} would be compared with itself")
    return Requirement(model, task, layout, baseline, baseline_override=override is not None)


def _layout(value: object, source: str, where: str) -> str:
    from evalpipe.layout import parse

    text = _text(value, source, where)
    try:
        return parse(text).canonical
    except EvalpipeError as exc:  # LayoutError: re-raised as a policy error (exit 3)
        raise _bad(source, f"{where}: {exc.message}") from exc


def _check_keys(data: Mapping[Any, Any], allowed: set[str], source: str, prefix: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise _bad(
            source,
            f"{prefix}{unknown[0]}: unknown key (allowed here: {', '.join(sorted(allowed))})",
        )


def _number(value: object, source: str, where: str) -> float:
    # bool is an int subclass: `margin: yes` must not become 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(source, f"{where}: must be a number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int of 309+ digits has no float
        number = math.inf
    if not math.isfinite(number):
        raise _bad(source, f"{where}: must be a finite number, got {_shown(value)}")
    return number


def _text(value: object, source: str, where: str, empty: bool = False) -> str:
    if not isinstance(value, str) or not (empty or value.strip()):
        raise _bad(source, f"{where}: must be a non-empty string, got {_shown(value)}")
    if "\x00" in value:
        raise _bad(source, f"{where}: must not contain a NUL character (no store can keep it)")
    return value.strip()


def _shown(value: object) -> str:
    """``repr`` cut to 60 characters: a policy value can be a 4000-digit number."""
    text = (
        repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge integer"
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _bad(source: str, message: str) -> EvalpipeError:
    return EvalpipeError(f"bad policy {source}: {message}", exit_code=EXIT_BAD_POLICY)
