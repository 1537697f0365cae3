"""The release gate: a policy and the stored runs → one decision (pass / fail / incomplete).

For every required (model, task, layout) the gate selects a run (the newest finished one, or
the newest carrying a tag), finds its baseline, checks both runs' infrastructure-error rates,
and compares them with the policy's margin, alpha and minimum n; all comparisons of one gate
are Holm-adjusted together, because a release passes only if all of them do.

Exit codes and their precedence (the most actionable state wins):

- 1 ``fail``: any requirement drifted, failed (error rate above the policy's maximum, or the
  runs could not be compared) or, with ``inconclusive_blocks``, was inconclusive. A known
  failure is never reported as merely incomplete: fixing the missing run will not save it.
- 2 ``incomplete``: nothing failed, but a required run or baseline is missing (each says which
  and how to make it).
- 0 ``pass``: every requirement passed (or was inconclusive with ``inconclusive_blocks: false``).
- 3 is a bad policy or usage (:mod:`evalpipe.gate.policy` raises it).

Every decision is stored with the policy's hash and settings. The previous decision for the
same scope (policy name + requirements) is compared with the current policy, and any loosened
setting becomes a notice in every output: a gate relaxed in passing is how regressions ship.
The rule (:func:`gate_status`, :func:`loosening_notices`) is pure; rendering is in
:mod:`evalpipe.report.gate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from evalpipe.errors import EvalpipeError
from evalpipe.gate.policy import Policy, Requirement
from evalpipe.records import GateRecord, JsonDict, Run, utcnow
from evalpipe.store import Store

Outcome = Literal["pass", "drift", "inconclusive", "failed", "missing"]
Status = Literal["pass", "fail", "incomplete"]
EXIT_CODES: dict[str, int] = {"pass": 0, "fail": 1, "incomplete": 2}

# What a gate item keeps of a comparison: the numbers behind the verdict, not flip examples
# (those can hold 2 000 characters of model output each; `evalpipe compare` shows them).
_SUMMARY_KEYS = (
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
    "excluded",
    "agreement",
    "noise_floor",
    "warnings",
)


@dataclass(frozen=True)
class GateItem:
    """The outcome of one required comparison.

    ``blocks`` is True when this item alone makes the gate fail. ``comparison`` holds the
    Holm-adjusted statistics (``_SUMMARY_KEYS`` of ``Comparison.to_dict()``) when the runs
    were compared. ``error_rates`` maps ``run`` / ``baseline`` to infrastructure-error rates.
    """

    requirement: Requirement
    outcome: Outcome
    blocks: bool
    reason: str
    run_id: str | None = None
    baseline_run_id: str | None = None
    run_model: str | None = None
    comparison: JsonDict | None = None
    error_rates: JsonDict = field(default_factory=dict)

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
            "comparison": None if self.comparison is None else dict(self.comparison),
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

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("pass", "drift", "inconclusive", "failed", "missing"), 0)
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
    since = (
        f" since decision #{previous.decision_id} on {previous.decided_at} "
        f"(policy hash {previous.policy_hash[:12]}→{policy.content_hash[:12]})"
    )
    return [c + since for c in changes]


def error_rate(run: Run) -> float:
    """Infrastructure errors per planned item; a run with no items counts as all errors."""
    total = run.n_items or run.n_samples
    return 1.0 if total == 0 else run.n_errors / total


# --- evaluation ---------------------------------------------------------------------------


def evaluate_gate(
    store: Store, policy: Policy, *, tag: str | None = None, record: bool = True
) -> GateDecision:
    """Decide the gate on the runs in ``store``: the newest finished matching runs, or with
    ``tag`` the newest carrying it. With ``record`` the decision is stored (and numbered).

    Example::

        with open_store("evalpipe.db") as store:
            decision = evaluate_gate(store, load_policy("release.yaml"), tag="rc1")
        print(decision.status, decision.exit_code)
    """
    from evalpipe.compare.core import adjust
    from evalpipe.compare.jsonout import to_json

    pending = [_prepare(store, policy, req, tag) for req in policy.requirements]
    compared = [p.comparison for p in pending if p.comparison is not None]
    # Holm over the whole gate: k comparisons must all pass, so each is tested at a share.
    adjusted = iter(adjust(compared))
    items = tuple(
        _item(policy, p, to_json(next(adjusted)) if p.comparison is not None else None)
        for p in pending
    )
    status, exit_code = gate_status(items)
    previous = store.last_gate_decision(policy.scope_key)
    decision = GateDecision(
        policy=policy,
        selection="latest" if tag is None else f"tag:{tag}",
        items=items,
        status=status,
        exit_code=exit_code,
        notices=tuple(loosening_notices(previous, policy)),
        decided_at=utcnow(),
    )
    if record:
        stored = store.put_gate_decision(decision.to_record())
        decision = replace(decision, decision_id=stored.decision_id)
    return decision


@dataclass(frozen=True)
class _Pending:
    """A requirement's runs before the gate-wide Holm adjustment."""

    requirement: Requirement
    run: Run | None = None
    baseline: Run | None = None
    missing: str | None = None
    failures: tuple[str, ...] = ()
    comparison: Any = None  # compare.Comparison; Any keeps compare's imports lazy


