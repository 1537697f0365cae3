"""The policy's ``token_drift: block | warn | off``: parsing, the policy hash, the decision and
its exit code, and the token verdict in the JSON, summary, JUnit and Markdown gate reports
(pure: literal comparisons with hand-made token-level results)."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from token_fixtures import KL, comparison, decode_path, tokens

from evalpipe.compare.core import Comparison
from evalpipe.errors import EvalpipeError
from evalpipe.gate.decide import GateDecision, Prepared, decide, loosening_notices, summarize
from evalpipe.gate.policy import Policy, load_policy, parse_policy
from evalpipe.records import GateRecord
from evalpipe.report.gate import render_junit, render_markdown

REPO = Path(__file__).resolve().parents[2]
RELEASE_HASH = "0a592d85eb8052ad007a95fe9995d2f7491a20d2960d55244de0303c2323c0f1"
"""examples/release.yaml's hash as computed before ``token_drift`` existed."""

EVIL = "@org/team *x* <!-- y --> #12"


def policy(**changes: Any) -> Policy:
    data: dict[str, Any] = {
        "name": "release",
        "requirements": [{"model": "m", "task": "gsm8k", "layouts": ["tp8dcp8"]}],
        "margin": 1.0,
        "alpha": 0.05,
        "min_n": 100,
        **changes,
    }
    return parse_policy(data, "release.yaml")


def ok_comparison(**token_changes: Any) -> Comparison:
    """An accuracy-ok comparison (1000 identical answers) with the given token result."""
    c = comparison(1000)
    assert c.verdict == "ok"
    return dataclasses.replace(c, **token_changes)


def gate(p: Policy, c: Comparison) -> GateDecision:
    (req,) = p.requirements
    prepared = Prepared(req, c.run, c.baseline, comparison=c)
    return decide(p, [prepared], None, "latest", "2026-01-01T00:00:00+00:00")


# --- the policy ---------------------------------------------------------------------------


def test_token_drift_defaults_to_warn_and_takes_block_warn_off() -> None:
    assert policy().token_drift == "warn"
    for value in ("block", "warn", "off"):
        assert policy(token_drift=value).token_drift == value


def test_a_bare_yaml_off_is_off_and_on_is_refused(tmp_path: Path) -> None:
    text = (REPO / "examples" / "release.yaml").read_text(encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("token_drift: warn", "token_drift: off"), encoding="utf-8")
    assert load_policy(path).token_drift == "off"  # YAML 1.1 reads it as false
    path.write_text(text.replace("token_drift: warn", "token_drift: on"), encoding="utf-8")
    with pytest.raises(EvalpipeError) as info:
        load_policy(path)
    assert info.value.exit_code == 3
    assert "token_drift: must be one of block, warn, off, got true" in info.value.message


@pytest.mark.parametrize("value", ["strict", "BLOCK", 1, None, ["block"]])
def test_a_bad_token_drift_is_a_clear_policy_error(value: object) -> None:
    with pytest.raises(EvalpipeError) as info:
        policy(token_drift=value)
    assert info.value.exit_code == 3
    assert info.value.message == (
        f"bad policy release.yaml: token_drift: must be one of block, warn, off, got {value!r}"
    )


def test_existing_policies_keep_their_hash() -> None:
    example = load_policy(REPO / "examples" / "release.yaml")
    assert example.token_drift == "warn"  # the example states the default
    assert example.content_hash == RELEASE_HASH
    assert "token_drift" not in example.to_dict()
    assert policy(token_drift="warn").content_hash == policy().content_hash
    blocking = policy(token_drift="block")
    assert blocking.content_hash != policy().content_hash
    assert blocking.to_dict()["token_drift"] == "block"
    assert blocking.scope_key == policy().scope_key  # same releases, gated differently


