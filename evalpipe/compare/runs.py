"""Compare stored runs: check they pair, read their answers and the noise floor, then
:func:`evalpipe.compare.core.compare_answers`. The only part of compare/ that reads a store."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace

from evalpipe.compare.core import (
    DEFAULT_LENGTH_EDGES,
    Answer,
    Comparison,
    Noise,
    Settings,
    ShardPeriod,
    compare_answers,
    noise_floor,
)
from evalpipe.compare.pairing import HARD_KEYS, hard_differences, key_differences, repeats
from evalpipe.compare.tokens.runs import reference_comparison, token_comparison
from evalpipe.compare.tokens.types import TokenComparison
from evalpipe.compare.tokens.verdict import TokenMargin
from evalpipe.errors import EvalpipeError
from evalpipe.faults import parse_fault
from evalpipe.layout import parse, shard_period
from evalpipe.limits import check_shard_period
from evalpipe.records import Run
from evalpipe.store import Store
from evalpipe.store.answers import read_answers


def answers(store: Store, run_id: str) -> dict[str, Answer]:
    """A stored run's answers by item id (only the columns a comparison reads)."""
    return read_answers(store, [run_id], Answer)[run_id]


def store_noise(store: Store, baseline: Run) -> Noise:
    """The noise floor of ``baseline``'s configuration from its stored repeats."""
    reps = repeats(store, baseline)
    if len(reps) < 2:
        return Noise(None, len(reps))
    found = read_answers(store, [r.run_id for r in reps], Answer)
    return noise_floor([found[r.run_id] for r in reps])


def pairing_warnings(run: Run, baseline: Run, force: bool) -> list[str]:
    """Why the pair may mislead; raises unless ``force`` when they answered different
    questions (task, prompts, data, model)."""
    hard = hard_differences(run, baseline)
    if hard and not force:
        raise EvalpipeError(
            f"runs {run.run_id} and {baseline.run_id} did not answer the same questions the "
            f"same way, so a paired comparison would mislead: {'; '.join(hard)}. Pass --force "
            "to compare anyway."
        )
    warnings = [f"forced despite {d}" for d in hard]
    warnings += [
        f"configs differ in {d}"
        for d in key_differences(run, baseline)
        if d.split(":")[0] not in HARD_KEYS
    ]
    return warnings


def shard_period_of(run: Run, explicit: int | None = None) -> ShardPeriod:
    """The shard period to locate ``run``'s prompts against: ``explicit`` (``given``), else
    the period of its canary fault (``fault``: where it was injected; a dcp-merge fault acts
    at every position and has none), else the layout's dcp x interleave (``layout``); none
    for a layout without DCP."""
    if explicit is not None:
        check_shard_period(explicit)
        return ShardPeriod(explicit, "given")
    if run.config.fault is not None:
        with contextlib.suppress(EvalpipeError):
            fault_period = parse_fault(run.config.fault).locating_period
            if fault_period is not None:
                return ShardPeriod(fault_period, "fault")
    try:
        period = shard_period(parse(run.config.layout), run.config.engine_args, run.config.platform)
    except (ValueError, EvalpipeError):
        return ShardPeriod()
    return ShardPeriod(period, "layout" if period else None)


def compare_runs(
    store: Store,
    run: Run,
    baseline: Run,
    *,
    margin: float = 0.01,
    alpha: float = 0.05,
    min_n: int = 100,
    force: bool = False,
    length_edges: Sequence[int] = DEFAULT_LENGTH_EDGES,
    shard_period: int | None = None,
    tokens: bool = True,
    token_margin: TokenMargin | None = None,
    token_reference: tuple[Run, Run] | str | None = None,
) -> Comparison:
    """The paired comparison of ``run`` against ``baseline``.

    Prompts are located relative to the shard boundaries of ``shard_period`` tokens, or by
    default of the run's own layout (``dcp x interleave``; none for a layout without DCP).
    With ``tokens``, the token-level comparison of their stored traces is attached (with
    the baseline's repeats as its noise floor, and the same shard period), decided on
    ``token_margin``; a relative margin reads the ``token_reference`` pair (a run and its
    baseline of the same model and task, compared the same way; a text: why there is none).
    """
    warnings = pairing_warnings(run, baseline, force)
    shard = shard_period_of(run, shard_period)
    comparison = compare_answers(
        run,
        baseline,
        answers(store, run.run_id),
        answers(store, baseline.run_id),
        settings=Settings(margin, alpha, min_n, tuple(length_edges)),
        noise=store_noise(store, baseline),
        shard=shard,
        warnings=warnings,
    )
    if not tokens:
        return comparison
    reference: tuple[TokenComparison | str, str] | None = None
    if isinstance(token_reference, str):
        reference = (token_reference, "")
    elif token_reference is not None:
        ref, ref_base = token_reference
        reference = reference_comparison(
            store,
            run,
            ref,
            ref_base,
            floor_runs=repeats(store, ref_base),
            period=shard.period,
            alpha=alpha,
        )
    found = token_comparison(
        store,
        run,
        baseline,
        floor_runs=repeats(store, baseline),
        period=shard.period,
        alpha=alpha,
        margin=token_margin,
        reference=reference,
    )
    return replace(comparison, tokens=found)
