"""Comparisons: a run against its baseline, or every run carrying a tag; and their renderings
(the terminal text, and the JSON that ``evalpipe compare --json`` prints)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evalpipe.errors import EvalpipeError

if TYPE_CHECKING:
    from evalpipe.compare.core import Comparison
    from evalpipe.compare.tokens.verdict import TokenMargin
    from evalpipe.records import Run
    from evalpipe.store import Store


def compare(
    store: str | None,
    run_ids: Sequence[str],
    baseline: str | None = None,
    baseline_layout: str | None = None,
    margin: float = 0.01,
    alpha: float = 0.05,
    min_n: int = 100,
    force: bool = False,
    shard_period: int | None = None,
    token_margin: str | float | None = None,
    token_reference: str | None = None,
    run_flag: bool = True,
) -> list[Comparison]:
    """Compare each run with its baseline (``baseline`` run id, or the automatic one on
    ``baseline_layout`` / the non-CP layout); Holm-adjusted when several runs are given.
    ``shard_period`` overrides the layout's shard period for the boundary breakdown.
    ``token_margin`` is the token tolerance τ (a number, ``decode=X,forced=Y`` or ``Nx``, see
    :func:`evalpipe.compare.tokens.verdict.margin_from`); with ``Nx``, ``token_reference``
    names the reference pair, ``RUN`` or ``RUN:BASELINE``. ``run_flag`` False: the caller has
    no ``--baseline RUN_ID`` for messages to suggest."""
    from evalpipe.compare.core import adjust
    from evalpipe.compare.runs import compare_runs
    from evalpipe.limits import check_shard_period
    from evalpipe.store import open_store

    _check_thresholds(margin, alpha, min_n)
    check_shard_period(shard_period)
    tokens_margin = _token_margin(token_margin, token_reference)
    # Reads only: a typo in --store must not leave a new, empty store behind.
    with open_store(store, create=False, empty_ok=False) as s:
        reference = None
        if token_reference:
            ref_id, _, ref_base = token_reference.partition(":")
            reference = pair_of(s, ref_id, ref_base or None)
        results = []
        for rid in run_ids:
            r, b = pair_of(s, rid, baseline, baseline_layout, run_flag)
            results.append(
                compare_runs(
                    s,
                    r,
                    b,
                    margin=margin,
                    alpha=alpha,
                    min_n=min_n,
                    force=force,
                    shard_period=shard_period,
                    token_margin=tokens_margin,
                    token_reference=reference,
                )
            )
        return adjust(results)


def _token_margin(value: str | float | None, reference: str | None) -> TokenMargin | None:
    """The token margin of ``--token-margin`` / ``--token-reference``, refused (exit 2) when it
    is no positive τ, or a relative one without its reference pair (or the reverse)."""
    from evalpipe.compare.tokens.verdict import margin_from

    if value is None:
        if reference:
            raise EvalpipeError(
                "--token-reference is read only with a relative --token-margin, e.g. "
                "--token-margin 3x",
                exit_code=2,
            )
        return None
    try:
        margin = margin_from(value)
    except ValueError as exc:
        raise EvalpipeError(f"--token-margin: {exc}", exit_code=2) from exc
    if (margin.factor is not None) != bool(reference):
        raise EvalpipeError(
            "--token-margin Nx (a factor of a reference pair's upper bound) and "
            "--token-reference RUN[:BASELINE] go together",
            exit_code=2,
        )
    return margin


def pair_of(
    store: Store,
    run_id: str,
    baseline: str | None = None,
    baseline_layout: str | None = None,
    run_flag: bool = True,
) -> tuple[Run, Run]:
    """Run ``run_id`` and its baseline: the run ``baseline`` names (id or prefix), else
    (None or ``auto``) the latest finished run that pairs with it on ``baseline_layout`` or
    its non-CP layout. A run is never its own baseline. ``run_flag``: see :func:`compare`."""
    from evalpipe.compare.pairing import find_baseline

    r = store.get_run(run_id)
    if baseline and baseline != "auto":
        b = store.get_run(baseline)
    else:
        b = find_baseline(store, r, baseline_layout, run_flag)
    if b.run_id == r.run_id:
        # Every item agrees with itself: a clean "no drift" that means nothing.
        raise EvalpipeError(
            f"run {r.run_id} cannot be compared with itself: give another run as "
            "--baseline, or leave --baseline out for the latest finished run that "
            "pairs with it on its baseline layout"
        )
    return r, b


def _check_thresholds(margin: float, alpha: float, min_n: int) -> None:
    """Refuse thresholds no decision can use, before any store is read: a NaN margin would
    make every comparison silently inconclusive, an alpha outside (0, 1) has no interval."""
    problems = []
    if not (math.isfinite(margin) and 0 < margin < 1):
        problems.append(f"the margin must be above 0 and below 100 points, not {100 * margin:g}")
    if not 0 < alpha < 1:
        problems.append(f"alpha must be between 0 and 1, not {alpha:g}")
    if min_n < 0:
        problems.append(f"min_n must be 0 or more, not {min_n}")
    if problems:
        raise EvalpipeError("; ".join(problems), exit_code=2)


def tagged_comparisons(
    store: str | None,
    tag: str | None = None,
    run_ids: Sequence[str] = (),
    baseline_layout: str | None = None,
    margin: float = 0.01,
) -> list[Comparison]:
    """Comparisons of the given runs, or of the finished context-parallel runs carrying
    ``tag`` (each with its automatic baseline; with ``baseline_layout`` every tagged run not
    on that layout is compared with it)."""
    from evalpipe.layout import parse
    from evalpipe.store import open_store

    if not run_ids:
        if not tag:
            raise EvalpipeError("select runs with --run RUN_ID or --tag TAG")
        with open_store(store, create=False, empty_ok=False) as s:
            tagged = [r for r in s.list_runs(status="finished") if tag in r.tags]
        run_ids = [
            r.run_id
            for r in tagged
            if (r.config.layout != baseline_layout)
            and (baseline_layout is not None or parse(r.config.layout).is_cp)
        ]
        if not run_ids:
            raise EvalpipeError(
                f"no finished run tagged {tag!r} to compare (tag runs with "
                "`evalpipe run … --tag TAG`; non-CP runs count only with --baseline-layout)"
            )
    return compare(store, run_ids, baseline_layout=baseline_layout, margin=margin, run_flag=False)


def comparison_json(c: Comparison) -> dict[str, Any]:
    """``c`` as ``evalpipe compare --json`` prints it (keys are only ever added)."""
    from evalpipe.compare.jsonout import to_json

    return to_json(c)


def format_comparison(c: Comparison, max_flips: int = 5) -> str:
    """``c`` as ``evalpipe compare`` prints it: table, figures, flips, breakdowns, verdict."""
    from evalpipe.report.text import format_comparison as render

    return render(c, max_flips)
