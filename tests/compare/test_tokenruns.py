"""Stored traces to a token-level comparison: which paths, which floor, and why a path is
not compared (the side that lacks it, different models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from builders import run_config

from evalpipe.compare.runs import compare_runs
from evalpipe.compare.tokens.runs import token_comparison
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
    assert decode.floor is not None and decode.floor.n_items == 6
    assert decode.verdict == "token-drift" and found.verdict == "token-drift"
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
    assert found.paths["forced"].verdict == "unknown"  # no repeat: no floor
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
