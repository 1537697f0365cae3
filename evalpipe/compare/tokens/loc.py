"""Where along the sequence two engines' token distributions part: the per-position KL by
residue of the shard period and by position band, the shard-boundary test, and where first
divergences fall. Pure; numpy and scipy.

Positions are whole-sequence positions (prompt tokens + index), as the KV cache counts them. A
shard boundary is a multiple ``k·period`` with ``k >= 1`` (position 0 starts the first shard
and is no boundary); a position is *near* one when within ``w`` tokens of it, either side.

Windows. A fault at one token per boundary is diluted ``2w + 1`` times by a window of ``w``
tokens, a fault spread over a few tokens is missed by ``w = 0``: the boundary test tries
:data:`WINDOWS` (those whose near set is at most half the period), each with its own null,
and reports the smallest p-value times the number of windows (Bonferroni), so trying several
costs no false alarms (:func:`boundary_test`).

The statistic, per window: each item's share of its KL mass on positions near a boundary,
weighted by its positions. Its null keeps every item's positions and KL as they are and
re-places the item's boundaries at a random phase among those that bring exactly as many of
its positions within the window of a boundary as the real ones do (items carrying no KL, or
with no position near a boundary, carry no information and are left out). Under no boundary
effect and a KL that does not change its law along an item, the real placement is one of
those, as likely as any: the test is valid with one near position or many, on short items as
on long ones, and free of the fixed prompt offset that makes the share of "near" positions
differ from ``(2w + 1) / period`` without any boundary effect. (Unconditioned phases are not:
a short item then often has no near position at all, which shrinks the null's spread; at 1–3
near positions that rejected 11 % of true nulls at 5 %.)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evalpipe.compare.tokens.inference import bounds, ratio
from evalpipe.compare.tokens.types import Bin, BoundaryTest, DivergenceShare

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

RESIDUE_BINS = 8
"""Equal-width residue classes of the period (fewer when the period is shorter)."""
TREND_BANDS = 12
"""Position bands wanted across the compared positions (a power-of-two width, or the period)."""
MAX_BANDS = 16
WINDOWS = (0, 1, 2, 4, 8, 16)
"""Boundary windows the boundary test tries (tokens either side)."""
DRAWS = 999
"""Random boundary placements of the boundary test (its p-value resolution is 1/1000)."""
SEED = 20
"""Seed of those draws: the same data always give the same p-value."""


def boundary_offsets(positions: IntArray, period: int) -> IntArray:
    """Signed distance of each position to its nearest boundary ``k·period``, ``k >= 1``."""
    if period < 1:
        raise ValueError(f"period must be positive, got {period}")
    # np.rint rounds half to even, as Python's round in breakdown.boundary_groups does.
    k = np.maximum(1, np.rint(positions / period)).astype(np.int64)
    out: IntArray = positions - k * period
    return out


def windows_for(period: int) -> tuple[int, ...]:
    """The :data:`WINDOWS` whose near set (``2w + 1`` residues) is at most half the period."""
    return tuple(w for w in WINDOWS if 2 * w + 1 <= period // 2)


def _bin(label: str, low: int, high: int, items: IntArray, values: FloatArray, alpha: float) -> Bin:
    """The per-token mean of ``values`` whose items are ``items`` (dense indices)."""
    groups = int(items.max()) + 1
    sums = np.bincount(items, weights=values, minlength=groups).astype(np.float64)
    counts = np.bincount(items, minlength=groups).astype(np.float64)
    est = ratio(sums, counts)
    ci_low, ci_high = bounds(est).interval(1 - alpha)
    return Bin(label, low, high, est.n, int(values.size), est.mean, ci_low, ci_high, 1 - alpha)


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


def band_edges(positions: IntArray, period: int | None) -> tuple[int, tuple[int, ...]]:
    """``(start, edges)`` of bands that show a trend over ``positions``: one band per shard
    period when that gives 3 to :data:`MAX_BANDS` bands, else the smallest power-of-two width
    giving at most :data:`TREND_BANDS`; bands start at a multiple of their width."""
    lo, hi = int(positions.min()), int(positions.max())

    def count(width: int) -> int:
        return hi // width - lo // width + 1

    if period and 3 <= count(period) <= MAX_BANDS:
        width = period
    else:
        width = 1
        while count(width) > TREND_BANDS:
            width *= 2
    start = lo // width * width
    return start, tuple(range(start + width, hi + 1, width))


def by_band(
    items: IntArray,
    positions: IntArray,
    values: FloatArray,
    edges: Sequence[int],
    alpha: float,
    start: int = 0,
) -> tuple[Bin, ...]:
    """``values`` by whole-sequence position: edges (512, 1024) give [start, 511], [512, 1023]
    and [1024, ∞) (its ``high`` the largest position seen); only bands with positions."""
    if any(e <= start for e in edges) or any(x >= y for x, y in itertools.pairwise(edges)):
        raise ValueError(f"band edges must be above {start} and increasing, got {list(edges)}")
    which = np.searchsorted(np.asarray(edges, dtype=np.int64), positions, side="right")
    lows = [start, *edges]
    out = []
    for j in np.unique(which).tolist():
        mask = which == j
        low = lows[j]
        if j < len(edges):
            high, label = edges[j] - 1, f"{low}–{edges[j] - 1}"
        else:
            high, label = int(positions[mask].max()), f"≥{low}"
        out.append(_bin(label, low, high, items[mask], values[mask], alpha))
    return tuple(out)


# --- the boundary test --------------------------------------------------------------------


def _candidates(
    where: IntArray, v: FloatArray, period: int, windows: tuple[int, ...]
) -> tuple[IntArray, FloatArray, FloatArray]:
    """One item's candidate boundary phases (boundaries at positions ≡ phase mod the period)
    and, per window (rows), its KL mass and position count within the window of a boundary:
    every phase when the item nearly covers the period, else the phases that put a boundary
    within the largest window of it (the rest bring no position near)."""
    reach = windows[-1]
    if where.size + 2 * reach >= period:
        residue = where % period
        mass = np.bincount(residue, weights=v, minlength=period).astype(np.float64)
        count = np.bincount(residue, minlength=period).astype(np.float64)
        masses = np.stack([_box(mass, w) for w in windows])
        counts = np.stack([_box(count, w) for w in windows])
        return np.arange(period, dtype=np.int64), masses, counts
    lifts = np.arange(int(where.min()) - reach, int(where.max()) + reach + 1, dtype=np.int64)
    cum = np.concatenate([[0.0], np.cumsum(v)])
    near_mass: list[FloatArray] = []
    near_count: list[FloatArray] = []
    for w in windows:
        left = np.searchsorted(where, lifts - w, side="left")
        right = np.searchsorted(where, lifts + w, side="right")
        near_mass.append(cum[right] - cum[left])
        near_count.append((right - left).astype(np.float64))
    return lifts % period, np.stack(near_mass), np.stack(near_count)


def _box(table: FloatArray, w: int) -> FloatArray:
    """``table`` (one value per residue) summed over the circular window ``[c − w, c + w]``."""
    wrapped = np.concatenate([table[table.size - w :], table, table[:w]])
    cum = np.concatenate([[0.0], np.cumsum(wrapped)])
    out: FloatArray = cum[2 * w + 1 :] - cum[: table.size]
    return out


@dataclass(frozen=True)
class _Null:
    """One window's test: per item (that carries KL and has a position near a boundary) its
    observed share of KL mass near a boundary, weighted by its positions, and the same share
    at each of its admissible phases (as many positions near a boundary as observed)."""

    observed: float
    shares: list[FloatArray]

    def p_value(self, rng: np.random.Generator) -> float:
        """One-sided: the share of random admissible placements at least as extreme."""
        if not self.shares:
            return 1.0
        sizes = np.asarray([x.size for x in self.shares])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        flat = np.concatenate(self.shares)
        pick = (rng.random((DRAWS, sizes.size)) * sizes).astype(np.int64) + offsets
        draws = flat[pick].sum(axis=1)
        return (1 + int(np.sum(draws >= self.observed - 1e-12 * abs(self.observed)))) / (DRAWS + 1)


def _nulls(
    items: IntArray, positions: IntArray, values: FloatArray, period: int, windows: tuple[int, ...]
) -> tuple[list[_Null], FloatArray, FloatArray]:
    """Each window's test, and for the shares reported every item's observed near count and
    near mass share per window (an item without KL: its share of positions)."""
    cuts = np.flatnonzero(np.diff(items)) + 1
    observed = np.zeros(len(windows))
    shares: list[list[FloatArray]] = [[] for _ in windows]
    counts, kl_shares = [], []
    for where, v in zip(np.split(positions, cuts), np.split(values, cuts), strict=True):
        phases, mass, count = _candidates(where, v, period, windows)
        at = np.flatnonzero(phases == 0)
        seen_mass = mass[:, at[0]] if at.size else np.zeros(len(windows))
        seen_count = count[:, at[0]] if at.size else np.zeros(len(windows))
        total = float(v.sum())
        weight = where.size / total if total > 0 else 0.0
        counts.append(seen_count)
        kl_shares.append(seen_mass * weight if total > 0 else seen_count)
        for j in np.flatnonzero(seen_count > 0) if total > 0 else ():
            observed[j] += seen_mass[j] * weight
            shares[j].append(mass[j, count[j] == seen_count[j]] * weight)
    tests = [_Null(float(o), x) for o, x in zip(observed, shares, strict=True)]
    return tests, np.stack(counts, axis=1), np.stack(kl_shares, axis=1)


def boundary_test(
    items: IntArray, positions: IntArray, values: FloatArray, period: int
) -> BoundaryTest:
    """Do positions near boundaries carry more of their items' KL than their share of
    positions? Each item's positions must be contiguous runs in order, items sorted (as
    compared positions are). See the module docstring and :class:`BoundaryTest`."""
    windows = windows_for(period)

    def none(reason: str, n_items: int = 0) -> BoundaryTest:
        return BoundaryTest(period, windows, None, n_items, 0, 0.0, 0.0, 0.0, None, 0, reason)

    if not windows:
        return none(
            f"a period of {period} tokens is too short: every position is next to a boundary"
        )
    if items.size == 0:
        return none("no compared positions")
    n_items, total = int(np.unique(items).size), float(items.size)
    if not values.any():
        return none("every compared KL is 0: no divergence to locate", n_items)
    tests, counts, kl_shares = _nulls(items, positions, values, period, windows)
    if not counts.any():
        return none(
            f"no compared position is within {windows[-1]} tokens of a boundary (positions "
            f"{int(positions.min())}–{int(positions.max())}, boundaries every {period})",
            n_items,
        )
    rng = np.random.default_rng(SEED)
    p_values = [t.p_value(rng) for t in tests]
    best = int(np.argmin(p_values))
    near_tokens = float(counts[best].sum())
    kl_share = float(kl_shares[best].sum() / total)
    return BoundaryTest(
        period=period,
        windows=windows,
        window=windows[best],
        n_items=n_items,
        near_tokens=int(near_tokens),
        near_share=near_tokens / total,
        kl_share=kl_share,
        ratio=kl_share * total / near_tokens if near_tokens else math.inf,
        p_value=min(1.0, len(windows) * p_values[best]),
        draws=DRAWS,
    )


# --- where generations part ---------------------------------------------------------------


def divergence_offsets(first: Sequence[int], period: int) -> tuple[int, ...]:
    """Signed distance of each first-divergence position to its nearest boundary."""
    if not first:
        return ()
    return tuple(boundary_offsets(np.asarray(first, dtype=np.int64), period).tolist())


def _at_least(probabilities: FloatArray, k: int) -> float:
    """P(X >= k) for X a sum of independent Bernoulli(``probabilities``) (exact)."""
    dist = np.zeros(probabilities.size + 1)
    dist[0] = 1.0
    for n, p in enumerate(probabilities.tolist(), start=1):
        dist[1 : n + 1] = dist[1 : n + 1] * (1 - p) + dist[:n] * p
        dist[0] *= 1 - p
    return float(min(1.0, dist[k:].sum()))


def divergence_share(
    starts: Sequence[int], offsets: Sequence[int], lengths: Sequence[int], period: int
) -> DivergenceShare:
    """First divergences near a boundary against the null built from the actual positions:
    item i (prompt of ``starts[i]`` tokens, its generations parting ``offsets[i]`` tokens in,
    ``lengths[i]`` positions where they could) diverges near a boundary with the share of the
    observed offsets that fit it and put it there (see :class:`DivergenceShare`)."""
    windows = windows_for(period)
    width = windows[-1] if windows else 0
    n = len(starts)
    if not windows or n < 2:
        why = "fewer than 2 divergent items" if windows else f"a period of {period} is too short"
        return DivergenceShare(period, width, n, 0, 0.0, None, why)
    s = np.asarray(starts, dtype=np.int64)[:, None]
    d = np.asarray(offsets, dtype=np.int64)[None, :]
    fits = d < np.asarray(lengths, dtype=np.int64)[:, None]
    at = np.abs(boundary_offsets(s + d, period)) <= width
    chance = (at & fits).sum(axis=1) / np.maximum(fits.sum(axis=1), 1)
    near = int(np.diagonal(at).sum())
    return DivergenceShare(
        period, width, n, near, float(chance.sum()), _at_least(chance.astype(np.float64), near)
    )
