"""The gate on token verdicts the production code computes: runs and token traces in a real
SQLite store, the noise floor from the baseline's stored repeat, τ from the default, a given
``token_margin`` or a reference pair (``token_reference``). With the defaults a benign pair
passes and a gross fault fails; no hand-made floor or bound anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from builders import run_config
from token_fixtures import kl_pair

from evalpipe.gate.policy import parse_policy
from evalpipe.gate.select import evaluate_gate
from evalpipe.records import Run, Sample
from evalpipe.store import Store, open_store
from evalpipe.store.traces import put_traces
from evalpipe.traces import DECODE

ITEMS = 60
BENIGN, GROSS = 4.7e-4, 1.2e-2  # tp2 vs tp1 and a key-scaling fault of ε = 0.2 (issue 19)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "gate.db") as s:
        yield s


def _run(store: Store, run_id: str, layout: str, when: str, **config: object) -> Run:
    run = Run(
        run_id,
        run_config(layout, **config),  # type: ignore[arg-type]
        "finished",
        when,
        n_items=ITEMS,
        n_samples=ITEMS,
        n_correct=ITEMS,
    )
    store.create_run(run)
    store.put_samples(
        Sample(run_id, str(i), "p", "The answer is 1", "1", True, prompt_tokens=800)
        for i in range(ITEMS)
    )
    return run


def _length(item: int) -> int:
    return 50 + (37 * item) % 200


def _traces(store: Store, run: Run, mean: float, seed: int) -> None:
    """``run``'s decode traces: against the baseline's, heavy-tailed per-position KL of
    ``mean`` (the same token ids, so every position is compared)."""
    rng = np.random.default_rng(seed)
    traces = []
    for i in range(ITEMS):
        kl = np.minimum(mean * rng.lognormal(-1.62, 1.8, _length(i)), 1.5)
        traces.append(kl_pair(kl, str(i), 800, ("-", run.run_id), DECODE)[1])
    put_traces(store, traces)


def _store(store: Store, layout: str, mean: float, reference: float | None = None) -> None:
    """A tp1 baseline and its bitwise-identical repeat, and a run on ``layout`` of KL
    ``mean``; with ``reference``, also a tp2 run of that KL (a known-benign change)."""
    for run_id, when, repeat in (("base", "00:00", 0), ("rep", "00:01", 1)):
        _run(store, run_id, "tp1", f"2026-01-01T{when}:00+00:00", repeat_index=repeat)
        _traces(store, Run(run_id, run_config("tp1"), "finished", ""), 0.0, seed=0)
    run = _run(store, "cand", layout, "2026-01-01T00:02:00+00:00")
    _traces(store, run, mean, seed=1)
    if reference is not None:
        ref = _run(store, "ref", "tp2", "2026-01-01T00:03:00+00:00")
        _traces(store, ref, reference, seed=2)


def policy(**extra: object) -> object:
    return parse_policy(
        {
            "name": "release",
            "requirements": [{"model": "m", "task": "gsm8k", "layouts": ["dcp2"]}],
            "margin": 1.0,
            "alpha": 0.05,
            "min_n": 10,
            "inconclusive_blocks": False,  # 60 identical answers cannot show non-inferiority
            **extra,
        },
        "release.yaml",
    )


def decide(store: Store, **extra: object):  # type: ignore[no-untyped-def]
    decision = evaluate_gate(store, policy(**extra), record=False)  # type: ignore[arg-type]
    (item,) = decision.items
    assert item.token is not None and item.token.summary is not None
    (path,) = item.token.summary.paths
    return decision, item, path


def test_a_benign_pair_passes_with_the_defaults(store: Store) -> None:
    _store(store, "dcp2", BENIGN)
    decision, _, path = decide(store)
    assert (decision.status, decision.exit_code) == ("pass", 0), decision.reasons
    assert path.verdict == "ok" and path.excess is not None
    assert path.excess.floor_mean == 0.0  # the repeat's traces, read by the gate
    assert path.excess.ci_high < 2e-3 and path.tolerance is not None
    assert path.tolerance.source == "default"


def test_a_gross_fault_fails_with_the_defaults(store: Store) -> None:
    _store(store, "dcp2", GROSS)
    decision, item, path = decide(store)
    assert (decision.status, decision.exit_code) == ("fail", 1), decision.reasons
    assert item.outcome == "token-drift" and item.token is not None
    assert item.token.action == "blocks" and path.verdict == "token-drift"
    assert path.excess is not None and path.excess.ci_low > 2e-3
    assert "is above τ = 2.00e-03 (default)" in item.reason


def test_a_given_margin_and_a_warn_policy(store: Store) -> None:
    _store(store, "dcp2", GROSS)
    loose = decide(store, token_margin=0.5)
    assert loose[0].status == "pass" and loose[2].verdict == "ok"
    assert loose[2].tolerance.tau == 0.5 and loose[2].tolerance.source == "given"
    warned = decide(store, token_drift="warn")
    assert warned[0].status == "pass" and warned[0].warnings


def test_a_relative_margin_reads_the_reference_pair_of_the_same_model_and_task(
    store: Store,
) -> None:
    _store(store, "dcp2", GROSS, reference=BENIGN)
    ref = {"layout": "tp2", "baseline_layout": "tp1", "factor": 3}
    decision, _, path = decide(store, token_reference=ref)
    assert decision.status == "fail" and path.verdict == "token-drift"
    assert path.tolerance is not None and path.tolerance.source.startswith("3 × ")
    assert "the 95% upper bound of tp2 run ref vs tp1 run " in path.tolerance.source
    assert 3 * BENIGN < path.tolerance.tau < 3 * 2 * BENIGN


def test_a_missing_reference_pair_is_no_tolerance_and_says_how_to_make_it(store: Store) -> None:
    _store(store, "dcp2", GROSS)
    ref = {"layout": "tp2", "baseline_layout": "tp1", "factor": 3}
    decision, _, path = decide(store, token_reference=ref)
    assert path.verdict == "inconclusive" and decision.status == "pass"
    assert "no τ: the reference pair tp2 vs tp1 has no tp2 run of model 'm' on gsm8k" in (
        path.reason
    )
    assert "evalpipe run gsm8k --layout tp2 --model MODEL --logprobs 5" in path.reason
