"""Where along the sequence two engines' token distributions part: the per-position KL by
residue of the shard period and by position band, the shard-boundary test, and where first
divergences fall. Pure; numpy and scipy.

Positions are whole-sequence positions (prompt tokens + index), as the KV cache counts them. A
shard boundary is a multiple ``k·period`` with ``k >= 1`` (position 0 starts the first shard
and is no boundary); a position is *near* one when within ``w`` tokens of it, either side.

Windows. A fault at one token per boundary is diluted ``2w + 1`` times by a window of ``w``
tokens, a fault spread over a few tokens is missed by ``w = 0``: the boundary test tries
:data:`WINDOWS` (those whose near set is at most half the period) and takes the largest
standardised contrast, calibrated by the same random draws, so trying several costs no false
alarms (:func:`boundary_test`). Its null keeps every item's positions and KL as they are and
re-places its boundaries at a uniform random phase: valid whatever the KL's dependence along
an item, with one near position or many, and free of the fixed prompt offset that makes a
share of "near" positions differ from ``(2w + 1) / period`` without any boundary effect.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

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
DENSE_PERIOD = 1024
"""Up to this period the test tabulates every item's KL by residue; beyond it, by arcs."""


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


class _Residues:
    """Each item's KL mass and position count in a circular arc of residues mod the period."""

    def __init__(self, items: IntArray, positions: IntArray, values: FloatArray, period: int):
        self.period, self.groups = period, int(items.max()) + 1
        residue = positions % period
        self.dense = period <= DENSE_PERIOD
        if self.dense:
            key = items * period + residue
            size = self.groups * period
            shape = (self.groups, period)
            mass = np.bincount(key, weights=values, minlength=size).astype(np.float64)
            self.mass: FloatArray = mass.reshape(shape)
            self.count: FloatArray = (
                np.bincount(key, minlength=size).astype(np.float64).reshape(shape)
            )
        else:
            order = np.lexsort((residue, items))
            self.key = (items * period + residue)[order]
            self.cum_mass = np.concatenate([[0.0], np.cumsum(values[order])])

    def near(self, phases: IntArray, w: int) -> tuple[FloatArray, FloatArray]:
        """Mass and count within ``w`` residues of each item's phase; ``phases`` has shape
        (draws, items)."""
        if self.dense:
            return self._dense(phases, w)
        mass = np.zeros(phases.shape)
        count = np.zeros(phases.shape)
        for lo, hi in self._arcs(phases, w):
            base = np.arange(self.groups)[None, :] * self.period
            left = np.searchsorted(self.key, base + lo, side="left")
            right = np.searchsorted(self.key, base + hi, side="right")
            mass += np.where(hi >= lo, self.cum_mass[right] - self.cum_mass[left], 0.0)
            count += np.where(hi >= lo, right - left, 0)
        return mass, count

    def _arcs(self, phases: IntArray, w: int) -> list[tuple[IntArray, IntArray]]:
        """The arc ``[phase − w, phase + w]`` as up to two non-wrapping ranges (empty: hi < lo)."""
        p = self.period
        lo, hi = phases - w, phases + w
        first = (np.maximum(lo, 0), np.minimum(hi, p - 1))
        wrapped_low = (np.where(lo < 0, lo + p, p), np.where(lo < 0, p - 1, p - 2))
        wrapped_high = (np.where(hi >= p, 0, 1), np.where(hi >= p, hi - p, 0))
        return [first, wrapped_low, wrapped_high]

    def _dense(self, phases: IntArray, w: int) -> tuple[FloatArray, FloatArray]:
        rows = np.arange(self.groups)[None, :]
        return self._box(self.mass, w)[rows, phases], self._box(self.count, w)[rows, phases]

    def _box(self, table: FloatArray, w: int) -> FloatArray:
        """``table`` summed over the circular window ``[c − w, c + w]`` of every residue c."""
        wrapped = np.concatenate([table[:, table.shape[1] - w :], table, table[:, :w]], axis=1)
        cum = np.concatenate([np.zeros((table.shape[0], 1)), np.cumsum(wrapped, axis=1)], axis=1)
        out: FloatArray = cum[:, 2 * w + 1 :] - cum[:, : table.shape[1]]
        return out


def _contrast(
    mass: FloatArray, count: FloatArray, totals: FloatArray, sizes: FloatArray
) -> FloatArray:
    """Σ_i n_i (f_i − q_i) / Σ n_i: each item's share of its KL mass near a boundary less its
    share of positions there (an item without mass contributes 0)."""
    q = count / sizes
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(totals > 0, mass / totals, q)
    out: FloatArray = ((f - q) * sizes).sum(axis=-1) / sizes.sum()
    return out


def boundary_test(
    items: IntArray, positions: IntArray, values: FloatArray, period: int
) -> BoundaryTest:
    """Do positions near boundaries carry more of their items' KL than their share of
    positions? (See the module docstring and :class:`BoundaryTest`.)"""
    windows = windows_for(period)

    def none(reason: str, n_items: int = 0) -> BoundaryTest:
        return BoundaryTest(period, windows, None, n_items, 0, 0.0, 0.0, 0.0, None, 0, reason)

    if not windows:
        return none(
            f"a period of {period} tokens is too short: every position is next to a boundary"
        )
    if items.size == 0:
        return none("no compared positions")
    groups = int(items.max()) + 1
    sizes = np.bincount(items, minlength=groups).astype(np.float64)
    totals = np.bincount(items, weights=values, minlength=groups).astype(np.float64)
    n_items = int((sizes > 0).sum())
    if not totals.any():
        return none("every compared KL is 0: no divergence to locate", n_items)
    keep = sizes > 0
    table = _Residues(items, positions, values, period)
    observed = np.zeros((1, groups), dtype=np.int64)
    near = [table.near(observed, w) for w in windows]
    if not any(c.sum() for _, c in near):
        return none(
            f"no compared position is within {windows[-1]} tokens of a boundary (positions "
            f"{int(positions.min())}–{int(positions.max())}, boundaries every {period})",
            n_items,
        )
    rng = np.random.default_rng(SEED)
    phases = rng.integers(0, period, size=(DRAWS, groups))
    t_obs, t_null = np.zeros(len(windows)), np.zeros((DRAWS, len(windows)))
    for j, w in enumerate(windows):
        obs = _contrast(near[j][0][:, keep], near[j][1][:, keep], totals[keep], sizes[keep])
        m, c = table.near(phases, w)
        null = _contrast(m[:, keep], c[:, keep], totals[keep], sizes[keep])
        sd = float(null.std())
        scale = sd if sd > 0 else math.inf
        t_obs[j], t_null[:, j] = (obs[0] - null.mean()) / scale, (null - null.mean()) / scale
    best = int(np.argmax(t_obs))
    p = (1 + int(np.sum(t_null.max(axis=1) >= t_obs.max()))) / (DRAWS + 1)
    mass, count = (a[0, keep] for a in near[best])
    near_share = float(count.sum() / sizes.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(totals[keep] > 0, mass / totals[keep], count / sizes[keep])
    kl_share = float((f * sizes[keep]).sum() / sizes.sum())
    return BoundaryTest(
        period=period,
        windows=windows,
        window=windows[best],
        n_items=n_items,
        near_tokens=int(count.sum()),
        near_share=near_share,
        kl_share=kl_share,
        ratio=kl_share / near_share if near_share > 0 else math.inf,
        p_value=p,
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
