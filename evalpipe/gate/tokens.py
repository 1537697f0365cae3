"""What the release gate keeps of a token-level comparison, and the policy's ``token_drift``
rule; pure.

A gate item keeps a compact :class:`TokenSummary` (the verdict, and per path the figures
behind it: the KL mean, its excess over the noise floor against τ, the tail test, the worst
position), never the localisation tables or per-item values: those are ``evalpipe compare``'s.
The rule (:meth:`TokenCheck.of`): with ``token_drift: block`` (the default) a ``token-drift``
verdict fails the item, with ``warn`` it is a warning and the gate still passes, with ``off``
it is ignored. An ``inconclusive`` token verdict, or a comparison without token data, never
fails an item; the summary line shows it. Item ids in the figures come from data files:
renderers escape them like any other untrusted text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from evalpipe.compare.tokens.json import plain
from evalpipe.compare.tokens.types import (
    MARGIN_PATHS,
    Excess,
    MetricSummary,
    Path,
    TailTest,
    TokenComparison,
    TokenVerdict,
    Tolerance,
)
from evalpipe.compare.tokens.verdict import DEFAULT_TOKEN_MARGIN
from evalpipe.gate.policy import (
    LEGACY_TOKEN_DRIFT,
    TOKEN_DRIFT_VALUES,
    Policy,
    TokenDrift,
)

TokenAction = Literal["blocks", "warns", "none"]
NO_TOKEN_DATA = "no token data"
_STRICTNESS = {value: rank for rank, value in enumerate(reversed(TOKEN_DRIFT_VALUES))}
"""off < warn < block: moving down this order loosens a gate."""


@dataclass(frozen=True)
class TokenPathSummary:
    """One compared path: its verdict and the figures that decided it."""

    path: Path
    verdict: TokenVerdict
    reason: str
    n_items: int
    n_tokens: int
    kl: MetricSummary | None
    excess: Excess | None = None
    tail: TailTest | None = None
    tolerance: Tolerance | None = None

    def figures(self) -> str:
        """``decode: KL over the floor 7.84e-05 [5.00e-05, 1.20e-04] (95%) on 100 items is
        below τ = 2.00e-03 (default); …; worst position: item 12 at 345`` (the verdict's own
        reason: every figure per token, each interval with its level)."""
        text = f"{self.path}: {self.reason or 'not decided'}"
        kl = self.kl
        if kl is not None and kl.worst_item is not None:
            text += f"; worst position: item {kl.worst_item} at {kl.worst_position}"
        return text


@dataclass(frozen=True)
class TokenSummary:
    """What a gate item keeps of ``Comparison.tokens``."""

    run_id: str
    baseline_id: str
    period: int | None
    verdict: TokenVerdict
    paths: tuple[TokenPathSummary, ...] = ()
    unavailable: Mapping[Path, str] = field(default_factory=dict)

    @classmethod
    def of(cls, t: TokenComparison) -> TokenSummary:
        paths = tuple(
            TokenPathSummary(
                p.path,
                p.verdict,
                p.reason,
                p.n_items,
                p.n_tokens,
                p.metrics.get("kl"),
                None if p.excess is None else replace(p.excess, item_values=()),
                p.tail,
                None if p.decision is None else p.decision.tolerance,
            )
            for p in t.paths.values()
        )
        return cls(t.run_id, t.baseline_id, t.period, t.verdict, paths, dict(t.unavailable))

    def figures(self) -> str:
        """The figures of the drifting paths (of every path when none drifts)."""
        drifting = [p for p in self.paths if p.verdict == "token-drift"] or list(self.paths)
        return "; ".join(p.figures() for p in drifting) or "no path compared"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (non-finite numbers as null)."""
        out: dict[str, Any] = plain(self)
        return out


@dataclass(frozen=True)
class TokenCheck:
    """The token-level part of one compared gate item: the policy's setting, the summary
    (None: no token data), and what the setting made of it (:meth:`of`)."""

    policy: TokenDrift
    summary: TokenSummary | None
    action: TokenAction = "none"
    reason: str = ""
    """Why a token-level drift is reported (the pair, then the figures); "" without one."""

    @classmethod
    def of(
        cls, setting: TokenDrift, summary: TokenSummary | None, layout: str, baseline_layout: str
    ) -> TokenCheck:
        """The rule (see the module docstring): ``blocks``, ``warns`` or ``none``."""
        if summary is None or summary.verdict != "token-drift" or setting == "off":
            return cls(setting, summary)
        reason = (
            f"token-level drift of run {summary.run_id} ({layout}) against baseline "
            f"{summary.baseline_id} ({baseline_layout}): {summary.figures()}"
        )
        return cls(setting, summary, "blocks" if setting == "block" else "warns", reason)

    @property
    def status(self) -> str:
        """The token verdict, or ``no token data``."""
        return NO_TOKEN_DATA if self.summary is None else self.summary.verdict

    @property
    def warning(self) -> str | None:
        """The warning of a drift the policy only warns about."""
        if self.action != "warns":
            return None
        return f"{self.reason} (not blocking: the policy has token_drift: warn)"

    def note(self) -> str:
        """`` [token level: token-drift (blocking)]`` (or ``ok``, ``inconclusive``) for a summary
        line; "" without token data unless the policy blocks (a gate that would block must say
        it had nothing to block on; one that would only warn need not)."""
        if self.summary is None and self.policy != "block":
            return ""
        action = {"blocks": " (blocking)", "warns": " (warning)", "none": ""}[self.action]
        return f" [token level: {self.status}{action}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "action": self.action,
            "verdict": self.status,
            "reason": self.reason,
            "summary": None if self.summary is None else self.summary.to_dict(),
        }


def token_loosening(previous_decision: Mapping[str, Any], policy: Policy) -> list[str]:
    """``token_drift loosened from block to warn`` when the policy's setting is laxer than the
    one the previous decision stored (in its policy JSON, where ``warn``, what every decision
    before the key existed ran under, is left out), and ``token_margin loosened …`` when τ of
    a path, or the factor of a relative τ, grew."""
    stored = previous_decision.get("policy")
    stored = stored if isinstance(stored, Mapping) else {}
    before = stored.get("token_drift", LEGACY_TOKEN_DRIFT)
    if before not in _STRICTNESS:
        before = LEGACY_TOKEN_DRIFT
    out = []
    if _STRICTNESS[policy.token_drift] < _STRICTNESS[before]:
        out.append(f"token_drift loosened from {before} to {policy.token_drift}")
    return out + _margin_loosening(stored, policy)


def _margin_loosening(stored: Mapping[str, Any], policy: Policy) -> list[str]:
    """τ grown on a path (absolute then and now), or the factor of a relative τ grown."""
    ref, was_ref = policy.token_reference, stored.get("token_reference")
    if ref is not None and isinstance(was_ref, Mapping):
        before = was_ref.get("factor")
        if isinstance(before, int | float) and ref.factor > before:
            return [f"token_reference.factor loosened from {before:g} to {ref.factor:g}"]
        return []
    if ref is not None or was_ref is not None:
        return []  # absolute against relative: nothing to compare
    was = stored.get("token_margin")
    was = was if isinstance(was, Mapping) else {p: DEFAULT_TOKEN_MARGIN for p in MARGIN_PATHS}
    now = {"decode": policy.token_margin.decode, "forced": policy.token_margin.forced}
    return [
        f"token_margin of the {path} path loosened from {was[path]:g} to {now[path]:g} nats/token"
        for path in MARGIN_PATHS
        if _number(was.get(path)) and now[path] > was[path]
    ]


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)
