"""Pairing runs with their baselines and comparing them, on a real SQLite store with
generated runs (the real-engine pair, tp2 against tp1, is in test_engine_e2e.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import run_config

from evalpipe import api
from evalpipe.compare.jsonout import to_json
from evalpipe.compare.pairing import find_baseline, pairing_key
from evalpipe.compare.runs import compare_runs
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run, RunConfig, Sample, new_run_id, utcnow
from evalpipe.store import Store, open_store

REQUIRED_KEYS = {
    "n",
    "both_correct",
    "only_run",
    "only_baseline",
    "both_wrong",
    "run_accuracy",
    "baseline_accuracy",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "mde",
    "agreement",
    "excluded",
    "verdict",
    "flips",
}


config = run_config


def add_run(
    store: Store,
    cfg: RunConfig,
    correct: list[bool | None],
    outputs: list[str] | None = None,
    status: str = "finished",
) -> Run:
    run = Run(
        run_id=new_run_id(), config=cfg, status=status, started_at=utcnow(), n_items=len(correct)
    )
    store.create_run(run)
    for i, ok in enumerate(correct):
        out = outputs[i] if outputs else f"answer {i} {'right' if ok else 'wrong'}"
        store.put_sample(
            Sample(
                run_id=run.run_id,
                item_id=str(i),
                prompt_hash=f"h{i}",
                output=None if ok is None else out,
                target="1",
                correct=ok,
                correct_by={} if ok is None else {"strict": ok},
                prompt_tokens=100 + 10 * i,
                error="HTTP 500: boom" if ok is None else None,
            )
        )
    finished = run.with_(**store.summarize(run.run_id))
    store.update_run(finished)
    return finished


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(str(tmp_path / "store.db"))
    yield s  # type: ignore[misc]
    s.close()


def test_auto_baseline_is_the_non_cp_twin_with_the_same_key(store: Store) -> None:
    base = add_run(store, config("dp2tp8"), [True] * 10)
    # Same layout but another engine version: must not be chosen.
    add_run(store, config("dp2tp8", engine_versions={"vllm": "0.33.0"}), [True] * 10)
    run = add_run(store, config("dp2tp8dcp8"), [True] * 10)
    assert find_baseline(store, run).run_id == base.run_id


def test_missing_baseline_says_which_config_and_how_to_make_it(store: Store) -> None:
    add_run(store, config("dp2tp8", concurrency=1), [True] * 5)
    run = add_run(store, config("dp2tp8dcp8", limit=5), [True] * 5)
    with pytest.raises(EvalpipeError) as err:
        find_baseline(store, run)
    msg = str(err.value)
    assert "no finished dp2tp8 baseline" in msg
    assert "differs in: concurrency: 256 vs 1" in msg
    assert "evalpipe run gsm8k --layout dp2tp8 --model /models/m" in msg and "--limit 5" in msg


def test_numeric_engine_args_are_part_of_the_key_layout_flags_are_not(store: Store) -> None:
    bf16 = add_run(
        store, config("tp1", engine_args={"tensor_parallel_size": 1, "enforce_eager": True}), [True]
    )
    tp2 = add_run(
        store,
        config(
            "tp2",
            engine_args={
                "tensor_parallel_size": 2,
                "enforce_eager": True,
                "distributed_executor_backend": "mp",
            },
        ),
        [True],
    )
    fp32 = add_run(
        store,
        config(
            "tp2",
            engine_args={"tensor_parallel_size": 2, "dtype": "float32", "enforce_eager": True},
        ),
        [True],
    )
    assert pairing_key(tp2) == pairing_key(bf16)
    assert pairing_key(fp32) != pairing_key(bf16)
    with pytest.raises(EvalpipeError) as err:
        find_baseline(store, fp32, "tp1")
    assert "--engine-arg dtype=float32" in str(err.value)


def test_batching_settings_are_part_of_the_key(store: Store) -> None:
    a = add_run(store, config("tp8", engine_args={"max_num_seqs": 64}), [True])
    b = add_run(store, config("tp8", engine_args={"max_num_seqs": 256}), [True])
    assert pairing_key(a) != pairing_key(b)


def test_non_cp_run_needs_an_explicit_baseline_layout(store: Store) -> None:
    add_run(store, config("tp1"), [True] * 3)
    run = add_run(store, config("tp2"), [True] * 3)
    with pytest.raises(EvalpipeError, match="--baseline-layout"):
        find_baseline(store, run)
    assert find_baseline(store, run, "tp1").config.layout == "tp1"


def test_table_flips_exclusions_and_agreement(store: Store) -> None:
    base_ok = [True, True, False, False, True, None, True]
    run_ok = [True, False, True, False, True, True, None]
    outs_b = ["same", "b1", "b2", "same2", "x", "e", "y"]
    outs_r = ["same", "r1", "r2", "same2", "x", "e", "y"]
    base = add_run(store, config("dp2tp8"), base_ok, outs_b)
    run = add_run(store, config("dp2tp8dcp8"), run_ok, outs_r)
    c = to_json(compare_runs(store, run, base))
    assert set(c) >= REQUIRED_KEYS
    assert (c["both_correct"], c["only_run"], c["only_baseline"], c["both_wrong"]) == (2, 1, 1, 1)
    assert c["n"] == 5 and c["excluded"] == 2 and c["excluded_by_reason"]["error"] == 2
    assert c["flips"] == {"correct_to_wrong": ["1"], "wrong_to_correct": ["2"]}
    assert c["agreement"] == pytest.approx(3 / 5)
    assert c["verdict"] == "inconclusive"  # n = 5 is below min_n
    ex = {e["item_id"]: e for e in c["flip_examples"]}
    assert ex["1"]["run_output"] == "r1" and ex["1"]["baseline_output"] == "b1"


def test_clear_drift_is_called_drift(store: Store) -> None:
    n = 1319
    base_ok = [i % 5 != 0 for i in range(n)]  # 80 % accuracy
    run_ok = [ok and i % 23 != 1 for i, ok in enumerate(base_ok)]  # ~3.5 points lost
    base = add_run(store, config("dp2tp8"), base_ok)
    run = add_run(store, config("dp2tp8dcp8"), run_ok)
    c = to_json(compare_runs(store, run, base))
    assert c["verdict"] == "drift"
    assert c["delta"] < -0.03 and c["ci_high"] < 0
    assert len(c["flips"]["correct_to_wrong"]) == c["only_baseline"] > 40


def test_identical_answers_on_a_big_set_are_ok(store: Store) -> None:
    ok = [i % 3 != 0 for i in range(1319)]
    base = add_run(store, config("dp2tp8"), ok)
    run = add_run(store, config("dp2tp8dcp8"), ok)
    c = to_json(compare_runs(store, run, base))
    assert c["verdict"] == "ok" and c["delta"] == 0 and c["agreement"] == 1.0


def test_different_prompts_refused_unless_forced(store: Store) -> None:
    base = add_run(store, config("dp2tp8", prompt_hash="lm-eval"), [True] * 3)
    run = add_run(store, config("dp2tp8dcp8"), [True] * 3)
    with pytest.raises(EvalpipeError, match="prompt_hash"):
        compare_runs(store, run, base)
    forced = compare_runs(store, run, base, force=True)
    assert any("prompt_hash" in w for w in forced.warnings)


def test_noise_floor_from_baseline_repeats(store: Store) -> None:
    n = 200
    a = [i % 2 == 0 for i in range(n)]
    b = [(not x) if i < 4 else x for i, x in enumerate(a)]  # 4 of 200 disagree: 2 %
    base = add_run(store, config("dp2tp8"), a)
    add_run(store, config("dp2tp8", repeat_index=1), b)
    run = add_run(store, config("dp2tp8dcp8"), a)
    c = to_json(compare_runs(store, run, base))
    assert c["noise_floor"] == pytest.approx(0.02)
    assert c["noise_repeats"] == 2


def test_several_runs_are_holm_adjusted(tmp_path: Path) -> None:
    url = str(tmp_path / "s.db")
    with open_store(url) as s:
        ok = [i % 4 != 0 for i in range(400)]
        add_run(s, config("dp2tp8"), ok)
        worse = [x and i % 40 != 1 for i, x in enumerate(ok)]
        r1 = add_run(s, config("dp2tp8dcp8"), worse)
        r2 = add_run(s, config("dp2tp8dcp2"), ok)
    single = api.compare(url, [r1.run_id])[0]
    both = api.compare(url, [r1.run_id, r2.run_id])
    assert both[0].result.p_adjusted >= single.result.p_value
    assert "Holm" in both[0].result.reason
    assert api.comparison_json(both[0])["p_adjusted"] == both[0].result.p_adjusted


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_compare_json_and_text(tmp_path: Path) -> None:
    url = str(tmp_path / "s.db")
    with open_store(url) as s:
        base = add_run(s, config("dp2tp8"), [True, False, True, True])
        run = add_run(
            s, config("dp2tp8dcp8"), [True, True, False, True], ["x", "y", "\x1b[31mevil", "z"]
        )
    out = cli("compare", run.run_id, "--store", url, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= REQUIRED_KEYS
    assert data["baseline_run_id"] == base.run_id
    assert 0 <= data["run_accuracy"] <= 1
    text = cli("compare", run.run_id, "--store", url)
    assert "verdict: ? INCONCLUSIVE" in text.stdout
    assert "\x1b" not in text.stdout and "\\x1b[31mevil" in text.stdout
    missing = cli("compare", "nope", "--store", url)
    assert missing.returncode == 1 and "no run" in missing.stderr.lower()


def test_cli_comment_dry_run_selects_the_prs_tagged_runs(tmp_path: Path) -> None:
    url = str(tmp_path / "s.db")
    with open_store(url) as s:
        add_run(s, config("dp2tp8"), [True] * 4)
        run = add_run(
            s,
            config("dp2tp8dcp8"),
            [True, True, False, True],
            ["a", "b", "@octocat <script>alert(1)</script>", "d"],
        )
        store_run = run.with_(tags=("pr-7",))
        s.update_run(store_run)
    out = cli("comment", "--repo", "o/r", "--pr", "7", "--store", url, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "<!-- evalpipe:sticky -->" in out.stdout
    assert "dp2tp8dcp8" in out.stdout
    assert "<script>" not in out.stdout and "@octocat" not in out.stdout
    none = cli("comment", "--repo", "o/r", "--pr", "8", "--store", url, "--dry-run")
    assert none.returncode == 1 and "pr-8" in none.stderr
