"""Hand-made token-level comparisons (and the accuracy comparisons they ride on) for tests of
the renderers and the gate, which only read the typed records; and stored runs with token
traces (:func:`add_traced_run`) for what reads the store, made without an engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from builders import run_config

from evalpipe.compare.core import Answer, Comparison, compare_answers
from evalpipe.compare.tokens.types import (
    Bin,
    BoundaryTest,
    FloorTest,
    MetricSummary,
    PathComparison,
    TokenComparison,
)
from evalpipe.records import Run, Sample
from evalpipe.store import Store
from evalpipe.store.traces import put_traces
from evalpipe.traces import DECODE, StoredTrace, TokenTrace

KL = MetricSummary(
    mean=1.234e-4,
    ci_low=1.01e-4,
    ci_high=1.456e-4,
    p99=2.3e-3,
    p999=5.6e-3,
    max=7.0e-3,
    worst_item="12",
    worst_position=345,
)
DLOGPROB = MetricSummary(3.21e-3, 2.5e-3, 3.9e-3, 4.4e-2, 9.9e-2, 0.2, "7", 200)
TOP1 = MetricSummary(0.0052, 0.0031, 0.0073, 1.0, 1.0, 1.0, "7", 200)
FLOOR = FloorTest(
    n_items=100,
    pair_mean=1.234e-4,
    floor_mean=4.5e-5,
    difference=7.84e-5,
    ci_low=5.0e-5,
    ci_high=float("inf"),
    p_value=0.0012,
)


def decode_path(**changes: Any) -> PathComparison:
    """A decode path that drifts: every figure filled, offsets against a period of 128."""
    path = PathComparison(
        path="decode",
        n_items=120,
        n_tokens=9876,
        k=5,
        metrics={"kl": KL, "abs_dlogprob": DLOGPROB, "top1_disagree": TOP1},
        greedy_agreement=0.725,
        first_divergence=(130, 250, 300, 410, 700),
        divergence_offsets=(2, -6, 44, 26, -60),
        by_residue=(
            Bin("near", 0, 15, 110, 1200, 2.1e-4, 1.5e-4, 2.7e-4),
            Bin("rest", 16, 127, 120, 8676, 1.1e-4, 0.9e-4, 1.3e-4),
        ),
        by_band=(Bin("0-511", 0, 511, 120, 9000, 1.2e-4, 1.0e-4, 1.4e-4),),
        boundary=BoundaryTest(128, 16, 110, 2.1e-4, 1.1e-4, 1.0e-4, 4.0e-5, 1.6e-4, 0.003),
        floor=FLOOR,
        floor_metrics={"kl": dataclasses.replace(KL, mean=4.5e-5)},
        verdict="token-drift",
        reason="mean KL exceeds the baseline-repeat floor (one-sided p=0.0012)",
        missing_tokens=3,
    )
    return dataclasses.replace(path, **changes)


def tokens(verdict: str = "token-drift", **changes: Any) -> TokenComparison:
    """A comparison of run ``r`` against baseline ``b``: the decode path with ``verdict``,
    the forced path unavailable."""
    reason = "no teacher-forced traces: run `evalpipe score RUN --against BASELINE`"
    t = TokenComparison(
        run_id="r",
        baseline_id="b",
        period=128,
        paths={"decode": decode_path(verdict=verdict)},
        unavailable={"forced": reason},
    )
    return dataclasses.replace(t, **changes)


def comparison(
    n: int = 4, wrong: int = 0, layouts: tuple[str, str] = ("tp8dcp8", "tp8"), **config: Any
) -> Comparison:
    """The accuracy comparison of two literal runs ``r`` and ``b`` over ``n`` items, the
    first ``wrong`` of them answered wrong by the run only."""
    run, base = (
        Run(run_id=rid, config=run_config(layout, **config), status="finished", started_at="")
        for rid, layout in zip(("r", "b"), layouts, strict=True)
    )
    ours = {str(i): Answer(str(i), ok=True, correct=i >= wrong, output=str(i)) for i in range(n)}
    theirs = {str(i): Answer(str(i), ok=True, correct=True, output=str(i)) for i in range(n)}
    return compare_answers(run, base, ours, theirs)


def token_trace(
    item: int,
    n: int,
    *,
    shift: float = 0.0,
    seed: int = 0,
    k: int = 5,
    diverge_at: int | None = None,
) -> TokenTrace:
    """A greedy generation of ``n`` tokens for item ``item``: its token ids depend only on the
    item (so two engines agree), its top-``k`` logprobs carry noise of ``shift`` nats drawn
    from ``seed`` (a different engine, or a repeat); from ``diverge_at`` on it takes the
    second-best token and the generations differ."""
    rng = np.random.default_rng(seed * 100_003 + item)
    ids = (np.arange(n)[:, None] * 7 + np.arange(k)[None, :] + item * 13) % 50_000
    logprobs = -0.05 - 1.5 * np.arange(k)[None, :] + rng.normal(0.0, shift, (n, k))
    logprobs = np.minimum(logprobs, -1e-4)
    order = np.argsort(-logprobs, axis=1, kind="stable")
    ids, logprobs = np.take_along_axis(ids, order, 1), np.take_along_axis(logprobs, order, 1)
    chosen = np.zeros(n, dtype=np.int64)
    if diverge_at is not None and diverge_at < n:
        chosen[diverge_at] = 1
        ids[diverge_at + 1 :] += 1  # a different context: different tokens from here on
    rows = np.arange(n)
    return TokenTrace(
        ids[rows, chosen].astype(np.int32),
        logprobs[rows, chosen].astype(np.float32),
        ids.astype(np.int32),
        logprobs.astype(np.float32),
    )


def add_traced_run(
    store: Store,
    run_id: str,
    layout: str,
    correct: Sequence[bool | None],
    *,
    traces: Mapping[str, TokenTrace] | None = None,
    source: str = DECODE,
    prompt_tokens: Sequence[int] | None = None,
    started_at: str = "2026-11-30T00:00:00+00:00",
    tags: tuple[str, ...] = (),
    **config: Any,
) -> Run:
    """A finished run of ``len(correct)`` items (``None``: an infrastructure error) with its
    samples (item ``i`` has ``prompt_tokens[i]`` prompt tokens, default ``100 + 10·i``) and,
    for the items in ``traces``, token traces of ``source`` starting after the prompt."""
    lengths = list(prompt_tokens or [100 + 10 * i for i in range(len(correct))])
    samples = [
        Sample(
            run_id,
            str(i),
            f"h{i}",
            None if ok is None else f"The answer is {i if ok else -i}. Step {i}.",
            str(i),
            ok,
            extracted={} if ok is None else {"strict": str(i if ok else -i)},
            correct_by={} if ok is None else {"strict": ok},
            prompt_tokens=lengths[i],
            output_tokens=None if ok is None else 9,
            error="HTTP 500: boom" if ok is None else None,
        )
        for i, ok in enumerate(correct)
    ]
    run = Run(run_id, run_config(layout, **config), "running", started_at, tags=tags)
    store.create_run(run, samples)
    run = run.with_(status="finished", n_items=len(correct), **store.summarize(run_id))
    store.update_run(run)
    put_traces(
        store,
        [
            StoredTrace(run_id, item, source, lengths[int(item)], trace)
            for item, trace in (traces or {}).items()
        ],
    )
    return run
