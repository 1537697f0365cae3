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
- ``token_drift: block | warn | off`` (default ``block``) says what a token-level drift
  (``Comparison.tokens.verdict == "token-drift"``: shown above the tolerance τ, or an item
  broken; :mod:`evalpipe.compare.tokens.verdict`) does to a gate: fail it, warn, or nothing.
  Before the verdict had a tolerance the default was ``warn`` (any numerically different
  layout drifted); that value is left out of the hashed JSON, so a policy that states it keeps
  its old hash, while a policy without the key, which now blocks, hashes as one stating
  ``block``. YAML 1.1 reads a bare ``off`` as false: false is taken as ``off``, and true
  (``on``, ``yes``) is refused as ambiguous.
- ``token_margin`` is τ in nats/token: a number for both paths or ``{decode: X, forced: Y}``
  (default :data:`evalpipe.compare.tokens.verdict.DEFAULT_TOKEN_MARGIN`). The relative form is
  ``token_reference: {layout: tp2, baseline_layout: tp1, factor: 3}``: τ of each path is 3 ×
  the upper bound of that reference pair (the newest runs of the same model and task on
  those layouts), a known-benign change. One or the other; each enters the hashed JSON only
  when given.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from evalpipe.compare.tokens.verdict import TokenMargin, margin_from
from evalpipe.gate.checks import EXIT_BAD_POLICY as EXIT_BAD_POLICY
from evalpipe.gate.checks import as_layout, as_number, as_text, bad, check_keys, kind, shown
from evalpipe.records import canonical_json

