"""Render a gate decision as JUnit XML (for any CI's test view) and as Markdown; pure.

JUnit: one ``<testcase>`` per required comparison, ``classname`` = ``model.task`` (Jenkins
splits at the last dot, so the model becomes the package and the task the class) and ``name``
= ``layout vs baseline``. Drift, failed, blocking token-level drift and blocking
inconclusive comparisons are ``<failure>``; a missing run or baseline is ``<error>``, not
``<skipped>``: GitHub, GitLab and Jenkins all show skipped tests as neutral, and an
incomplete gate must not look green.
Loosened-policy notices go into every test case's ``<system-out>`` too, because most CI views
show only the test cases.

Both show each comparison's token verdict and what the policy's ``token_drift`` made of it;
a token-level drift the policy only warns about is listed apart (the gate still passes).

Markdown: every string that comes from a policy file or a run (names, reasons, model paths,
item ids in token-level figures) goes through :func:`evalpipe.report.markdown.md_escape`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from evalpipe.gate.decide import GateDecision, GateItem, summarize
from evalpipe.gate.tokens import TokenCheck
from evalpipe.report.markdown import delta_ci, gate_label, md_escape, p_value, pts

OUTCOME_LABELS = {
    "pass": "✅ pass",
    "drift": "❌ drift",
    "token-drift": "❌ token drift",
    "failed": "❌ failed",
    "inconclusive": "⚠️ inconclusive",
    "missing": "❔ missing",
}

# Characters XML 1.0 cannot carry at all (escaping does not help); model text may hold them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(value: object) -> str:
    return _NOT_XML.sub("\ufffd", "" if value is None else str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return _x(value)


def _failing(item: GateItem) -> bool:
    return item.outcome in ("drift", "token-drift", "failed") or (
        item.outcome == "inconclusive" and item.blocks
    )


def render_junit(decision: GateDecision) -> str:
    """JUnit XML: one test case per required comparison (see the module docstring)."""
    counts = {
        "tests": str(len(decision.items)),
        "failures": str(sum(_failing(i) for i in decision.items)),
        "errors": str(sum(i.outcome == "missing" for i in decision.items)),
        "skipped": "0",
    }
    p = decision.policy
    root = ET.Element("testsuites", {"name": "evalpipe gate", **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {"name": _x(f"evalpipe gate {p.name}"), **counts, "timestamp": decision.decided_at},
    )
    props = ET.SubElement(suite, "properties")
    suite_props: dict[str, object] = {
        "status": decision.status,
        "exit_code": decision.exit_code,
        "policy": p.name,
        "policy_source": p.source,
        "policy_hash": decision.policy_hash,
        "selection": decision.selection,
        "decision_id": decision.decision_id,
        **{f"policy.{k}": v for k, v in p.settings().items()},
        "policy.token_drift": p.token_drift,
    }
    for key, value in suite_props.items():
        ET.SubElement(props, "property", name=key, value=_fmt(value))
    for notice in decision.notices:
        ET.SubElement(props, "property", name="notice", value=_x(notice))
    for warning in decision.warnings:
        ET.SubElement(props, "property", name="warning", value=_x(warning))
    for item in decision.items:
        _testcase(suite, item, decision.notices)
    ET.SubElement(suite, "system-out").text = _x(summarize(decision))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _testcase(suite: ET.Element, item: GateItem, notices: tuple[str, ...]) -> None:
    req = item.requirement
    case = ET.SubElement(
        suite,
        "testcase",
        classname=_x(f"{req.model}.{req.task}"),
        name=_x(item.name),
        time="0",
    )
    props = ET.SubElement(case, "properties")
    values: dict[str, object] = {
        "outcome": item.outcome,
        "run_id": item.run_id,
        "baseline_run_id": item.baseline_run_id,
        "run_model": item.run_model,
        **{f"error_rate.{k}": v for k, v in item.error_rates.items()},
    }
    if item.comparison is not None:
        r = item.comparison.result
        values.update(
            n=r.n,
            delta=r.delta,
            ci_low=r.ci_low,
            ci_high=r.ci_high,
            mde=item.comparison.mde,
            p_value=r.p_value,
            p_adjusted=r.p_adjusted,
            verdict=r.verdict,
        )
    if item.token is not None:
        values.update(token_verdict=item.token.status, token_action=item.token.action)
    for key, value in values.items():
        if value is not None:
            ET.SubElement(props, "property", name=key, value=_fmt(value))
    first_line = item.reason.splitlines()[0] if item.reason else item.outcome
    if _failing(item):
        failure = ET.SubElement(case, "failure", message=_x(first_line), type=item.outcome)
        failure.text = _x(item.reason)
    elif item.outcome == "missing":
        error = ET.SubElement(case, "error", message=_x(first_line), type="missing")
        error.text = _x(item.reason)
    ET.SubElement(case, "system-out").text = _x("\n".join([*notices, _item_text(item)]))


def _item_text(item: GateItem) -> str:
    lines = [f"{item.requirement.label}: {item.outcome}", f"reason: {item.reason}"]
    if item.run_id:
        lines.append(f"run {item.run_id} ({item.run_model}), baseline {item.baseline_run_id}")
    if item.comparison is not None:
        r, mde = item.comparison.result, item.comparison.mde
        shown = "none detectable" if mde is None else f"{mde * 100:.2f} points"
        lines.append(
            f"delta {r.delta * 100:+.2f} points, CI [{r.ci_low * 100:+.2f}, "
            f"{r.ci_high * 100:+.2f}], MDE {shown}, n {r.n}, "
            f"p {r.p_value:.3g} (Holm {r.p_adjusted:.3g})"
        )
    if item.token is not None:
        check = item.token
        lines.append(f"token level: {check.status} (token_drift: {check.policy})")
        if check.warning:
            lines.append(f"warning: {check.warning}")
        elif check.reason:
            lines.append(check.reason)
    if item.error_rates:
        rates = ", ".join(f"{k} {v:.2%}" for k, v in item.error_rates.items())
        lines.append(f"infrastructure-error rates: {rates}")
    return "\n".join(lines)


def render_markdown(decision: GateDecision) -> str:
    """A Markdown report: status, policy settings, notices, one table row per requirement."""
    p = decision.policy
    number = "" if decision.decision_id is None else f" · decision #{decision.decision_id}"
    lines = [
        f"## Release gate {md_escape(p.name)}: {gate_label(decision.status)}",
        "",
        f"Policy `{decision.policy_hash[:12]}` ({md_escape(p.source)}) · "
        f"{md_escape(decision.selection)} runs{number} · margin {p.margin:g} points · "
        f"alpha {p.alpha:g} · min n {p.min_n} · max error rate {p.max_error_rate:.2%} · "
        f"inconclusive blocks: {'yes' if p.inconclusive_blocks else 'no'} · "
        f"token drift: {p.token_drift}",
        "",
    ]
    for notice in decision.notices:
        lines.append(f"> ⚠️ **Policy loosened:** {md_escape(notice)}")
    for warning in decision.warnings:
        lines.append(f"> ⚠️ **Token drift (not blocking):** {md_escape(warning, limit=600)}")
    if decision.notices or decision.warnings:
        lines.append("")
    lines += [
        "| model | task | layout | baseline | outcome | tokens | Δ [CI] | MDE | p (Holm) | n "
        "| runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for item in decision.items:
        lines.append(_row(item))
    lines.append("")
    for item in decision.items:
        if item.outcome != "pass" or item.reason:
            lines.append(
                f"- **{md_escape(item.requirement.label)}** ({item.outcome}): "
                f"{md_escape(item.reason, limit=600)}"
            )
    return "\n".join(lines) + "\n"


def _row(item: GateItem) -> str:
    req, c = item.requirement, item.comparison
    label = OUTCOME_LABELS[item.outcome]
    if item.outcome == "inconclusive" and not item.blocks:
        label += " (not blocking)"
    runs = " / ".join(md_escape(r) for r in (item.run_id, item.baseline_run_id) if r)
    cells = [
        md_escape(req.model),
        md_escape(req.task),
        md_escape(req.layout),
        md_escape(req.baseline_layout),
        label,
        _token_cell(item.token),
        *(
            ["—", "—", "—", "—"]
            if c is None
            else [
                delta_ci(c.result.delta, c.result.ci_low, c.result.ci_high),
                pts(c.mde),
                p_value(c.result.p_adjusted),
                str(c.result.n),
            ]
        ),
        runs or "—",
    ]
    return "| " + " | ".join(cells) + " |"


_TOKEN_LABELS = {
    "ok": "✅ ok",
    "inconclusive": "❔ inconclusive",
    "no token data": "no token data",
}
_TOKEN_DRIFT_LABELS = {
    "blocks": "❌ token drift",
    "warns": "⚠️ token drift (warning)",
    "none": "token drift (ignored: token_drift off)",
}


def _token_cell(check: TokenCheck | None) -> str:
    """The token verdict and what the policy made of it; ``—`` when not compared."""
    if check is None:
        return "—"
    if check.status == "token-drift":
        return _TOKEN_DRIFT_LABELS[check.action]
    return _TOKEN_LABELS.get(check.status, md_escape(check.status))
