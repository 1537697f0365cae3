"""The policy's ``token_drift: block | warn | off`` and ``token_margin``/``token_reference``:
parsing, the policy hash, loosening, the decision and its exit code, and the token verdict in
the JSON, summary, JUnit and Markdown gate reports (pure: literal comparisons with hand-made
token-level results; the gate on real verdicts is in test_token_gate_floors.py)."""

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
"""examples/release.yaml's hash as computed before ``token_drift`` existed (it meant warn)."""

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


def test_token_drift_defaults_to_block_and_takes_block_warn_off() -> None:
    assert policy().token_drift == "block"
    for value in ("block", "warn", "off"):
        assert policy(token_drift=value).token_drift == value


def test_a_bare_yaml_off_is_off_and_on_is_refused(tmp_path: Path) -> None:
    text = (REPO / "examples" / "release.yaml").read_text(encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("token_drift: block", "token_drift: off"), encoding="utf-8")
    assert load_policy(path).token_drift == "off"  # YAML 1.1 reads it as false
    path.write_text(text.replace("token_drift: block", "token_drift: on"), encoding="utf-8")
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


def test_a_policy_hashes_by_what_it_means(tmp_path: Path) -> None:
    text = (REPO / "examples" / "release.yaml").read_text(encoding="utf-8")
    example = load_policy(REPO / "examples" / "release.yaml")
    assert example.token_drift == "block"  # the example states the default
    # Stating warn means what every policy meant before the key existed: the same hash.
    warned = tmp_path / "warn.yaml"
    warned.write_text(text.replace("token_drift: block", "token_drift: warn"), encoding="utf-8")
    assert load_policy(warned).content_hash == RELEASE_HASH
    assert "token_drift" not in load_policy(warned).to_dict()
    # Without the key a policy now blocks, and hashes as one that says so.
    bare = tmp_path / "bare.yaml"
    bare.write_text(text.replace("token_drift: block", ""), encoding="utf-8")
    assert load_policy(bare).content_hash == example.content_hash != RELEASE_HASH
    assert example.to_dict()["token_drift"] == "block"
    assert policy(token_drift="block").content_hash == policy().content_hash
    assert policy(token_drift="warn").scope_key == policy().scope_key  # gated differently
    # τ enters the hash only when given; any given τ, or a reference, changes it.
    assert "token_margin" not in policy().to_dict()
    given = policy(token_margin=0.002)
    assert given.to_dict()["token_margin"] == {"decode": 0.002, "forced": 0.002}
    assert given.content_hash != policy().content_hash
    ref = policy(token_reference={"layout": "tp2", "baseline_layout": "tp1", "factor": 3})
    assert ref.to_dict()["token_reference"] == {
        "layout": "tp2",
        "baseline_layout": "tp1",
        "factor": 3.0,
    }


@pytest.mark.parametrize(
    "value,message",
    [
        (-0.001, "token_margin: τ must be a positive finite number, got -0.001"),
        (0, "token_margin: τ must be a positive finite number, got 0"),
        (float("nan"), "token_margin: τ must be a positive finite number, got nan"),
        (True, "token_margin: τ must be a number, got True"),
        ({"decode": -1}, "token_margin: τ of decode must be a positive finite number, got -1"),
        ({"prefill": 0.1}, "token_margin: give τ per path as decode=X,forced=Y"),
        ("3x", "token_margin: must be a number or {decode: X, forced: Y} in nats/token"),
    ],
)
def test_a_bad_token_margin_is_a_policy_error(value: object, message: str) -> None:
    with pytest.raises(EvalpipeError) as info:
        policy(token_margin=value)
    assert info.value.exit_code == 3
    assert info.value.message.startswith(f"bad policy release.yaml: {message}")


def test_token_margin_per_path_and_a_reference_pair() -> None:
    per_path = policy(token_margin={"decode": 0.003}).token_margin
    assert (per_path.decode, per_path.forced, per_path.given) == (0.003, 0.002, True)
    ref = policy(token_reference={"layout": "TP2", "baseline_layout": "tp1", "factor": 2.5})
    assert ref.token_reference is not None and ref.token_reference.layout == "tp2"
    assert ref.tokens_margin().factor == 2.5
    for bad, why in (
        ({"layout": "tp2", "baseline_layout": "tp1"}, "token_reference.factor: required"),
        ({"layout": "tp2", "baseline_layout": "tp2", "factor": 2}, "compared with itself"),
        ({"layout": "tp2", "baseline_layout": "tp1", "factor": -1}, "must be above 0"),
        ({"layout": "tp2", "baseline_layout": "tp1", "factor": 2, "of": 1}, "unknown key"),
    ):
        with pytest.raises(EvalpipeError) as info:
            policy(token_reference=bad)
        assert info.value.exit_code == 3 and why in info.value.message
    with pytest.raises(EvalpipeError) as info:
        policy(token_margin=0.002, token_reference={"layout": "tp2", "baseline_layout": "tp1"})
    assert "token_margin and token_reference: give one" in info.value.message


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


