"""The release gate on a real SQLite store with generated runs: exit codes, JUnit, Markdown,
stored decisions, loosened-policy notices, tag selection, and the schema-2 migration."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import run_config

from evalpipe import api
from evalpipe.compare.core import Answer, compare_answers
from evalpipe.gate.decide import GateDecision, Prepared, decide
from evalpipe.gate.policy import Policy, parse_policy
from evalpipe.gate.select import evaluate_gate
from evalpipe.records import Run, RunConfig, Sample, new_run_id
from evalpipe.report.gate import render_junit, render_markdown
from evalpipe.store import Store, open_store
from evalpipe.store.schema import MIGRATIONS

N = 200
MODEL = "/models/DeepSeek-V3.2"


def config(layout: str, **changes: Any) -> RunConfig:
    return run_config(layout, **{"model": MODEL, "engine_args": {}, **changes})


_clock = iter(range(10_000))


def add_run(
    store: Store,
    layout: str,
    wrong: int = 0,
    errors: int = 0,
    tags: tuple[str, ...] = (),
    n: int = N,
    **changes: Any,
) -> Run:
    """A finished run of ``n`` items: the first ``wrong`` answered wrong, the next ``errors``
    failed with an infrastructure error, the rest right."""
    # Strictly increasing start times: "latest" must not depend on the wall clock's second.
    started = f"2026-01-01T00:{next(_clock) // 60:02d}:{next(_clock) % 60:02d}+00:00"
    run = Run(
        run_id=new_run_id(),
        config=config(layout, **changes),
        status="finished",
        started_at=started,
        n_items=n,
        tags=tags,
    )
    store.create_run(run)
    samples = []
    for i in range(n):
        error = "HTTP 500" if wrong <= i < wrong + errors else None
        ok = None if error else i >= wrong
        samples.append(
            Sample(
                run_id=run.run_id,
                item_id=str(i),
                prompt_hash=f"h{i}",
                output=None if error else f"answer {ok}",
                target="1",
                correct=ok,
                error=error,
            )
        )
    store.put_samples(samples)
    finished = run.with_(**store.summarize(run.run_id))
    store.update_run(finished)
    return finished


def policy(**changes: Any) -> Policy:
    data: dict[str, Any] = {
        "name": "release",
        "requirements": [
            {"model": "deepseek-v3.2", "task": "gsm8k", "layouts": ["dp2tp8dcp8", "tp8dcp8"]}
        ],
        # n = 200 cannot certify 1 point; 10 points keeps the synthetic stores small.
        "margin": 10.0,
        "alpha": 0.05,
        "min_n": 100,
    }
    data.update(changes)
    return parse_policy(data, "release.yaml")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "gate.db") as s:
        yield s


def full_store(store: Store, drift: bool = False) -> None:
    add_run(store, "dp2tp8")
    add_run(store, "tp8")
    add_run(store, "dp2tp8dcp8", wrong=60 if drift else 0)
    add_run(store, "tp8dcp8")


def outcomes(decision: GateDecision) -> dict[str, str]:
    return {i.requirement.layout: i.outcome for i in decision.items}


def junit(decision: GateDecision) -> ET.Element:
    return ET.fromstring(render_junit(decision))


def test_all_pass_exits_0_with_one_testcase_each(store: Store) -> None:
    full_store(store)
    d = evaluate_gate(store, policy())
    assert (d.status, d.exit_code) == ("pass", 0)
    assert outcomes(d) == {"dp2tp8dcp8": "pass", "tp8dcp8": "pass"}
    root = junit(d)
    cases = root.findall(".//testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("deepseek-v3.2.gsm8k", "dp2tp8dcp8 vs dp2tp8"),
        ("deepseek-v3.2.gsm8k", "tp8dcp8 vs tp8"),
    ]
    assert root.findall(".//failure") == [] and root.findall(".//error") == []
    assert root.get("tests") == "2" and root.get("failures") == "0"
    # Holm over the gate: both comparisons were adjusted together.
    assert all("Holm, 2 comparisons" in i.reason for i in d.items)


def test_a_drift_exits_1_and_is_a_junit_failure(store: Store) -> None:
    full_store(store, drift=True)
    d = evaluate_gate(store, policy())
    assert (d.status, d.exit_code) == ("fail", 1)
    assert outcomes(d) == {"dp2tp8dcp8": "drift", "tp8dcp8": "pass"}
    failures = junit(d).findall(".//testcase/failure")
    assert [f.get("type") for f in failures] == ["drift"]
    case = junit(d).find(".//testcase[@name='dp2tp8dcp8 vs dp2tp8']")
    assert case is not None and case.find("failure") is not None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["verdict"] == "drift" and float(props["delta"] or 0) == pytest.approx(-0.3)
    assert "delta -30.00 points" in (case.findtext("system-out") or "")


def test_inconclusive_blocks_or_not_as_the_policy_says(store: Store) -> None:
    full_store(store)
    blocking = evaluate_gate(store, policy(min_n=1000))
    assert (blocking.status, blocking.exit_code) == ("fail", 1)
    assert set(outcomes(blocking).values()) == {"inconclusive"}
    assert len(junit(blocking).findall(".//failure[@type='inconclusive']")) == 2
    lenient = evaluate_gate(store, policy(min_n=1000, inconclusive_blocks=False))
    assert (lenient.status, lenient.exit_code) == ("pass", 0)
    assert "not blocking" in lenient.items[0].reason
    assert junit(lenient).findall(".//failure") == []


def test_a_missing_baseline_is_incomplete_and_says_which(store: Store) -> None:
    add_run(store, "tp8")
    add_run(store, "dp2tp8dcp8")
    add_run(store, "tp8dcp8")
    d = evaluate_gate(store, policy())
    assert (d.status, d.exit_code) == ("incomplete", 2)
    assert outcomes(d) == {"dp2tp8dcp8": "missing", "tp8dcp8": "pass"}
    reason = d.items[0].reason
    assert reason.startswith("missing baseline: no finished dp2tp8 baseline pairs with run")
    errors = junit(d).findall(".//testcase/error")
    assert [e.get("type") for e in errors] == ["missing"]
    assert "no finished dp2tp8 baseline" in (errors[0].get("message") or "")


def test_a_missing_run_is_incomplete_and_says_how_to_make_it(store: Store) -> None:
    add_run(store, "dp2tp8")
    add_run(store, "tp8")
    add_run(store, "dp2tp8dcp8")
    add_run(store, "tp8dcp8", model="/models/Other")  # another model: does not count
    d = evaluate_gate(store, policy())
    assert (d.status, d.exit_code) == ("incomplete", 2)
    assert outcomes(d)["tp8dcp8"] == "missing"
    assert "missing run: no finished tp8dcp8 run of model 'deepseek-v3.2' on gsm8k" in (
        d.items[1].reason
    )
    assert "evalpipe run gsm8k --layout tp8dcp8" in d.items[1].reason


def test_a_failure_outranks_a_missing_run(store: Store) -> None:
    add_run(store, "dp2tp8")
    add_run(store, "dp2tp8dcp8", wrong=60)
    d = evaluate_gate(store, policy())
    assert outcomes(d) == {"dp2tp8dcp8": "drift", "tp8dcp8": "missing"}
    assert (d.status, d.exit_code) == ("fail", 1)


def test_an_infrastructure_error_rate_above_the_maximum_fails(store: Store) -> None:
    add_run(store, "dp2tp8")
    add_run(store, "tp8")
    add_run(store, "dp2tp8dcp8", errors=4)  # 2 % of items
    add_run(store, "tp8dcp8")
    d = evaluate_gate(store, policy())
    assert (d.status, d.exit_code) == ("fail", 1)
    assert outcomes(d)["dp2tp8dcp8"] == "failed"
    assert "infrastructure-error rate of 2.00% (4 of 200 items)" in d.items[0].reason
    assert d.items[0].error_rates["run"] == pytest.approx(0.02)
    assert [f.get("type") for f in junit(d).findall(".//failure")] == ["failed"]
    tolerant = evaluate_gate(store, policy(max_error_rate=0.05))
    assert (tolerant.status, tolerant.exit_code) == ("pass", 0)


def test_tag_selection_takes_the_tagged_runs_not_the_latest(store: Store) -> None:
    add_run(store, "dp2tp8", tags=("rc1",))
    add_run(store, "tp8", tags=("rc1",))
    good = add_run(store, "dp2tp8dcp8", tags=("rc1",))
    add_run(store, "tp8dcp8", tags=("rc1",))
    add_run(store, "dp2tp8dcp8", wrong=60)  # newer, untagged, drifting
    assert evaluate_gate(store, policy()).exit_code == 1
    d = evaluate_gate(store, policy(), tag="rc1")
    assert (d.status, d.selection) == ("pass", "tag:rc1")
    assert d.items[0].run_id == good.run_id
    missing = evaluate_gate(store, policy(), tag="rc2")
    assert missing.exit_code == 2 and "tagged 'rc2'" in missing.items[0].reason


def test_a_tagged_baseline_is_preferred_over_a_newer_untagged_one(store: Store) -> None:
    base = add_run(store, "dp2tp8", tags=("rc1",))
    add_run(store, "dp2tp8dcp8", tags=("rc1",))
    add_run(store, "dp2tp8")
    p = policy(
        requirements=[{"model": "deepseek-v3.2", "task": "gsm8k", "layouts": ["dp2tp8dcp8"]}]
    )
    assert evaluate_gate(store, p, tag="rc1").items[0].baseline_run_id == base.run_id


def test_decisions_are_stored_and_a_loosened_policy_is_reported(store: Store) -> None:
    full_store(store)
    first = evaluate_gate(store, policy())
    assert first.decision_id is not None and first.notices == ()
    stored = store.last_gate_decision(first.policy.scope_key)
    assert stored is not None and stored.decision_id == first.decision_id
    assert stored.policy_hash == first.policy_hash and stored.margin == 10.0
    assert stored.decision["status"] == "pass"

    second = evaluate_gate(store, policy(margin=20.0, alpha=0.1, inconclusive_blocks=False))
    old, new = first.policy_hash[:12], second.policy_hash[:12]
    since = f"since decision #{first.decision_id} on {first.decided_at} (policy hash {old}→{new})"
    assert second.notices == (
        f"margin loosened from 10 to 20 points {since}",
        f"alpha loosened from 0.05 to 0.1 {since}",
        f"inconclusive_blocks loosened from true to false {since}",
    )
    assert second.to_dict()["notices"] == list(second.notices)
    assert "margin loosened from 10 to 20 points" in render_markdown(second)
    root = junit(second)
    assert any("margin loosened" in (p.get("value") or "") for p in root.iter("property"))
    assert all("margin loosened" in (c.findtext("system-out") or "") for c in root.iter("testcase"))

    # Tightening is not a notice; the comparison is always with the previous decision.
    third = evaluate_gate(store, policy(margin=5.0, min_n=50, max_error_rate=0.5))
    assert [n.split(" since")[0] for n in third.notices] == [
        "min_n loosened from 100 to 50",
        "max_error_rate loosened from 0 to 0.5",
    ]
    # Another scope (other requirements) has its own history.
    other = policy(requirements=[{"model": "x", "task": "gsm8k", "layouts": ["tp8dcp8"]}])
    assert evaluate_gate(store, other, record=False).notices == ()


def test_markdown_escapes_policy_and_run_text(store: Store) -> None:
    add_run(store, "dp2tp8", model="/m/@evil_*model*")
    add_run(store, "dp2tp8dcp8", model="/m/@evil_*model*")
    req = {"model": "@evil_*model*", "task": "gsm8k", "layouts": ["dp2tp8dcp8"]}
    d = evaluate_gate(store, policy(name="<!-- x --> @org/team", requirements=[req]))
    md = render_markdown(d)
    assert "<!--" not in md and "@org" not in md and "@\u200borg" in md
    assert "\\*model\\*" in md
    assert md.count("\n| ") == 2  # header and one row (plus the separator line)


def test_junit_survives_characters_xml_cannot_hold(store: Store) -> None:
    add_run(store, "dp2tp8")
    req = {"model": "m\x01x", "task": "gsm8k", "layouts": ["dp2tp8dcp8"]}
    d = evaluate_gate(store, policy(requirements=[req]), record=False)
    assert junit(d).find(".//testcase") is not None


def test_json_has_items_counts_and_reasons(store: Store) -> None:
    full_store(store, drift=True)
    data = evaluate_gate(store, policy()).to_dict()
    assert data["status"] == "fail" and data["exit_code"] == 1
    assert data["counts"] == {
        "pass": 1,
        "drift": 1,
        "inconclusive": 0,
        "failed": 0,
        "missing": 0,
        "token-drift": 0,
    }
    assert data["reasons"][0].startswith("deepseek-v3.2 gsm8k dp2tp8dcp8 vs dp2tp8: drift")
    assert data["items"][0]["comparison"]["verdict"] == "drift"
    assert "flip_examples" not in data["items"][0]["comparison"]


def test_a_schema_1_store_gets_the_gate_table_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with open_store(path) as s:
        add_run(s, "dp2tp8")
    # Make it what evalpipe with schema 1 wrote: no gate, trace or holder table, version 1,
    # one history row.
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE gate_decisions")
        conn.execute("DROP TABLE token_traces")
        conn.execute("DROP TABLE run_holders")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
        conn.execute("DELETE FROM migrations")
        conn.execute("INSERT INTO migrations VALUES ('create_schema_1', '2026-01-01T00:00:00')")
    conn.close()
    with open_store(path) as s:
        # Every later migration runs too; the gate table is the first.
        assert s.migrations_applied == [m.name for m in MIGRATIONS]
        assert s.migrations_applied[0] == "m002_gate_decisions"
        assert len(s.list_runs()) == 1
        assert s.last_gate_decision("nothing") is None
        full_store(s)
        d = evaluate_gate(s, policy())
        assert d.decision_id == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(MIGRATIONS[-1].version),
        )
        assert conn.execute("SELECT status, margin FROM gate_decisions").fetchall() == [
            ("pass", 10.0)
        ]
        names = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
    assert names == ["create_schema_1", *(m.name for m in MIGRATIONS)]
    conn.close()


def test_the_rule_is_pure_on_literal_prepared_requirements() -> None:
    # No store: one requirement missing, one compared on four literal answers.
    p = policy(min_n=3)
    missing, compared = p.requirements
    run, base = (Run(run_id=rid, config=config(layout), status="finished", started_at="")
                 for rid, layout in (("r", "tp8dcp8"), ("b", "tp8")))  # fmt: skip
    answers = {str(i): Answer(str(i), ok=True, correct=i != 0, output=str(i)) for i in range(4)}
    c = compare_answers(run, base, answers, answers)
    d = decide(
        p,
        [Prepared(missing, missing="missing run: none"), Prepared(compared, run, base,
                                                                  comparison=c)],
        previous=None,
        selection="latest",
        decided_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    assert (d.status, d.exit_code) == ("fail", 1)  # inconclusive blocks by default
    assert [i.outcome for i in d.items] == ["missing", "inconclusive"]
    summary = d.items[1].comparison
    assert summary is not None and math.isinf(summary.result.mde)
    stored = d.to_dict()["items"][1]["comparison"]
    assert list(stored) == ["n", "run_accuracy", "baseline_accuracy", "delta", "ci_low",
                            "ci_high", "p_value", "p_adjusted", "noninferiority_p_adjusted",
                            "mde", "margin", "alpha", "min_n", "verdict", "reason", "excluded",
                            "agreement", "noise_floor", "warnings"]  # fmt: skip
    assert stored["mde"] is None and stored["n"] == 4 and stored["agreement"] == 1.0


POLICY_YAML = """\
name: release
requirements:
  - model: deepseek-v3.2
    task: gsm8k
    layouts: [dp2tp8dcp8, tp8dcp8]
