"""Stored traces to a token-level comparison: which paths, which floor, and why a path is
not compared (the side that lacks it, different models)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from builders import run_config

from evalpipe.compare.runs import compare_runs
from evalpipe.compare.tokens.runs import token_comparison
from evalpipe.compare.tokens.verdict import TokenMargin
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run, Sample
from evalpipe.store import Store, open_store
from evalpipe.store.traces import put_traces
from evalpipe.traces import DECODE, StoredTrace, TokenTrace, trace_of


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "s.db") as s:
        yield s


def _run(store: Store, run_id: str, layout: str, **config: object) -> Run:
    run = Run(run_id, run_config(layout, **config), "finished", "2026-11-30T00:00:00+00:00")  # type: ignore[arg-type]
    store.create_run(run)
    store.put_samples(
        Sample(run_id, str(i), "p", "The answer is 1", "1", True, prompt_tokens=100)
        for i in range(6)
    )
    return run


def _trace(shift: float, ids: list[int] | None = None) -> TokenTrace:
    ids = ids or [5, 6, 7, 8]
    tops = [[(t, -0.1 - shift), (t + 1, -2.5 + shift)] for t in ids]
    return trace_of(ids, [-0.1 - shift] * len(ids), tops, 2)


def _store(store: Store, run: Run, source: str, shift: float, rng: np.random.Generator) -> None:
    put_traces(
        store,
        [
            StoredTrace(run.run_id, str(i), source, 100, _trace(shift * rng.uniform(0.5, 1.5)))
            for i in range(6)
        ],
    )


def test_decode_path_with_the_repeat_as_floor_and_forced_path_named_missing(
    store: Store,
) -> None:
    rng = np.random.default_rng(0)
    base = _run(store, "base", "tp1")
    repeat = _run(store, "rep", "tp1", repeat_index=1)
    run = _run(store, "cp", "tp2")
    _store(store, base, DECODE, 0.0, rng)
    _store(store, repeat, DECODE, 0.0, rng)
    _store(store, run, DECODE, 0.3, rng)
    found = token_comparison(store, run, base, floor_runs=[base, repeat])
    assert found is not None and set(found.paths) == {"decode"}
    decode = found.paths["decode"]
    assert decode.n_items == 6 and decode.greedy_agreement == 1.0
    assert decode.excess is not None and decode.excess.n_items == 6
    assert decode.excess.floor_mean == 0.0  # the repeat is bitwise identical: floor 0
    assert decode.verdict == "token-drift" and found.verdict == "token-drift"
    assert (
        decode.reason.startswith("KL over the floor ") and "is above τ = 2.00e-03" in decode.reason
    )
    assert decode.metrics["abs_dlogprob"].mean > 0.1
    assert "score cp --against base" in found.unavailable["forced"]
    assert (
        "tp2 run cp" in found.unavailable["forced"]
        and "tp1 run base" in found.unavailable["forced"]
    )


def test_the_forced_path_reads_traces_of_the_baselines_tokens(store: Store) -> None:
    rng = np.random.default_rng(1)
    base, run = _run(store, "base", "tp1"), _run(store, "cp", "tp2")
    _store(store, base, "base", 0.0, rng)  # the baseline scoring its own tokens
    _store(store, run, "base", 0.0, rng)  # the run scoring the baseline's tokens
    found = token_comparison(store, run, base)
    assert found is not None and set(found.paths) == {"forced"}
    assert found.paths["forced"].metrics["kl"].mean == 0.0
    forced = found.paths["forced"]
    assert forced.verdict == "inconclusive"  # 6 items: too few for any verdict
    assert "6 items < 10: too few for a token verdict" in forced.reason
    assert "no baseline repeat to set the noise floor: run the baseline with --repeat 2" in (
        forced.reason
    )
    assert "rerun them with --logprobs 5" in found.unavailable["decode"]


def test_no_traces_no_token_comparison_and_different_models_never_compared(
    store: Store,
) -> None:
    base, run = _run(store, "base", "tp1"), _run(store, "cp", "tp2")
    assert token_comparison(store, run, base) is None
    assert compare_runs(store, run, base).tokens is None
    other = _run(store, "other", "tp2", model_fingerprint="sha256:def")
    _store(store, base, DECODE, 0.0, np.random.default_rng(2))
    _store(store, other, DECODE, 0.0, np.random.default_rng(2))
    found = token_comparison(store, other, base)
    assert found is not None and found.paths == {}
    assert "never compared" in found.unavailable["decode"]
    assert compare_runs(store, run, base, tokens=False).tokens is None
    attached = compare_runs(store, run, base).tokens
    assert attached is not None and "cp" in attached.unavailable["decode"]


def _items(store: Store, run: Run, shift: float, n: int = 12, source: str = DECODE) -> None:
    rng = np.random.default_rng(len(run.run_id) + int(shift * 1000))
    put_traces(
        store,
        [
            StoredTrace(run.run_id, str(i), source, 100, _trace(shift * rng.uniform(0.5, 1.5)))
            for i in range(n)
        ],
    )


def test_a_relative_margin_reads_the_reference_pair_and_both_paths_are_holm_adjusted(
    store: Store,
) -> None:
    base, repeat = _run(store, "base", "tp1"), _run(store, "rep", "tp1", repeat_index=1)
    run, ref = _run(store, "cp", "dcp2"), _run(store, "tp2", "tp2")
    for r, shift in ((base, 0.0), (repeat, 0.0), (run, 0.02), (ref, 0.01)):
        _items(store, r, shift)
        _items(store, r, shift, source="base")
    tight = compare_runs(store, run, base).tokens
    assert tight is not None and tight.paths["decode"].verdict == "token-drift"
    assert {p.decision.comparisons for p in tight.paths.values() if p.decision} == {2}
    margin = TokenMargin(factor=3.0, given=True)
    relative = compare_runs(store, run, base, token_margin=margin, token_reference=(ref, base))
    assert relative.tokens is not None
    decision = relative.tokens.paths["decode"].decision
    assert decision is not None
    bound = token_comparison(store, ref, base, floor_runs=[repeat]).paths["decode"].excess  # type: ignore[union-attr]
    assert bound is not None and decision.tolerance.tau == pytest.approx(3 * bound.ci_high)
    assert decision.tolerance.source.startswith("3 × ") and "tp2 run tp2 vs tp1 run base" in (
        decision.tolerance.source
    )


def test_a_reference_pair_of_another_model_or_task_is_refused_by_name(store: Store) -> None:
    base, run = _run(store, "base", "tp1"), _run(store, "cp", "tp2")
    other_model = _run(store, "om", "tp2", model="other/model", model_fingerprint="sha256:x")
    other_task = _run(store, "ot", "tp2", task="arith")
    margin = TokenMargin(factor=2.0, given=True)
    for ref in (other_model, other_task):
        with pytest.raises(EvalpipeError) as info:
            compare_runs(store, run, base, token_margin=margin, token_reference=(ref, base))
        assert info.value.exit_code == 2
        assert f"the reference pair tp2 run {ref.run_id} vs tp1 run base is of model" in (
            info.value.message
        )
    missing = compare_runs(
        store, run, base, token_margin=margin, token_reference="no tp2 run to refer to"
    )
    assert missing.tokens is None  # no traces at all: nothing to decide


def test_token_margin_flags_of_compare(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evalpipe.cli import main

    base, repeat = _run(store, "base", "tp1"), _run(store, "rep", "tp1", repeat_index=1)
    run, ref = _run(store, "cp", "dcp2"), _run(store, "tp2", "tp2")
    for r, shift in ((base, 0.0), (repeat, 0.0), (run, 0.02), (ref, 0.01)):
        _items(store, r, shift)
    where = ["--store", str(tmp_path / "s.db")]
    for bad, why in (
        (["--token-margin", "-1"], "--token-margin: τ must be a positive finite number"),
        (["--token-margin", "nan"], "--token-margin: τ must be a positive finite number"),
        (["--token-margin", "fast"], "--token-margin: τ must be a number in nats/token"),
        (["--token-margin", "3x"], "--token-reference RUN[:BASELINE] go together"),
        (["--token-reference", "tp2"], "--token-reference is read only with a relative"),
    ):
        assert main(["compare", "cp", "--baseline", "base", *bad, *where]) == 2
        assert why in capsys.readouterr().err
    code = main(
        [
            "compare",
            "cp",
            "--baseline",
            "base",
            "--token-margin",
            "3x",
            "--token-reference",
            "tp2:base",
            "--json",
            *where,
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    tolerance = data["tokens"]["paths"]["decode"]["decision"]["tolerance"]
    assert (
        tolerance["source"].startswith("3 × ")
        and "tp2 run tp2 vs tp1 run base" in (tolerance["source"])
    )
    assert (
        main(["compare", "cp", "--baseline", "base", "--token-margin", "decode=0.5", *where]) == 0
    )
    assert "τ = 5.00e-01 (given)" in capsys.readouterr().out
