"""The release gate: a policy and the stored runs → one decision (pass / fail / incomplete).

For every required (model, task, layout) the gate selects a run (the newest finished one, or
the newest carrying a tag), finds its baseline, checks both runs' infrastructure-error rates,
and compares them with the policy's margin, alpha and minimum n; all comparisons of one gate
are Holm-adjusted together, because a release passes only if all of them do.

Exit codes and their precedence (the most actionable state wins):

- 1 ``fail``: any requirement drifted, failed (error rate above the policy's maximum, or the
  runs could not be compared), drifted token by token with ``token_drift: block``
  (:mod:`evalpipe.gate.tokens`) or, with ``inconclusive_blocks``, was inconclusive. A known
  failure is never reported as merely incomplete: fixing the missing run will not save it.
- 2 ``incomplete``: nothing failed, but a required run or baseline is missing (each says which
  and how to make it).
- 0 ``pass``: every requirement passed (or was inconclusive with ``inconclusive_blocks: false``).
- 3 is a bad policy or usage (:mod:`evalpipe.gate.policy` raises it).

Every decision is stored with the policy's hash and settings. The previous decision for the
same scope (policy name + requirements) is compared with the current policy, and any loosened
setting becomes a notice in every output: a gate relaxed in passing is how regressions ship.
This module is the rule, and pure: from the prepared requirements (:class:`Prepared`) and the
previous decision to a :class:`GateDecision` (:func:`decide`). Reading the store (selecting
runs, finding baselines, comparing) is :mod:`evalpipe.gate.select`; rendering is
:mod:`evalpipe.report.gate`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from evalpipe.compare.core import Comparison, adjust
from evalpipe.compare.stats import PairedResult
from evalpipe.gate.policy import Policy, Requirement
from evalpipe.gate.tokens import TokenCheck, TokenSummary, token_loosening
from evalpipe.records import GateRecord, Run

Outcome = Literal["pass", "drift", "token-drift", "inconclusive", "failed", "missing"]
OUTCOMES: tuple[Outcome, ...] = (
    "pass",
    "drift",
    "inconclusive",
    "failed",
    "missing",
    "token-drift",  # last: the counts JSON keeps this order, and its keys are only added to
)
Status = Literal["pass", "fail", "incomplete"]
EXIT_CODES: dict[str, int] = {"pass": 0, "fail": 1, "incomplete": 2}


_RESULT_KEYS = (
    "n",
    "run_accuracy",
    "baseline_accuracy",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "noninferiority_p_adjusted",
    "mde",
    "margin",
    "alpha",
    "min_n",
    "verdict",
    "reason",
)
"""The figures of a comparison a gate item keeps, in their stored order."""


@dataclass(frozen=True)
class GateSummary:
    """What a gate item keeps of a comparison: the numbers behind the verdict, not flip
    examples (those can hold 2 000 characters of model output each; `evalpipe compare`
    shows them). ``tokens`` is the token-level summary (None: no token data); it is
    serialised by the item, beside this (:meth:`GateItem.to_dict`)."""

    result: PairedResult  # Holm-adjusted over the whole gate
    excluded: int
    agreement: float | None
    noise_floor: float | None
    warnings: tuple[str, ...] = ()
    tokens: TokenSummary | None = None

    @classmethod
    def of(cls, c: Comparison) -> GateSummary:
        tokens = None if c.tokens is None else TokenSummary.of(c.tokens)
        return cls(c.result, c.n_excluded, c.agreement, c.noise_floor, c.warnings, tokens)

    @property
    def mde(self) -> float | None:
        """The MDE; None when infinite (nothing this many items could detect)."""
        return self.result.mde if math.isfinite(self.result.mde) else None

    def to_dict(self) -> dict[str, Any]:
        """The stored and ``--json`` shape: these keys, in this order."""
        result = self.result.to_dict()  # an infinite MDE is None there too
        return {
            **{k: result[k] for k in _RESULT_KEYS},
            "excluded": self.excluded,
            "agreement": self.agreement,
            "noise_floor": self.noise_floor,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class GateItem:
    """The outcome of one required comparison.

    ``blocks`` is True when this item alone makes the gate fail. ``comparison`` holds the
    Holm-adjusted statistics when the runs were compared. ``error_rates`` maps ``run`` /
    ``baseline`` to infrastructure-error rates. ``token`` is the token-level check (None
    when the runs were not compared).
    """

    requirement: Requirement
    outcome: Outcome
    blocks: bool
    reason: str
    run_id: str | None = None
    baseline_run_id: str | None = None
    run_model: str | None = None
    comparison: GateSummary | None = None
    error_rates: dict[str, float] = field(default_factory=dict)
    token: TokenCheck | None = None

    @property
    def name(self) -> str:
        return f"{self.requirement.layout} vs {self.requirement.baseline_layout}"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.requirement.to_dict(),
            "outcome": self.outcome,
            "blocks": self.blocks,
            "reason": self.reason,
            "run_id": self.run_id,
            "baseline_run_id": self.baseline_run_id,
            "run_model": self.run_model,
            "error_rates": dict(self.error_rates),
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
            "tokens": None if self.token is None else self.token.to_dict(),
        }


@dataclass(frozen=True)
class GateDecision:
    """What ``evalpipe gate`` decided; ``to_dict()`` is its ``--json`` output."""

    policy: Policy
    selection: str  # "latest" or "tag:NAME"
    items: tuple[GateItem, ...]
    status: Status
    exit_code: int
    notices: tuple[str, ...]
    decided_at: str
    decision_id: int | None = None

    @property
    def policy_hash(self) -> str:
        return self.policy.content_hash

    @property
    def reasons(self) -> list[str]:
        """One line per requirement that did not pass, for summaries (and the PR comment)."""
        return [
            f"{i.requirement.label}: {i.outcome}: {i.reason.splitlines()[0]}"
            for i in self.items
            if i.outcome != "pass"
        ]

    @property
    def warnings(self) -> list[str]:
        """One line per token-level drift the policy only warns about (the gate still passes)."""
        return [
            f"{i.requirement.label}: {i.token.warning}"
            for i in self.items
            if i.token is not None and i.token.warning
        ]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        for i in self.items:
            out[i.outcome] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "policy": self.policy.to_dict(),
            "policy_source": self.policy.source,
            "policy_hash": self.policy_hash,
            "scope_key": self.policy.scope_key,
            "selection": self.selection,
            "decided_at": self.decided_at,
            "decision_id": self.decision_id,
            "notices": list(self.notices),
            "reasons": self.reasons,
            "warnings": self.warnings,
            "counts": self.counts(),
            "items": [i.to_dict() for i in self.items],
        }

    def to_record(self) -> GateRecord:
        p = self.policy
        return GateRecord(
            decided_at=self.decided_at,
            scope_key=p.scope_key,
            policy_name=p.name,
            policy_hash=self.policy_hash,
            margin=p.margin,
            alpha=p.alpha,
            min_n=p.min_n,
            max_error_rate=p.max_error_rate,
            inconclusive_blocks=p.inconclusive_blocks,
            status=self.status,
            decision=self.to_dict(),
        )


# --- the pure rules -----------------------------------------------------------------------


def gate_status(items: Iterable[GateItem]) -> tuple[Status, int]:
    """``(status, exit code)``: fail (1) > incomplete (2) > pass (0), see the module doc."""
    items = list(items)
    if any(i.blocks for i in items):
        return "fail", EXIT_CODES["fail"]
    if any(i.outcome == "missing" for i in items):
        return "incomplete", EXIT_CODES["incomplete"]
    return "pass", EXIT_CODES["pass"]


def loosening_notices(previous: GateRecord | None, policy: Policy) -> list[str]:
    """One notice per setting that ``policy`` relaxes relative to the ``previous`` decision."""
    if previous is None:
        return []
    changes: list[str] = []
    if policy.margin > previous.margin:
        changes.append(f"margin loosened from {previous.margin:g} to {policy.margin:g} points")
    if policy.alpha > previous.alpha:
        changes.append(f"alpha loosened from {previous.alpha:g} to {policy.alpha:g}")
    if policy.min_n < previous.min_n:
        changes.append(f"min_n loosened from {previous.min_n} to {policy.min_n}")
    if policy.max_error_rate > previous.max_error_rate:
        changes.append(
            f"max_error_rate loosened from {previous.max_error_rate:g} to {policy.max_error_rate:g}"
        )
    if previous.inconclusive_blocks and not policy.inconclusive_blocks:
        changes.append("inconclusive_blocks loosened from true to false")
    changes += token_loosening(previous.decision, policy)
    since = (
        f" since decision #{previous.decision_id} on {previous.decided_at} "
        f"(policy hash {previous.policy_hash[:12]}→{policy.content_hash[:12]})"
    )
    return [c + since for c in changes]


def error_rate(run: Run) -> float:
    """Infrastructure errors per planned item; a run with no items counts as all errors."""
    total = run.n_items or run.n_samples
    return 1.0 if total == 0 else run.n_errors / total


# --- from prepared requirements to a decision ---------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A requirement's runs and comparison before the gate-wide Holm adjustment.

    ``missing`` says which run or baseline is missing; ``failures`` why the runs fail (error
    rates, a comparison that could not be made); else ``comparison`` is set.
    """

    requirement: Requirement
    run: Run | None = None
    baseline: Run | None = None
    missing: str | None = None
    failures: tuple[str, ...] = ()
    comparison: Comparison | None = None


