"""Token-level divergence of a run from its baseline along one path: summaries with intervals,
the excess over the noise floor, the tail test, localisation and the verdict. Fills
:class:`evalpipe.compare.tokens.types.PathComparison`. Pure; numpy and scipy.

Compared positions and per-position metrics: :mod:`evalpipe.compare.tokens.positions`.

Summaries (:class:`MetricSummary`): the per-token mean Σ values / Σ positions with the
reciprocal-scale item-jackknife interval of :mod:`evalpipe.compare.tokens.inference` at
``1 − alpha`` (its lower limit above 0 by construction, nothing clamped; its upper limit
``inf`` when items are too few or too uneven to bound it). p99 and p99.9 are numpy's linear
percentiles over positions, given only when at least :data:`TAIL_POSITIONS` positions lie
beyond them (500 and 5 000 positions). On ties for the largest value (a 0/1 metric, or
saturated KL) the worst item is the one with the largest mean, and ``worst_ties`` says how many
positions share the value. No positions: every figure 0.0 and no worst item (JSON carries no
NaN); ``n_tokens`` = 0 says why.

The decode path's KL is also given over the common prefix and at the parting positions apart
(:class:`PartingSplit`): a parting position is where a near tie or the divergence itself made
the tokens differ, selected for a large KL, and a few of them can outweigh a whole prefix.

Excess over the noise floor (:class:`Excess`): on the items both the pair and the baseline's
repeat have, the pair's per-token mean KL minus the floor's, by MOVER with the correlation of
their jackknife pseudo-values; without a repeat, the pair's own mean and interval (the floor
can only lower the excess). The verdict on it: :mod:`evalpipe.compare.tokens.verdict`.

The tail test (:mod:`evalpipe.compare.tokens.tail`) and the boundary test
(:mod:`evalpipe.compare.tokens.loc`) leave out the decode path's parting positions: they are
selected for a large KL, and each sits at the end of its item, so it would make a spike of an
item broken and tilt a boundary contrast with no boundary effect (in a synthetic null, 1 319
items, the old paired boundary test gave p ≈ 1e-5 with them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from evalpipe.compare.tokens import loc
from evalpipe.compare.tokens.inference import Bounds, bounds, crossing, ratio
from evalpipe.compare.tokens.positions import FloatArray, Pairs, Positions, collect
from evalpipe.compare.tokens.tail import tail_test, typical
from evalpipe.compare.tokens.types import (
    METRICS,
    Bin,
    Excess,
    Metric,
    MetricSummary,
    PartingSplit,
    Path,
    PathComparison,
    Tolerance,
)
from evalpipe.compare.tokens.verdict import DEFAULT_TOKEN_MARGIN, decide, rule

TAIL_POSITIONS = 5
"""A percentile is shown only with at least this many positions beyond it."""
Mask = npt.NDArray[np.bool_]


def summarise(
    pos: Positions, metric: Metric, alpha: float, mask: Mask | None = None
) -> MetricSummary:
    """The :class:`MetricSummary` of ``metric`` over ``pos`` (the positions in ``mask``)."""
    values = pos.values[metric] if mask is None else pos.values[metric][mask]
    if values.size == 0:
        return MetricSummary(0.0, 0.0, 0.0, None, None, 0.0, None, None, 1 - alpha, 0)
    sums, counts = pos.per_item(pos.values[metric], mask)
    est = ratio(sums, counts)
    ci_low, ci_high = bounds(est).interval(1 - alpha)
    p99, p999 = (
        float(np.percentile(values, 100 * q)) if values.size * (1 - q) >= TAIL_POSITIONS else None
        for q in (0.99, 0.999)
    )
    items = pos.items if mask is None else pos.items[mask]
    places = pos.positions if mask is None else pos.positions[mask]
    top = float(values.max())
    tied = np.flatnonzero(values == top)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, -np.inf)
    worst = tied[int(np.argmax(means[items[tied]]))]  # first tied position of that item
    return MetricSummary(
        mean=est.mean,
        ci_low=ci_low,
        ci_high=ci_high,
        p99=p99,
        p999=p999,
        max=top,
        worst_item=pos.item_ids[int(items[worst])],
        worst_position=int(places[worst]),
        level=1 - alpha,
        worst_ties=int(tied.size),
    )


def parting_split(pos: Positions, alpha: float) -> PartingSplit:
    """The decode path's KL over the common prefix and at the parting positions apart."""
    kl, parting = pos.values["kl"], pos.divergent
    prefix = summarise(pos, "kl", alpha, ~parting)
    return PartingSplit(
        prefix_tokens=int((~parting).sum()),
        prefix_mean=prefix.mean,
        prefix_ci_low=prefix.ci_low,
        prefix_ci_high=prefix.ci_high,
        parting_tokens=int(parting.sum()),
        parting_mean=float(kl[parting].mean()) if parting.any() else 0.0,
        level=1 - alpha,
    )


def excess_of(pair: Positions, floor: Positions | None, alpha: float) -> tuple[Excess, Bounds]:
    """The pair's per-token KL in excess of the floor's on the items both have positions for
    (the pair's own without a floor, or without a common item) and its bounds."""
    sums, counts = pair.per_item(pair.values["kl"])
    common: list[tuple[int, int]] = []
    if floor is not None:
        f_sums, f_counts = floor.per_item(floor.values["kl"])
        where = {item: j for j, item in enumerate(floor.item_ids) if f_counts[j] > 0}
        common = [(i, where[x]) for i, x in enumerate(pair.item_ids) if x in where and counts[i]]
    if floor is None or not common:
        a = ratio(sums, counts)
        b, values = bounds(a), np.asarray(a.pseudo)
        floor_mean = None
    else:
        pi, fi = (np.asarray(ix) for ix in zip(*common, strict=True))
        a, f = ratio(sums[pi], counts[pi]), ratio(f_sums[fi], f_counts[fi])
        b, values = bounds(a, f), np.asarray(a.pseudo) - np.asarray(f.pseudo)
        floor_mean = f.mean
    ci_low, ci_high = b.interval(1 - alpha)
    excess = Excess(
        n_items=a.n,
        pair_mean=a.mean,
        floor_mean=floor_mean,
        estimate=b.estimate,
        ci_low=ci_low,
        ci_high=ci_high,
        level=1 - alpha,
        spread=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        item_values=tuple(values.tolist()),
    )
    return excess, b


