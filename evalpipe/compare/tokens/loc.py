"""Where along the sequence two engines' token distributions part: the per-position KL by
residue of the shard period and by position band, the boundary test, and the first-divergence
offsets. Pure; numpy only.

Positions are whole-sequence positions (prompt tokens + index), as the KV cache counts them. A
shard boundary is a multiple ``k·period`` with ``k >= 1`` (position 0 starts the first shard
and is no boundary); a position is *near* one when within ``width`` tokens of it, either side,
as :func:`evalpipe.compare.breakdown.boundary_groups` counts its "at" groups.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from evalpipe.compare.tokens.inference import cluster_mean, paired_t
from evalpipe.compare.tokens.types import Bin, BoundaryTest

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

RESIDUE_BINS = 8
"""Equal-width residue classes of the period (fewer when the period is shorter)."""


def boundary_offsets(positions: IntArray, period: int) -> IntArray:
    """Signed distance of each position to its nearest boundary ``k·period``, ``k >= 1``."""
    if period < 1:
        raise ValueError(f"period must be positive, got {period}")
    # np.rint rounds half to even, as Python's round in breakdown.boundary_groups does.
    k = np.maximum(1, np.rint(positions / period)).astype(np.int64)
    out: IntArray = positions - k * period
    return out


def _bin(label: str, low: int, high: int, items: IntArray, values: FloatArray, alpha: float) -> Bin:
    """The cluster mean of ``values`` whose items are ``items`` (dense indices)."""
    groups = int(items.max()) + 1
    sums = np.bincount(items, weights=values, minlength=groups).astype(np.float64)
    counts = np.bincount(items, minlength=groups).astype(np.float64)
    est = cluster_mean(sums, counts, alpha)
    return Bin(
        label=label,
        low=low,
        high=high,
        n_items=est.n,
        n_tokens=int(values.size),
        mean=est.mean,
        ci_low=max(0.0, est.ci_low),
        ci_high=est.ci_high,
    )


def by_residue(
    items: IntArray, positions: IntArray, values: FloatArray, period: int, alpha: float
) -> tuple[Bin, ...]:
    """``values`` by ``position mod period`` in up to :data:`RESIDUE_BINS` equal-width classes
    (the class of residue r is ``r·bins // period``); only classes with positions."""
    bins = min(RESIDUE_BINS, period)
    which = (positions % period) * bins // period
    out = []
    for j in np.unique(which).tolist():
        low, high = -(-j * period // bins), -(-(j + 1) * period // bins) - 1
        mask = which == j
        label = f"{low}–{high} mod {period}"
        out.append(_bin(label, low, high, items[mask], values[mask], alpha))
    return tuple(out)


def by_band(
    items: IntArray, positions: IntArray, values: FloatArray, edges: Sequence[int], alpha: float
) -> tuple[Bin, ...]:
    """``values`` by whole-sequence position: edges (512, 1024) give [0, 511], [512, 1023] and
    [1024, ∞) (its ``high`` the largest position seen); only bands with positions."""
    if any(e <= 0 for e in edges) or any(x >= y for x, y in itertools.pairwise(edges)):
        raise ValueError(f"band edges must be positive and increasing, got {list(edges)}")
    which = np.searchsorted(np.asarray(edges, dtype=np.int64), positions, side="right")
    bounds = [0, *edges]
    out = []
    for j in np.unique(which).tolist():
        mask = which == j
        low = bounds[j]
        if j < len(edges):
            high, label = edges[j] - 1, f"{low}–{edges[j] - 1}"
        else:
            high, label = int(positions[mask].max()), f"≥{low}"
        out.append(_bin(label, low, high, items[mask], values[mask], alpha))
    return tuple(out)


def boundary_test(
    items: IntArray,
    positions: IntArray,
    values: FloatArray,
    period: int,
    width: int,
    alpha: float,
) -> BoundaryTest | None:
    """Per item, mean of ``values`` near a boundary minus the mean elsewhere; a two-sided
    paired t test over the items with positions on both sides. None below two such items."""
    if items.size == 0:
        return None
    near = np.abs(boundary_offsets(positions, period)) <= width
    groups = int(items.max()) + 1

    def per_item(mask: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
        sums = np.bincount(items[mask], weights=values[mask], minlength=groups)
        return sums.astype(np.float64), np.bincount(items[mask], minlength=groups).astype(
            np.float64
        )

    near_sum, near_n = per_item(near)
    rest_sum, rest_n = per_item(~near)
    both = (near_n > 0) & (rest_n > 0)
    if int(both.sum()) < 2:
        return None
    near_means = near_sum[both] / near_n[both]
    rest_means = rest_sum[both] / rest_n[both]
    est = paired_t(near_means - rest_means, alpha, "two-sided")
    return BoundaryTest(
        period=period,
        width=width,
        n_items=est.n,
        near_mean=float(near_means.mean()),
        rest_mean=float(rest_means.mean()),
        difference=est.mean,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        p_value=est.p_value,
    )


def divergence_offsets(first: Sequence[int], period: int) -> tuple[int, ...]:
    """Signed distance of each first-divergence position to its nearest boundary."""
    if not first:
        return ()
    return tuple(boundary_offsets(np.asarray(first, dtype=np.int64), period).tolist())