def decide(
    policy: Policy,
    prepared: Sequence[Prepared],
    previous: GateRecord | None,
    selection: str,
    decided_at: str,
) -> GateDecision:
    """The gate's decision on the prepared requirements; ``previous`` is the last stored
    decision of the same scope (for loosening notices)."""
    compared = [p.comparison for p in prepared if p.comparison is not None]
    # Holm over the whole gate: k comparisons must all pass, so each is tested at a share.
    adjusted = iter(adjust(compared))
    items = tuple(
        gate_item(policy, p, next(adjusted) if p.comparison is not None else None) for p in prepared
    )
    status, exit_code = gate_status(items)
    return GateDecision(
        policy=policy,
        selection=selection,
        items=items,
        status=status,
        exit_code=exit_code,
        notices=tuple(loosening_notices(previous, policy)),
        decided_at=decided_at,
    )


def gate_item(policy: Policy, p: Prepared, adjusted: Comparison | None) -> GateItem:
    """The outcome of one requirement: missing, failed, or the (adjusted) comparison's verdict
    (inconclusive blocks only if the policy says so), then the token rule
    (:func:`with_token_rule`)."""
    req, run, baseline = p.requirement, p.run, p.baseline
    summary = None if adjusted is None else GateSummary.of(adjusted)
    token = None
    if summary is not None:
        token = TokenCheck.of(policy.token_drift, summary.tokens, req.layout, req.baseline_layout)
    common: dict[str, Any] = {
        "run_id": run.run_id if run else None,
        "baseline_run_id": baseline.run_id if baseline else None,
        "run_model": run.config.model if run else None,
        "error_rates": {
            k: error_rate(r) for k, r in (("run", run), ("baseline", baseline)) if r is not None
        },
        "comparison": summary,
        "token": token,
    }
    if p.missing is not None:
        return GateItem(req, "missing", blocks=False, reason=p.missing, **common)
    if p.failures:
        item = GateItem(req, "failed", blocks=True, reason="; ".join(p.failures), **common)
        return with_token_rule(item)
    assert summary is not None  # every requirement is missing, failed or compared
    verdict, why = summary.result.verdict, summary.result.reason
    if verdict == "ok":
        item = GateItem(req, "pass", blocks=False, reason=why, **common)
    elif verdict == "drift":
        item = GateItem(req, "drift", blocks=True, reason=why, **common)
    else:
        blocks = policy.inconclusive_blocks
        note = "" if blocks else " (not blocking: the policy has inconclusive_blocks: false)"
        item = GateItem(req, "inconclusive", blocks=blocks, reason=why + note, **common)
    return with_token_rule(item)


