"""The intervals, tests and power the token-level verdict rests on. Pure; numpy and scipy.stats.

Per-token means of clustered positions. A per-token mean is the ratio ``R = Σ_g S_g / Σ_g n_g``
(item g's total S_g over its n_g positions); items are the independent units. Per-position KL
is heavy-tailed (a few near-tied positions carry most of an item's total) and an item's total
with it, so the sampling distribution of ``R`` is right-skewed at the item counts evaluations
use: the symmetric cluster-robust t interval misses mostly on the upper side (83–90 % coverage
at 5–20 items, its upper limit missing 9–16 % of the time; ``benchmarks/token_verdict.py``).

Each limit here is a t limit (``G − 1`` degrees of freedom, jackknife standard errors over
items) on the scale where right skew makes it err on the safe side: the lower limit on the
scale of ``R`` itself (``R − t·se``; right skew only lowers it, and it may be below 0: the data
do not exclude 0), the upper limit on the scale of ``R^−1.5`` (:data:`UPPER_POWER`;
``(R^−1.5 − t·se')^(−2/3)``, which stretches where the data are sparse and is unbounded,
``inf``, when ``R^−1.5 − t·se' <= 0``). Chosen on the benchmark and on resampled canary pairs:
the reciprocal scale (−1) left the upper limit missing 3.5–5.5 % on heavy-tailed data, and its
lower limit missed 6.5 % on the near-symmetric benign pairs at 10 items; −2 was unbounded on
a benign pair whose KL sits on 18 of 120 items (another request order). No positions: 0 with
a zero-width interval; all zero: 0 (nothing varied); one item: [0, ∞); one item carrying all
the mass: no upper limit (``inf``).

The excess of one per-token mean over another on the same items (the pair over the noise
floor) combines their intervals by MOVER (Zou & Donner 2008, the square-and-add of
Newcombe's method 10), with the correlation of their jackknife pseudo-values.

Every interval is a family of bounds indexed by a t value (:meth:`Bounds.at`): ``at(t)`` with
``t = t_{1−γ}`` is the one-sided ``1 − γ`` upper bound, ``at(−t)`` the lower. The p-value of a
one-sided test against a value τ is where that family crosses τ (:func:`crossing`), so an
interval at level ``1 − alpha`` lies below τ exactly when the p-value is below ``alpha / 2``.

Power (:func:`items_needed`) is exact: the one-sided one-sample t test at ``alpha / 2`` (the
verdict's level), with the noncentral t distribution, not a normal approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]

UPPER_POWER = -1.5
"""The scale ``R^UPPER_POWER`` the upper limit is computed on (see the module docstring)."""
MAX_ITEMS = 10**9
"""Beyond this many items a signal counts as undetectable (``items_needed`` is ``inf``)."""


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom."""
    return float(stats.t.ppf(q, df))


@dataclass(frozen=True)
class Ratio:
    """A per-token mean over items and what its interval needs (see the module docstring):
    the leave-one-item-out (jackknife) standard errors of the mean itself (``se``: the lower
    limit) and of ``mean ** UPPER_POWER`` (``se_upper``: the upper limit; ``inf`` when one
    item carries all the mass). ``pseudo`` holds the jackknife pseudo-values (one per item with
    positions): their mean is about ``mean`` and their spread is the item-to-item variation
    the power and the MOVER correlation read."""

    n: int
    mean: float
    se: float
    se_upper: float
    pseudo: tuple[float, ...]

    def at(self, t: float) -> float:
        """The bound at t value ``t`` (upper for ``t > 0``, lower for ``t < 0``)."""
        if self.n == 0 or self.mean == 0.0 or t == 0:
            return self.mean
        if t < 0:  # KL >= 0: without a spread, 0 is the only lower bound there is
            return 0.0 if self.n == 1 else self.mean + t * self.se
        if self.n == 1 or math.isinf(self.se_upper):
            return math.inf
        if self.se_upper == 0.0:  # every item alike: no spread to stretch
            return self.mean
        d = self.mean**UPPER_POWER - t * self.se_upper
        return float(d ** (1 / UPPER_POWER)) if d > 0 else math.inf

    @property
    def df(self) -> int:
        return max(self.n - 1, 1)


def ratio(sums: FloatArray, counts: FloatArray) -> Ratio:
    """The per-token mean of items with totals ``sums`` over ``counts`` positions (items
    without positions are ignored) and its jackknife."""
    keep = counts > 0
    s, n = sums[keep].astype(np.float64), counts[keep].astype(np.float64)
    groups, total = int(keep.sum()), float(n.sum())
    if groups == 0:
        return Ratio(0, 0.0, 0.0, 0.0, ())
    mean = float(s.sum()) / total
    if groups == 1 or mean == 0.0:
        return Ratio(groups, mean, 0.0, math.inf if groups == 1 else 0.0, (mean,) * groups)
    loo = (s.sum() - s) / (total - n)  # leave-one-item-out means
    pseudo = groups * mean - (groups - 1) * loo
    scale = (groups - 1) / groups
    se = math.sqrt(scale * float(np.sum((loo - loo.mean()) ** 2)))
    if not (loo > 0).all():  # one item carries all the mass: no upper limit
        return Ratio(groups, mean, se, math.inf, tuple(pseudo.tolist()))
    inv = loo**UPPER_POWER
    se_upper = math.sqrt(scale * float(np.sum((inv - inv.mean()) ** 2)))
    return Ratio(groups, mean, se, se_upper, tuple(pseudo.tolist()))


