"""Hand-made token-level comparisons (and the accuracy comparisons they ride on) for tests of
the renderers and the gate, which only read the typed records."""

from __future__ import annotations

import dataclasses
from typing import Any

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
from evalpipe.records import Run

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
