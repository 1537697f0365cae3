"""The release gate on a store: select each requirement's run and baseline, compare them, and
let :func:`evalpipe.gate.decide.decide` rule. The only part of gate/ that reads (and, for the
decision record, writes) a store.

For every required (model, task, layout) the gate selects a run (the newest finished one, or
the newest carrying a tag), finds its baseline, checks both runs' infrastructure-error rates
and compares them with the policy's margin, alpha and minimum n. A comparison that cannot be
made fails its requirement, except when the store itself cannot be read: that
:class:`~evalpipe.errors.StoreError` stops the whole gate (it is no verdict on the runs).
"""

from __future__ import annotations

from dataclasses import replace

from evalpipe.compare.pairing import find_baseline, pairing_key
from evalpipe.compare.runs import compare_runs
from evalpipe.errors import EvalpipeError, StoreError
from evalpipe.gate.decide import GateDecision, Prepared, decide, error_rate
from evalpipe.gate.policy import Policy, Requirement
from evalpipe.layout import parse
from evalpipe.records import Run, utcnow
from evalpipe.store import Store


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
    prepared = [prepare(store, policy, req, tag) for req in policy.requirements]
    decision = decide(
        policy,
        prepared,
        previous=store.last_gate_decision(policy.scope_key),
        selection="latest" if tag is None else f"tag:{tag}",
        decided_at=utcnow(),
    )
    if record:
        stored = store.put_gate_decision(decision.to_record())
        decision = replace(decision, decision_id=stored.decision_id)
    return decision


def select_run(store: Store, requirement: Requirement, tag: str | None = None) -> Run | None:
    """The newest finished run of the requirement's model, task and layout (with ``tag``)
    that is a release run: a canary run (one with an injected fault) never is."""
    return _select(store, requirement, tag)[0]


def _select(
    store: Store, requirement: Requirement, tag: str | None
) -> tuple[Run | None, list[Run]]:
    """:func:`select_run`, and the faulted runs it passed over on the way (newest first)."""
    faulted: list[Run] = []
    for run in store.list_runs(task=requirement.task, status="finished"):  # newest first
        if tag is not None and tag not in run.tags:
            continue
        if _canonical(run.config.layout) == requirement.layout and requirement.matches_model(
            run.config.model
        ):
            if run.config.fault is None:
                return run, faulted
            faulted.append(run)
    return None, faulted


def _canonical(layout: str) -> str | None:
    try:
        return parse(layout).canonical
    except EvalpipeError:  # an imported run with a foreign layout name: never a match
        return None


def find_gate_baseline(store: Store, run: Run, requirement: Requirement, tag: str | None) -> Run:
    """The baseline of ``run``: with ``tag``, the newest tagged run that pairs, if any (the
    CI job that made the run usually made its baseline); else the newest that pairs."""
    if tag is not None:
        key = pairing_key(run)
        for r in store.list_runs(task=run.config.task, status="finished"):
            if (
                tag in r.tags
                and r.run_id != run.run_id
                and _canonical(r.config.layout) == requirement.baseline_layout
                and r.config.fault is None
                and pairing_key(r) == key
            ):
                return r
    return find_baseline(store, run, requirement.baseline_layout)


def reference_pair(
    store: Store, policy: Policy, req: Requirement, tag: str | None
) -> tuple[Run, Run] | str | None:
    """The policy's ``token_reference`` pair for ``req``'s model and task (selected as the
    gate selects runs), or why there is none; None without a relative token margin."""
    ref = policy.token_reference
    if ref is None or policy.token_drift == "off":
        return None
    wanted = Requirement(req.model, req.task, ref.layout, ref.baseline_layout, True)
    run = select_run(store, wanted, tag)
    label = f"{ref.layout} vs {ref.baseline_layout}"
    if run is None:
        flag = "" if tag is None else f" --tag {tag}"
        return (
            f"the reference pair {label} has no {ref.layout} run of model {req.model!r} on "
            f"{req.task}: make it with: evalpipe run {req.task} --layout {ref.layout} --model "
            f"MODEL --logprobs 5{flag}"
        )
    try:
        return run, find_gate_baseline(store, run, wanted, tag)
    except StoreError:
        raise
    except EvalpipeError as exc:
        return f"the reference pair {label} has no baseline: {exc.message}"


def prepare(store: Store, policy: Policy, req: Requirement, tag: str | None) -> Prepared:
    """One requirement's run, baseline, error-rate failures and (unadjusted) comparison."""
    run, faulted = _select(store, req, tag)
    if run is None:
        tagged = "" if tag is None else f" tagged {tag!r}"
        flag = "" if tag is None else f" --tag {tag}"
        canary = (
            f" (refused: {', '.join(f'{r.run_id} [fault: {r.config.fault}]' for r in faulted)}"
            " — a run with a canary fault never counts as a release run)"
            if faulted
            else ""
        )
        return Prepared(
            req,
            missing=(
                f"missing run: no finished {req.layout} run of model {req.model!r} on "
                f"{req.task}{tagged} in {store.name}{canary}; make it with: evalpipe run "
                f"{req.task} --layout {req.layout} --model MODEL{flag}"
            ),
        )
    try:
        baseline = find_gate_baseline(store, run, req, tag)
    except StoreError:
        raise  # an unreadable store says nothing about this requirement: stop the gate
    except EvalpipeError as exc:
        return Prepared(req, run=run, missing=f"missing baseline: {exc.message}")
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
            tokens=policy.token_drift != "off",
            token_margin=policy.tokens_margin(),
            token_reference=reference_pair(store, policy, req, tag),
        )
    except StoreError:
        raise
    except EvalpipeError as exc:
        return Prepared(req, run, baseline, failures=(*failures, exc.message))
    return Prepared(req, run, baseline, failures=tuple(failures), comparison=comparison)