DEFAULT_MIN_N = 100
MAX_MIN_N = 10**9
TokenDrift = Literal["block", "warn", "off"]
TOKEN_DRIFT_VALUES: tuple[TokenDrift, ...] = get_args(TokenDrift)
DEFAULT_TOKEN_DRIFT: TokenDrift = "block"
LEGACY_TOKEN_DRIFT: TokenDrift = "warn"
"""What a policy without ``token_drift`` meant before the token verdict had a tolerance, and
what a stored decision without the key ran under."""
_TOP_KEYS = {"name", "requirements", "margin", "alpha", "min_n", "max_error_rate"}
_TOP_KEYS |= {"inconclusive_blocks", "description", "token_drift", "token_margin"}
_TOP_KEYS |= {"token_reference"}
_REFERENCE_KEYS = {"layout", "baseline_layout", "factor"}
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
class TokenReference:
    """The relative τ: ``factor`` × the upper bound of ``layout`` vs ``baseline_layout`` on
    the same model and task (a known-benign change)."""

    layout: str
    baseline_layout: str
    factor: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "baseline_layout": self.baseline_layout,
            "factor": self.factor,
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
    token_margin: TokenMargin = field(default_factory=TokenMargin)
    token_reference: TokenReference | None = None

    def tokens_margin(self) -> TokenMargin:
        """τ as the comparison takes it (a relative one reads the reference pair)."""
        if self.token_reference is not None:
            return TokenMargin(factor=self.token_reference.factor, given=True)
        return self.token_margin

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

        ``token_drift`` is there unless ``warn``, the token keys only when given (see the
        module docstring)."""
        extra: dict[str, Any] = {}
        if self.token_drift != LEGACY_TOKEN_DRIFT:
            extra["token_drift"] = self.token_drift
        if self.token_margin.given:
            extra["token_margin"] = {
                "decode": self.token_margin.decode,
                "forced": self.token_margin.forced,
            }
        if self.token_reference is not None:
            extra["token_reference"] = self.token_reference.to_dict()
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
        raise bad(source, f"cannot read the policy file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise bad(source, f"not UTF-8 text ({exc.reason})") from exc
    try:
        data = load_yaml(text)
    except YamlInputError as exc:  # duplicate keys, deep nesting, unreadable values
        raise bad(source, f"not valid YAML: {exc.message}") from exc
    return parse_policy(data, source)


def parse_policy(data: object, source: str = "<policy>") -> Policy:
    """Validate already-loaded YAML (a mapping) into a :class:`Policy`; exit code 3 if bad."""
    if not isinstance(data, Mapping):
        raise bad(source, f"the policy must be a mapping of keys, got {kind(data)}")
    check_keys(data, _TOP_KEYS, source, "")
    for key in _REQUIRED_TOP:
        if key not in data:
            raise bad(source, f"{key}: required (a release gate must state it)")
    margin = as_number(data["margin"], source, "margin")
    if not 0 < margin < 100:
        raise bad(source, f"margin: must be in points, above 0 and below 100, got {margin}")
    alpha = as_number(data["alpha"], source, "alpha")
    if not 0 < alpha < 0.5:
        raise bad(source, f"alpha: must be above 0 and below 0.5, got {alpha}")
    min_n = data.get("min_n", DEFAULT_MIN_N)
    if isinstance(min_n, bool) or not isinstance(min_n, int) or not 1 <= min_n <= MAX_MIN_N:
        raise bad(
            source, f"min_n: must be a positive integer up to {MAX_MIN_N:_}, got {shown(min_n)}"
        )
    max_error_rate = as_number(data.get("max_error_rate", 0.0), source, "max_error_rate")
    if not 0 <= max_error_rate <= 1:
        raise bad(source, f"max_error_rate: must be in [0, 1], got {max_error_rate}")
    blocks = data.get("inconclusive_blocks", True)
    if not isinstance(blocks, bool):
        raise bad(source, f"inconclusive_blocks: must be true or false, got {shown(blocks)}")
    return Policy(
        name=as_text(data["name"], source, "name"),
        requirements=_requirements(data["requirements"], source),
        margin=margin,
        alpha=alpha,
        min_n=min_n,
        max_error_rate=max_error_rate,
        inconclusive_blocks=blocks,
        description=as_text(data.get("description", ""), source, "description", empty=True),
        source=source,
        token_drift=_token_drift(data.get("token_drift", DEFAULT_TOKEN_DRIFT), source),
        token_margin=_token_margin(data.get("token_margin"), source),
        token_reference=_token_reference(data, source),
    )


def _token_margin(value: object, source: str) -> TokenMargin:
    if value is None:
        return TokenMargin()
    if isinstance(value, str):
        raise bad(
            source,
            f"token_margin: must be a number or {{decode: X, forced: Y}} in nats/token, got "
            f"{shown(value)} (a relative τ is token_reference: {{layout: …, baseline_layout: "
            "…, factor: …}})",
        )
    try:
        return margin_from(dict(value) if isinstance(value, Mapping) else value)
    except ValueError as exc:
        raise bad(source, f"token_margin: {exc}") from exc


def _token_reference(data: Mapping[str, Any], source: str) -> TokenReference | None:
    value = data.get("token_reference")
    if value is None:
        return None
    if "token_margin" in data:
        raise bad(
            source,
            "token_margin and token_reference: give one (τ, or a factor of a "
            "reference pair's upper bound), not both",
        )
    if not isinstance(value, Mapping):
        raise bad(source, f"token_reference: must be a mapping, got {kind(value)}")
    check_keys(value, _REFERENCE_KEYS, source, "token_reference.")
    for key in sorted(_REFERENCE_KEYS):
        if key not in value:
            raise bad(source, f"token_reference.{key}: required")
    factor = as_number(value["factor"], source, "token_reference.factor")
    if not factor > 0:
        raise bad(source, f"token_reference.factor: must be above 0, got {factor:g}")
    layout = as_layout(value["layout"], source, "token_reference.layout")
    baseline = as_layout(value["baseline_layout"], source, "token_reference.baseline_layout")
    if layout == baseline:
        raise bad(source, f"token_reference: {layout} would be compared with itself")
    return TokenReference(layout, baseline, factor)


def _token_drift(value: object, source: str) -> TokenDrift:
    if value is False:  # YAML 1.1: a bare `off` (or `no`, `false`) arrives as false
        return "off"
    for allowed in TOKEN_DRIFT_VALUES:
        if value == allowed:
            return allowed
    got = "true (YAML reads on/yes/true so)" if value is True else shown(value)
    raise bad(source, f"token_drift: must be one of {', '.join(TOKEN_DRIFT_VALUES)}, got {got}")


def _requirements(value: object, source: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise bad(source, f"requirements: must be a non-empty list, got {kind(value)}")
    out: list[Requirement] = []
    for i, entry in enumerate(value):
        where = f"requirements[{i}]"
        if not isinstance(entry, Mapping):
            raise bad(source, f"{where}: must be a mapping, got {kind(entry)}")
        check_keys(entry, _REQUIREMENT_KEYS, source, f"{where}.")
        for key in ("model", "task", "layouts"):
            if key not in entry:
                raise bad(source, f"{where}.{key}: required")
        model = as_text(entry["model"], source, f"{where}.model")
        task = as_text(entry["task"], source, f"{where}.task")
        layouts = entry["layouts"]
        if not isinstance(layouts, list) or not layouts:
            raise bad(source, f"{where}.layouts: must be a non-empty list of layouts")
        override = None
        if entry.get("baseline_layout") is not None:
            override = as_layout(entry["baseline_layout"], source, f"{where}.baseline_layout")
        for j, raw in enumerate(layouts):
            out.append(_requirement(model, task, raw, override, source, f"{where}.layouts[{j}]"))
    seen: set[tuple[str, str, str, str]] = set()
    for r in out:
        ident = (r.model.lower(), r.task, r.layout, r.baseline_layout)
        if ident in seen:
            raise bad(source, f"requirements: {r.label} is listed twice")
        seen.add(ident)
    return tuple(out)


def _requirement(
    model: str, task: str, raw: object, override: str | None, source: str, where: str
) -> Requirement:
    from evalpipe.layout import parse

    layout = as_layout(raw, source, where)
    if override is None:
        parsed = parse(layout)
        if not parsed.is_cp:
            raise bad(
                source,
                f"{where}: {layout} is not context-parallel, so it has no automatic baseline; "
                "add baseline_layout: (e.g. tp1 to compare tp2 with tp1)",
            )
        baseline = parsed.baseline().canonical
    else:
        baseline = override
    if baseline == layout:
        raise bad(source, f"{where}: {layout} would be compared with itself")
    return Requirement(model, task, layout, baseline, baseline_override=override is not None)
