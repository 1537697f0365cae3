"""Hand-made token-level comparisons (and the accuracy comparisons they ride on) for tests of
the renderers and the gate, which only read the typed records; and stored runs with token
traces (:func:`add_traced_run`) for what reads the store, made without an engine."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from builders import run_config

from evalpipe.compare.core import Answer, Comparison, compare_answers
from evalpipe.compare.tokens.types import (
    Bin,
    BoundaryTest,
    Decision,
    DivergenceShare,
    Excess,
    MetricSummary,
    PartingSplit,
    PathComparison,
    TailTest,
    TokenComparison,
    Tolerance,
)
from evalpipe.records import Run, Sample
from evalpipe.store import Store
from evalpipe.store.traces import put_traces
from evalpipe.traces import DECODE, StoredTrace, TokenTrace, trace_of

BASE_P = (0.5, 0.3, 0.15)
"""The baseline's top-3 probabilities at every position of :func:`kl_pair` (the rest 0.05)."""


def _shift_for(kl: np.ndarray) -> np.ndarray:
    """The mass s moved from token 0 to token 1 that makes KL(base ‖ run) equal ``kl``."""
    p0, p1 = BASE_P[:2]
    low, high = np.zeros_like(kl), np.full_like(kl, p0 - 1e-6)
    for _ in range(80):
        mid = (low + high) / 2
        f = p0 * np.log(p0 / (p0 - mid)) + p1 * np.log(p1 / (p1 + mid))
        low, high = np.where(f < kl, mid, low), np.where(f < kl, high, mid)
    return (low + high) / 2


def kl_pair(
    kl: Sequence[float],
    item: str,
    start: int = 0,
    runs: tuple[str, str] = ("b", "r"),
    source: str = "b",
) -> tuple[StoredTrace, StoredTrace]:
    """A (baseline, run) pair of traces (run ids ``runs``, trace ``source``) whose per-position
    KL is ``kl`` (up to ~1.6 nats; exact up to float32 logprobs): the run moves mass from token
    0 to token 1, the token ids stay the same."""
    s = _shift_for(np.asarray(kl, dtype=np.float64))
    n = s.size
    p0, p1, p2 = BASE_P

    def one(q0: np.ndarray, q1: np.ndarray) -> Any:
        tops = [
            [(0, math.log(a)), (1, math.log(b)), (2, math.log(p2))]
            for a, b in zip(q0, q1, strict=True)
        ]
        return trace_of([0] * n, [math.log(a) for a in q0], tops, 3)

    base = one(np.full(n, p0), np.full(n, p1))
    run = one(p0 - s, p1 + s)
    return (
        StoredTrace(runs[0], item, source, start, base),
        StoredTrace(runs[1], item, source, start, run),
    )


KL = MetricSummary(
    mean=1.234e-4,
    ci_low=1.01e-4,
    ci_high=1.456e-4,
    p99=2.3e-3,
    p999=5.6e-3,
    max=7.0e-3,
    worst_item="12",
    worst_position=345,
    level=0.95,
)
DLOGPROB = MetricSummary(3.21e-3, 2.5e-3, 3.9e-3, 4.4e-2, 9.9e-2, 0.2, "7", 200)
TOP1 = MetricSummary(0.0052, 0.0031, 0.0073, 1.0, 1.0, 1.0, "7", 200)
EXCESS = Excess(
    n_items=100,
    pair_mean=1.234e-4,
    floor_mean=4.5e-5,
    estimate=7.84e-5,
    ci_low=5.0e-5,
    ci_high=float("inf"),
    level=0.95,
    spread=2.0e-4,
    item_values=(7.0e-5, 8.68e-5),
)
TAIL = TailTest(
    tolerance=2e-5,
    n_items=98,
    p_value=0.0004,
    worst_item="12",
    worst_tokens=80,
    worst_typical=3.0e-3,
    worst_mean=7.0e-3,
    first_bad_position=340,
)
DECISION = Decision(
    tolerance=Tolerance(2e-5, "given"),
    alpha=0.05,
    p_ok=0.99,
    p_drift=0.0008,
    p_mean_drift=0.0012,
    p_ok_adjusted=0.99,
    p_drift_adjusted=0.0008,
    comparisons=1,
    items_needed=12.0,
    min_items=10,
    floor=True,
)


DECISIONS = {
    "token-drift": DECISION,
    "ok": dataclasses.replace(
        DECISION,
        tolerance=Tolerance(1e-3, "given"),
        p_ok=0.001,
        p_drift=1.0,
        p_mean_drift=1.0,
        p_ok_adjusted=0.001,
        p_drift_adjusted=1.0,
    ),
    "inconclusive": dataclasses.replace(
        DECISION, p_ok=0.4, p_drift=0.6, p_mean_drift=0.6, p_ok_adjusted=0.4, p_drift_adjusted=0.6
    ),
}
"""Decision figures that give each verdict (the gate re-decides from them, Holm-adjusted)."""


def decode_path(**changes: Any) -> PathComparison:
    """A decode path that drifts: every figure filled, offsets against a period of 128; a
    ``verdict`` given brings the decision figures that give it."""
    if "verdict" in changes and "decision" not in changes:
        changes["decision"] = DECISIONS.get(changes["verdict"], DECISION)
    path = PathComparison(
        path="decode",
        n_items=120,
        n_tokens=9876,
        k=5,
        metrics={"kl": KL, "abs_dlogprob": DLOGPROB, "top1_disagree": TOP1},
        greedy_agreement=0.725,
        first_divergence=(130, 250, 300, 410, 700),
        divergence_offsets=(2, -6, 44, 26, -60),
        divergence_share=DivergenceShare(128, 16, 5, 2, 1.3, 0.37),
        parting=PartingSplit(9871, 1.1e-4, 1.0e-4, 1.3e-4, 5, 2.5e-2),
        by_residue=(
            Bin("near", 0, 15, 110, 1200, 2.1e-4, 1.5e-4, 2.7e-4),
            Bin("rest", 16, 127, 120, 8676, 1.1e-4, 0.9e-4, 1.3e-4),
        ),
        by_band=(Bin("0-511", 0, 511, 120, 9000, 1.2e-4, 1.0e-4, 1.4e-4),),
        boundary=BoundaryTest(128, (0, 1, 2, 4, 8, 16), 1, 110, 300, 0.03, 0.09, 3.0, 0.003, 999),
        excess=EXCESS,
        tail=TAIL,
        floor_metrics={"kl": dataclasses.replace(KL, mean=4.5e-5)},
        decision=DECISION,
        verdict="token-drift",
        reason="KL over the floor 7.84e-05 [5.00e-05, +∞] (95%) on 100 items is above τ",
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