@dataclass(frozen=True)
class Bounds:
    """``a − b`` (``b`` None: ``a`` alone) with MOVER bounds; ``r`` the correlation of the two
    estimates' pseudo-values on the same items."""

    a: Ratio
    b: Ratio | None = None
    r: float = 0.0

    @property
    def estimate(self) -> float:
        return self.a.mean - (0.0 if self.b is None else self.b.mean)

    @property
    def df(self) -> int:
        return self.a.df

    def at(self, t: float) -> float:
        if self.b is None:
            return self.a.at(t)
        a, b = self.a, self.b
        da, db = a.at(t) - a.mean, b.mean - b.at(-t)  # both >= 0 for t > 0, <= 0 for t < 0
        if math.isinf(da) or math.isinf(db):
            return math.inf if t > 0 else -math.inf
        spread = math.sqrt(max(da * da + db * db - 2.0 * self.r * da * db, 0.0))
        return self.estimate + (spread if t >= 0 else -spread)

    def interval(self, level: float) -> tuple[float, float]:
        """The two-sided ``level`` interval."""
        t = t_quantile(0.5 + level / 2.0, self.df)
        return self.at(-t), self.at(t)


def bounds(a: Ratio, b: Ratio | None = None) -> Bounds:
    """``a − b`` with the correlation of their pseudo-values (same items, same order)."""
    if b is None or b.n == 0:
        return Bounds(a)
    x, y = np.asarray(a.pseudo), np.asarray(b.pseudo)
    r = 0.0
    if x.size == y.size and x.size > 2 and x.std() > 0 and y.std() > 0:
        r = float(np.corrcoef(x, y)[0, 1])
    return Bounds(a, b, r)


def crossing(b: Bounds, tau: float) -> tuple[float, float]:
    """``(p_below, p_above)``: the one-sided p-values of ``H0: value >= tau`` (small when the
    upper bounds lie below ``tau``) and of ``H0: value <= tau`` (small when the lower bounds
    lie above it), from the t value where the bounds cross ``tau``."""
    lo, hi = -1e12, 1e12
    if b.at(hi) < tau:
        return 0.0, 1.0
    if b.at(lo) > tau:
        return 1.0, 0.0
    if b.at(lo) == b.at(hi):  # no spread, exactly at tau: neither side is shown
        return 1.0, 1.0
    for _ in range(400):
        mid = (lo + hi) / 2.0
        if b.at(mid) < tau:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, abs(mid)):
            break
    t = (lo + hi) / 2.0
    return float(stats.t.sf(t, b.df)), float(stats.t.cdf(t, b.df))


def power(n: int, signal: float, spread: float, alpha: float) -> float:
    """Exact power of the one-sided one-sample t test at ``alpha / 2`` with ``n`` items to see
    a mean of ``signal`` when items vary with standard deviation ``spread``."""
    if n < 2 or signal <= 0:
        return 0.0
    if spread <= 0:
        return 1.0
    df = n - 1
    critical = float(stats.t.isf(alpha / 2.0, df))
    shift = math.sqrt(n) * signal / spread
    if shift > critical + 100:  # scipy's noncentral t gives NaN far out (shift ~1e10)
        return 1.0
    return float(stats.nct.sf(critical, df, shift))


def items_needed(
    values: Sequence[float],
    signal: float | None = None,
    *,
    power_wanted: float = 0.8,
    alpha: float = 0.05,
) -> float:
    """Items the one-sided t test at ``alpha / 2`` needs to see a mean of ``signal`` (default:
    the mean of ``values``) above 0 with ``power_wanted``, items varying as ``values`` do
    (exact, noncentral t); at least 2, ``inf`` for no positive signal or beyond
    :data:`MAX_ITEMS`. ``values`` are per-item figures whose mean is the estimate, e.g. the
    pseudo-values of a path's excess over the floor (``Excess.item_values``)."""
    if len(values) < 2:
        raise ValueError("need at least two items to estimate how items vary")
    if not (0.0 < power_wanted < 1.0 and 0.0 < alpha < 1.0):
        raise ValueError(f"power and alpha must be in (0, 1), got {power_wanted}, {alpha}")
    x = np.asarray(values, dtype=np.float64)
    effect = float(x.mean()) if signal is None else signal
    return items_for(effect, float(x.std(ddof=1)), power_wanted, alpha)


def items_for(signal: float, spread: float, power_wanted: float, alpha: float) -> float:
    """:func:`items_needed` from the signal and the per-item standard deviation."""
    if not signal > 0:
        return math.inf
    if power(MAX_ITEMS, signal, spread, alpha) < power_wanted:
        return math.inf
    low, high = 2, 2
    while power(high, signal, spread, alpha) < power_wanted:
        low, high = high + 1, high * 2
    while low < high:
        mid = (low + high) // 2
        if power(mid, signal, spread, alpha) >= power_wanted:
            high = mid
        else:
            low = mid + 1
    return float(low)