margin: 10.0
alpha: 0.05
"""


def test_the_api_and_the_cli_gate_write_reports_and_exit_with_the_status(tmp_path: Path) -> None:
    path = tmp_path / "gate.db"
    with open_store(path) as s:
        full_store(s, drift=True)
    release = tmp_path / "release.yaml"
    release.write_text(POLICY_YAML)
    xml, md = tmp_path / "gate.xml", tmp_path / "gate.md"
    d = api.gate(str(path), release, junit=xml, markdown=md, record=False)
    assert (d.status, d.exit_code) == ("fail", 1)
    assert ET.parse(xml).getroot().get("failures") == "1" and "❌ drift" in md.read_text()
    assert api.format_gate(d).startswith("gate release: FAIL (exit 1); latest runs")

    def gate(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "evalpipe", "gate", "--store", str(path), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    proc = gate("--policy", str(release), "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["items"] == api.gate_json(d)["items"]
    bad = gate("--policy", str(tmp_path / "nope.yaml"))
    assert bad.returncode == 3 and "nope.yaml" in bad.stderr


def test_a_faulted_run_never_counts_as_a_release_run_and_the_gate_says_so(store: Store) -> None:
    """A canary run (an injected fault) is the newest on its layout: the gate passes over it
    and, with no clean run left, names it as refused in the missing-run message."""
    fault = "key-scale:size=0.2,period=128,offset=127,width=1,threshold=0,target=k"
    add_run(store, "dp2tp8")
    add_run(store, "tp8")
    add_run(store, "tp8dcp8")
    canary = add_run(store, "dp2tp8dcp8", fault=fault)
    d = evaluate_gate(store, policy())
    assert outcomes(d)["dp2tp8dcp8"] == "missing" and d.exit_code == 2
    text = next(i for i in d.items if i.requirement.layout == "dp2tp8dcp8").reason
    assert canary.run_id in text and fault in text and "never counts as a release run" in text
    # A clean run of the layout, even an older one, is what the gate judges.
    clean = add_run(store, "dp2tp8dcp8")
    add_run(store, "dp2tp8dcp8", fault=fault)  # the newest again
    d = evaluate_gate(store, policy())
    item = next(i for i in d.items if i.requirement.layout == "dp2tp8dcp8")
    assert item.outcome == "pass" and item.run_id == clean.run_id


def test_a_faulted_run_is_never_a_baseline(store: Store) -> None:
    fault = "out-mix:size=0.1,period=8,offset=7,width=1,threshold=0"
    clean = add_run(store, "dp2tp8")
    add_run(store, "dp2tp8", fault=fault)  # newer, same configuration otherwise
    add_run(store, "tp8")
    add_run(store, "tp8dcp8")
    add_run(store, "dp2tp8dcp8")
    d = evaluate_gate(store, policy())
    item = next(i for i in d.items if i.requirement.layout == "dp2tp8dcp8")
    assert item.baseline_run_id == clean.run_id