def previous(decision_policy: dict[str, Any]) -> GateRecord:
    return GateRecord(
        decided_at="2026-01-01T00:00:00+00:00",
        scope_key=policy().scope_key,
        policy_name="release",
        policy_hash="f" * 64,
        margin=1.0,
        alpha=0.05,
        min_n=100,
        max_error_rate=0.0,
        inconclusive_blocks=True,
        status="pass",
        decision={"policy": decision_policy},
        decision_id=7,
    )


def test_a_laxer_token_drift_is_a_loosening_notice() -> None:
    blocked = previous({"token_drift": "block"})
    (notice,) = loosening_notices(blocked, policy())
    assert notice.startswith("token_drift loosened from block to warn since decision #7")
    # A stored policy without the key had the default, warn.
    (notice,) = loosening_notices(previous({}), policy(token_drift="off"))
    assert notice.startswith("token_drift loosened from warn to off")
    assert loosening_notices(previous({}), policy(token_drift="block")) == []
    assert loosening_notices(blocked, policy(token_drift="block")) == []


# --- the decision -------------------------------------------------------------------------


def test_block_fails_the_gate_naming_the_pair_and_the_figures() -> None:
    d = gate(policy(token_drift="block"), ok_comparison(tokens=tokens()))
    assert (d.status, d.exit_code) == ("fail", 1)
    (item,) = d.items
    assert (item.outcome, item.blocks) == ("token-drift", True)
    assert item.reason.startswith(
        "token-level drift of run r (tp8dcp8) against baseline b (tp8): decode: mean KL "
        "1.23e-04 nats vs floor 4.50e-05 (difference +7.84e-05 [+5.00e-05, +∞], one-sided "
        "p=0.0012, 100 items); worst item 12 at position 345; accuracy pass: non-inferior"
    )
    assert d.reasons == [f"m gsm8k tp8dcp8 vs tp8: token-drift: {item.reason}"]
    assert d.counts()["token-drift"] == 1 and d.warnings == []
    assert "[token level: token-drift (blocking)]" in summarize(d)


def test_warn_reports_a_warning_and_the_gate_passes() -> None:
    d = gate(policy(token_drift="warn"), ok_comparison(tokens=tokens()))
    assert (d.status, d.exit_code) == ("pass", 0)
    (item,) = d.items
    assert (item.outcome, item.blocks) == ("pass", False)
    (warning,) = d.warnings
    assert warning.startswith("m gsm8k tp8dcp8 vs tp8: token-level drift of run r (tp8dcp8)")
    assert warning.endswith("(not blocking: the policy has token_drift: warn)")
    text = summarize(d)
    assert f"WARNING: {warning}" in text and "[token level: token-drift (warning)]" in text
    assert d.to_dict()["warnings"] == [warning]


def test_off_ignores_a_token_drift_but_still_shows_the_verdict() -> None:
    d = gate(policy(token_drift="off"), ok_comparison(tokens=tokens()))
    assert (d.status, d.exit_code) == ("pass", 0) and d.warnings == []
    item = d.to_dict()["items"][0]
    assert item["outcome"] == "pass"
    assert item["tokens"]["action"] == "none" and item["tokens"]["verdict"] == "token-drift"


@pytest.mark.parametrize("setting", ["block", "warn", "off"])
def test_no_token_data_or_an_ok_verdict_never_fails(setting: str) -> None:
    p = policy(token_drift=setting)
    for t in (None, tokens("ok"), tokens("unknown")):
        d = gate(p, ok_comparison(tokens=t))
        assert (d.status, d.exit_code, d.warnings) == ("pass", 0, [])
    no_data = summarize(gate(p, ok_comparison()))
    # Said only where it matters: a blocking policy had nothing to block on.
    assert ("[token level: no token data]" in no_data) == (setting == "block")


def test_an_accuracy_drift_stays_a_drift_and_names_the_token_drift_too() -> None:
    c = dataclasses.replace(comparison(1000, wrong=100), tokens=tokens())
    (item,) = gate(policy(token_drift="block"), c).items
    assert item.outcome == "drift" and item.blocks
    assert "; also token-level drift of run r (tp8dcp8)" in item.reason