def select_run(store: Store, requirement: Requirement, tag: str | None = None) -> Run | None:
    """The newest finished run of the requirement's model, task and layout (with ``tag``)."""
    for run in store.list_runs(task=requirement.task, status="finished"):  # newest first
        if tag is not None and tag not in run.tags:
            continue
        if _canonical(run.config.layout) == requirement.layout and requirement.matches_model(
            run.config.model
        ):
            return run
    return None


def _canonical(layout: str) -> str | None:
    from evalpipe.layout import parse

    try:
        return parse(layout).canonical
    except EvalpipeError:  # an imported run with a foreign layout name: never a match
        return None


def find_gate_baseline(store: Store, run: Run, requirement: Requirement, tag: str | None) -> Run:
    """The baseline of ``run``: with ``tag``, the newest tagged run that pairs, if any (the
    CI job that made the run usually made its baseline); else the newest that pairs."""
    from evalpipe.compare.pairing import find_baseline, pairing_key

    if tag is not None:
        key = pairing_key(run)
        for r in store.list_runs(task=run.config.task, status="finished"):
            if (
                tag in r.tags
                and r.run_id != run.run_id
                and _canonical(r.config.layout) == requirement.baseline_layout
                and pairing_key(r) == key
            ):
                return r
    return find_baseline(store, run, requirement.baseline_layout)


def _prepare(store: Store, policy: Policy, req: Requirement, tag: str | None) -> _Pending:
    from evalpipe.compare.runs import compare_runs

    run = select_run(store, req, tag)
    if run is None:
        tagged = "" if tag is None else f" tagged {tag!r}"
        flag = "" if tag is None else f" --tag {tag}"
        return _Pending(
            req,
            missing=(
                f"missing run: no finished {req.layout} run of model {req.model!r} on "
                f"{req.task}{tagged} in {store.name}; make it with: evalpipe run {req.task} "
                f"--layout {req.layout} --model MODEL{flag}"
            ),
        )
    try:
        baseline = find_gate_baseline(store, run, req, tag)
    except EvalpipeError as exc:
        return _Pending(req, run=run, missing=f"missing baseline: {exc.message}")
    failures = [
        f"{which} {r.run_id} has an infrastructure-error rate of {error_rate(r):.2%} "
        f"({r.n_errors} of {r.n_items or r.n_samples} items) > max_error_rate "
        f"{policy.max_error_rate:.2%}"
        for which, r in (("run", run), ("baseline", baseline))
        if error_rate(r) > policy.max_error_rate
    ]
    try:
        comparison = compare_runs(
            store,
            run,
            baseline,
            margin=policy.margin / 100,  # the policy speaks points, compare fractions
            alpha=policy.alpha,
            min_n=policy.min_n,
        )
    except EvalpipeError as exc:
        return _Pending(req, run, baseline, failures=(*failures, exc.message))
    return _Pending(req, run, baseline, failures=tuple(failures), comparison=comparison)


def _item(policy: Policy, p: _Pending, compared: JsonDict | None) -> GateItem:
    req, run, baseline = p.requirement, p.run, p.baseline
    common: dict[str, Any] = {
        "run_id": run.run_id if run else None,
        "baseline_run_id": baseline.run_id if baseline else None,
        "run_model": run.config.model if run else None,
        "error_rates": {
            k: error_rate(r) for k, r in (("run", run), ("baseline", baseline)) if r is not None
        },
        "comparison": None if compared is None else {k: compared.get(k) for k in _SUMMARY_KEYS},
    }
    if p.missing is not None:
        return GateItem(req, "missing", blocks=False, reason=p.missing, **common)
    if p.failures:
        return GateItem(req, "failed", blocks=True, reason="; ".join(p.failures), **common)
    assert compared is not None  # every requirement is missing, failed or compared
    verdict, why = str(compared["verdict"]), str(compared["reason"])
    if verdict == "ok":
        return GateItem(req, "pass", blocks=False, reason=why, **common)
    if verdict == "drift":
        return GateItem(req, "drift", blocks=True, reason=why, **common)
    blocks = policy.inconclusive_blocks
    note = "" if blocks else " (not blocking: the policy has inconclusive_blocks: false)"
    return GateItem(req, "inconclusive", blocks=blocks, reason=why + note, **common)


def summarize(decision: GateDecision) -> str:
    """Plain-text summary for the terminal: status, notices, one line per requirement."""
    p = decision.policy
    lines = [
        f"gate {p.name}: {decision.status.upper()} (exit {decision.exit_code}); "
        f"{decision.selection} runs; policy {decision.policy_hash[:12]}"
        + (f"; decision #{decision.decision_id}" if decision.decision_id is not None else "")
    ]
    lines += [f"NOTICE: {n}" for n in decision.notices]
    for i in decision.items:
        lines.append(f"  {i.outcome:12} {i.requirement.label}: {i.reason}")
    return "\n".join(lines)