def with_token_rule(item: GateItem) -> GateItem:
    """``item`` after the policy's ``token_drift`` rule (:class:`TokenCheck`): a blocking
    token-level drift fails an item that passed or was inconclusive (outcome ``token-drift``)
    and is added to the reason of one that already fails; a warning changes nothing here
    (:attr:`GateDecision.warnings` shows it)."""
    check = item.token
    if check is None or check.action != "blocks":
        return item
    if item.outcome in ("pass", "inconclusive"):
        reason = f"{check.reason}; accuracy {item.outcome}: {item.reason}"
        return replace(item, outcome="token-drift", blocks=True, reason=reason)
    return replace(item, reason=f"{item.reason}; also {check.reason}")


def summarize(decision: GateDecision) -> str:
    """Plain-text summary for the terminal: status, notices, one line per requirement."""
    p = decision.policy
    lines = [
        f"gate {p.name}: {decision.status.upper()} (exit {decision.exit_code}); "
        f"{decision.selection} runs; policy {decision.policy_hash[:12]}"
        + (f"; decision #{decision.decision_id}" if decision.decision_id is not None else "")
    ]
    lines += [f"NOTICE: {n}" for n in decision.notices]
    lines += [f"WARNING: {w}" for w in decision.warnings]
    for i in decision.items:
        note = "" if i.token is None else i.token.note()
        lines.append(f"  {i.outcome:12} {i.requirement.label}: {i.reason}{note}")
    return "\n".join(lines)