def test_the_decision_json_carries_the_token_verdict_and_figures() -> None:
    d = gate(policy(token_drift="block"), ok_comparison(tokens=tokens()))
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert data["policy"]["token_drift"] == "block"
    item = data["items"][0]
    assert list(item["tokens"]) == ["policy", "action", "verdict", "reason", "summary"]
    assert item["tokens"]["verdict"] == "token-drift" and item["tokens"]["action"] == "blocks"
    summary = item["tokens"]["summary"]
    assert (summary["run_id"], summary["baseline_id"], summary["period"]) == ("r", "b", 128)
    (decode,) = summary["paths"]
    assert decode["path"] == "decode" and decode["kl"]["mean"] == KL.mean
    assert decode["floor"]["ci_high"] is None  # +inf in the record
    assert summary["unavailable"] == {"forced": tokens().unavailable["forced"]}
    # No token data: the item says so; a missing run has no comparison, so no token entry.
    assert gate(policy(), ok_comparison()).to_dict()["items"][0]["tokens"]["verdict"] == (
        "no token data"
    )
    (req,) = policy().requirements
    missing = decide(policy(), [Prepared(req, missing="no run")], None, "latest", "t")
    assert missing.to_dict()["items"][0]["tokens"] is None


# --- JUnit and Markdown -------------------------------------------------------------------


def junit(d: GateDecision) -> ET.Element:
    return ET.fromstring(render_junit(d))


def test_junit_fails_a_blocked_token_drift_and_shows_a_warned_one() -> None:
    blocked = junit(gate(policy(token_drift="block"), ok_comparison(tokens=tokens())))
    (failure,) = blocked.findall(".//failure")
    assert failure.get("type") == "token-drift" and blocked.get("failures") == "1"
    props = {p.get("name"): p.get("value") for p in blocked.iter("property")}
    assert props["token_verdict"] == "token-drift" and props["token_action"] == "blocks"
    assert props["policy.token_drift"] == "block"

    warned = junit(gate(policy(), ok_comparison(tokens=tokens())))
    assert warned.findall(".//failure") == [] and warned.get("failures") == "0"
    case_out = warned.find(".//testcase/system-out")
    assert case_out is not None and "warning: token-level drift of run r" in (case_out.text or "")
    assert any(p.get("name") == "warning" for p in warned.iter("property"))


def test_markdown_shows_the_token_verdict_per_comparison() -> None:
    md = render_markdown(gate(policy(token_drift="block"), ok_comparison(tokens=tokens())))
    assert "token drift: block" in md and "| outcome | tokens |" in md
    row = next(x for x in md.splitlines() if x.startswith("| m |"))
    assert "| ❌ token drift | ❌ token drift |" in row
    warned = render_markdown(gate(policy(), ok_comparison(tokens=tokens())))
    assert "> ⚠️ **Token drift (not blocking):** m gsm8k tp8dcp8 vs tp8: token" in warned
    assert "⚠️ token drift (warning)" in warned
    none = render_markdown(gate(policy(), ok_comparison()))
    assert "| ✅ pass | no token data |" in none


def test_markdown_escapes_item_ids_from_the_data() -> None:
    kl = dataclasses.replace(KL, worst_item=EVIL)
    t = tokens(paths={"decode": decode_path(metrics={"kl": kl})})
    for setting in ("block", "warn"):
        md = render_markdown(gate(policy(token_drift=setting), ok_comparison(tokens=t)))
        assert "worst item" in md
        assert "<!--" not in md and "&lt;!--" in md
        assert "@org" not in md and "@\u200borg" in md
        assert "\\*x\\*" in md and "*x*" not in md.replace("\\*x\\*", "")
        assert "#12" not in md  # an issue reference GitHub would link
