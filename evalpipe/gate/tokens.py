"""What the release gate keeps of a token-level comparison, and the policy's ``token_drift``
rule; pure.

A gate item keeps a compact :class:`TokenSummary` (the verdict, and per path the figures
behind it: KL mean, the noise-floor test, the worst position), never the localisation
tables: those are ``evalpipe compare``'s. The rule (:func:`token_action`): with
``token_drift: block`` a ``token-drift`` verdict fails the item, with ``warn`` it is a
warning and the gate still passes, with ``off`` it is ignored. A comparison without token
data is never failed for it. Item ids in the figures come from data files: renderers escape
them like any other untrusted text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from evalpipe.compare.tokens.json import plain
from evalpipe.compare.tokens.types import (
    FloorTest,
    MetricSummary,
    Path,
    TokenComparison,
    TokenVerdict,
)
from evalpipe.compare.tokens.view import nats
from evalpipe.gate.policy import DEFAULT_TOKEN_DRIFT, TOKEN_DRIFT_VALUES, TokenDrift

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
    floor: FloorTest | None

    def figures(self) -> str:
        """``decode: mean KL 1.23e-04 nats vs floor 4.50e-05 (difference +7.84e-05 [+5.00e-05,
        +∞], one-sided p=0.0012, 100 items); worst item 12 at position 345``."""
        kl, f = self.kl, self.floor
        text = f"{self.path}: mean KL {nats(None if kl is None else kl.mean)} nats"
        if f is not None:
            text += (
                f" vs floor {nats(f.floor_mean)} (difference {nats(f.difference, True)} "
                f"[{nats(f.ci_low, True)}, {nats(f.ci_high, True)}], one-sided "
                f"p={f.p_value:.3g}, {f.n_items} items)"
            )
        else:
            text += f" over {self.n_items} items ({self.reason or 'no floor test'})"
        if kl is not None and kl.worst_item is not None:
            text += f"; worst item {kl.worst_item} at position {kl.worst_position}"
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
                p.path, p.verdict, p.reason, p.n_items, p.n_tokens, p.metrics.get("kl"), p.floor
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
        """`` [token level: token-drift (blocking)]`` for a summary line; "" without token data
        unless the policy blocks (a gate that would block must say it had nothing to block
        on; one that would only warn need not)."""
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


def token_loosening(previous_decision: Mapping[str, Any], setting: TokenDrift) -> str | None:
    """``token_drift loosened from block to warn`` when ``setting`` is laxer than the one the
    previous decision stored (in its policy JSON, where the default is left out)."""
    stored = previous_decision.get("policy")
    before = stored.get("token_drift") if isinstance(stored, Mapping) else None
    if before not in _STRICTNESS:
        before = DEFAULT_TOKEN_DRIFT
    if _STRICTNESS[setting] < _STRICTNESS[before]:
        return f"token_drift loosened from {before} to {setting}"
    return None