def floor_typical(floor: Positions | None) -> dict[str, float]:
    """Each floor item's typical KL over its prefix positions (what the tail test allows on
    top of its tolerance)."""
    if floor is None:
        return {}
    keep = ~floor.divergent
    items, kl = floor.items[keep], floor.values["kl"][keep]
    cuts = np.flatnonzero(np.diff(items)) + 1
    return {
        floor.item_ids[int(idx[0])]: typical(values)
        for idx, values in zip(np.split(items, cuts), np.split(kl, cuts), strict=True)
        if idx.size
    }


def compare_path(
    path: Path,
    pairs: Pairs,
    *,
    period: int | None = None,
    floor: Pairs | None = None,
    alpha: float = 0.05,
    tolerance: Tolerance | str | None = None,
    bands: Sequence[int] | None = None,
) -> PathComparison:
    """Compare ``pairs`` (item → (baseline, run) traces) along ``path``; ``floor`` holds the
    baseline against its repeat on the same path, ``period`` the shard period (None: no
    residue classes, boundary test or divergence offsets), ``tolerance`` τ (None: the
    default; a text: why there is none), ``bands`` fixed band edges (None: a trend
    resolution, :func:`evalpipe.compare.tokens.loc.band_edges`). Decided alone: Holm over
    several paths is :func:`evalpipe.compare.tokens.verdict.holm_paths`."""
    return compare_positions(
        path,
        collect(path, pairs),
        None if floor is None else collect(path, floor),
        period=period,
        alpha=alpha,
        tolerance=tolerance,
        bands=bands,
    )


def compare_positions(
    path: Path,
    pos: Positions,
    floor_pos: Positions | None,
    *,
    period: int | None = None,
    alpha: float = 0.05,
    tolerance: Tolerance | str | None = None,
    bands: Sequence[int] | None = None,
) -> PathComparison:
    """:func:`compare_path` on positions already collected (what a simulation builds)."""
    kl, prefix = pos.values["kl"], ~pos.divergent
    tol = Tolerance(DEFAULT_TOKEN_MARGIN, "default") if tolerance is None else tolerance
    result = PathComparison(
        path=path,
        n_items=len(pos.item_ids),
        n_tokens=int(pos.items.size),
        k=pos.k,
        metrics={m: summarise(pos, m, alpha) for m in METRICS},
        greedy_agreement=(pos.identical / len(pos.item_ids))
        if path == "decode" and pos.item_ids
        else None,
        first_divergence=pos.first_divergence if path == "decode" else (),
        parting=parting_split(pos, alpha) if path == "decode" and kl.size else None,
        by_band=_bands(pos, kl, bands, period, alpha),
        floor_metrics={m: summarise(floor_pos, m, alpha) for m in METRICS}
        if floor_pos is not None
        else None,
        missing_tokens=pos.missing,
        skipped_items=pos.skipped,
        reason="no items with comparable tokens",
    )
    if kl.size:
        result = _decided(result, pos, floor_pos, tol, alpha)
    if period is None:
        return result
    starts, offsets, lengths = zip(*pos.parting, strict=True) if pos.parting else ((), (), ())
    return replace(
        result,
        divergence_offsets=loc.divergence_offsets(result.first_divergence, period),
        divergence_share=loc.divergence_share(starts, offsets, lengths, period)
        if path == "decode"
        else None,
        by_residue=loc.by_residue(pos.items, pos.positions, kl, period, alpha) if kl.size else (),
        boundary=loc.boundary_test(pos.items[prefix], pos.positions[prefix], kl[prefix], period),
    )


def _bands(
    pos: Positions,
    kl: FloatArray,
    bands: Sequence[int] | None,
    period: int | None,
    alpha: float,
) -> tuple[Bin, ...]:
    if not kl.size:
        return ()
    start, edges = (0, tuple(bands)) if bands is not None else loc.band_edges(pos.positions, period)
    return loc.by_band(pos.items, pos.positions, kl, edges, alpha, start)


def _decided(
    result: PathComparison,
    pos: Positions,
    floor: Positions | None,
    tol: Tolerance | str,
    alpha: float,
) -> PathComparison:
    """``result`` with the excess, the tail test and the verdict on ``tol``."""
    excess, b = excess_of(pos, floor, alpha)
    result = replace(result, excess=excess)
    if isinstance(tol, str):
        return replace(result, reason=tol)
    prefix = ~pos.divergent
    kl = pos.values["kl"]
    tail = tail_test(
        pos.item_ids,
        pos.items[prefix],
        pos.positions[prefix],
        kl[prefix],
        floor_typical(floor),
        tol.tau,
    )
    p_ok, p_mean_drift = crossing(b, tol.tau)
    decision = decide(result.n_items, excess, tail, tol, alpha, p_ok, p_mean_drift)
    result = replace(result, tail=tail, decision=decision)
    verdict, reason = rule(result)
    return replace(result, verdict=verdict, reason=reason)


def item_kl(path: Path, pairs: Pairs) -> dict[str, float]:
    """Each item's mean ``kl`` along ``path``."""
    return collect(path, pairs).item_means()