def test_a_laxer_token_drift_or_a_larger_token_margin_is_a_loosening_notice() -> None:
    blocked = previous({"token_drift": "block"})
    (notice,) = loosening_notices(blocked, policy(token_drift="warn"))
    assert notice.startswith("token_drift loosened from block to warn since decision #7")
    # A stored policy without the key ran under warn (it predates the key, or stated warn).
    (notice,) = loosening_notices(previous({}), policy(token_drift="off"))
    assert notice.startswith("token_drift loosened from warn to off")
    assert loosening_notices(previous({}), policy()) == []
    assert loosening_notices(blocked, policy()) == []
    (notice,) = loosening_notices(blocked, policy(token_margin={"forced": 0.01}))
    assert notice.startswith("token_margin of the forced path loosened from 0.002 to 0.01")
    tight = previous({"token_drift": "block", "token_margin": {"decode": 1e-3, "forced": 1e-3}})
    assert len(loosening_notices(tight, policy())) == 2  # both back to the default 0.002
    ref = {"layout": "tp2", "baseline_layout": "tp1", "factor": 2}
    relative = previous({"token_drift": "block", "token_reference": ref})
    (notice,) = loosening_notices(relative, policy(token_reference={**ref, "factor": 4}))
    assert notice.startswith("token_reference.factor loosened from 2 to 4")
    assert loosening_notices(relative, policy()) == []  # relative to absolute: not comparable


# --- the decision -------------------------------------------------------------------------


def test_block_fails_the_gate_naming_the_pair_and_the_figures() -> None:
    d = gate(policy(token_drift="block"), ok_comparison(tokens=tokens()))
    assert (d.status, d.exit_code) == ("fail", 1)
    (item,) = d.items
    assert (item.outcome, item.blocks) == ("token-drift", True)
    # The figures are the verdict's own, re-decided by the gate (Holm over its paths): per
    # token throughout, each interval with its level, the broken item named with where.
    assert item.reason.startswith(
        "token-level drift of run r (tp8dcp8) against baseline b (tp8): decode: KL over the "
        "floor 7.84e-05 [5.00e-05, ∞] (95%) on 100 items is above τ = 2.00e-05 (given); item "
        "12 is broken: typical KL 3.00e-03 (mean 7.00e-03) over 80 tokens from position 340, "
        "above τ (p = 0.0004, Bonferroni over 98 items); worst position: item 12 at 345; "
        "accuracy pass: non-inferior"
    )
    assert d.reasons == [f"m gsm8k tp8dcp8 vs tp8: token-drift: {item.reason}"]
    assert d.counts()["token-drift"] == 1 and d.warnings == []
    assert "[token level: token-drift (blocking)]" in summarize(d)


def test_warn_reports_a_warning_and_the_gate_passes() -> None:
    d = gate(policy(token_drift="warn"), ok_comparison(tokens=tokens()))
    assert (d.status, d.exit_code) == ("pass", 0)
    assert gate(policy(), ok_comparison(tokens=tokens())).status == "fail"  # block by default
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
    for t in (None, tokens("ok"), tokens("inconclusive")):
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
    assert decode["excess"]["ci_high"] is None  # +inf in the record
    assert decode["excess"]["level"] == 0.95 and decode["excess"]["item_values"] == []
    assert decode["tolerance"] == {"tau": 2e-5, "source": "given"}
    assert decode["tail"]["worst_item"] == "12" and decode["tail"]["first_bad_position"] == 340
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

    warned = junit(gate(policy(token_drift="warn"), ok_comparison(tokens=tokens())))
    assert warned.findall(".//failure") == [] and warned.get("failures") == "0"
    case_out = warned.find(".//testcase/system-out")
    assert case_out is not None and "warning: token-level drift of run r" in (case_out.text or "")
    assert any(p.get("name") == "warning" for p in warned.iter("property"))


def test_markdown_shows_the_token_verdict_per_comparison() -> None:
    md = render_markdown(gate(policy(token_drift="block"), ok_comparison(tokens=tokens())))
    assert "token drift: block" in md and "| outcome | tokens |" in md
    row = next(x for x in md.splitlines() if x.startswith("| m |"))
    assert "| ❌ token drift | ❌ token drift |" in row
    warned = render_markdown(gate(policy(token_drift="warn"), ok_comparison(tokens=tokens())))
    assert "> ⚠️ **Token drift (not blocking):** m gsm8k tp8dcp8 vs tp8: token" in warned
    assert "⚠️ token drift (warning)" in warned
    none = render_markdown(gate(policy(), ok_comparison()))
    assert "| ✅ pass | no token data |" in none


def test_markdown_escapes_item_ids_from_the_data() -> None:
    kl = dataclasses.replace(KL, worst_item=EVIL)
    t = tokens(paths={"decode": decode_path(metrics={"kl": kl})})
    for setting in ("block", "warn"):
        md = render_markdown(gate(policy(token_drift=setting), ok_comparison(tokens=t)))
        assert "worst position: item" in md
        assert "<!--" not in md and "&lt;!--" in md
        assert "@org" not in md and "@\u200borg" in md
        assert "\\*x\\*" in md and "*x*" not in md.replace("\\*x\\*", "")
        assert "#12" not in md  # an issue reference GitHub would link
