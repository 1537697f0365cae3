"""The intervals and tests the token-level comparison rests on: Student's t distribution, the
per-token mean of clustered positions with a cluster-robust interval, and the paired t test.
Pure; standard library and numpy only (scipy is a test dependency, never the package's).

- :func:`t_cdf` / :func:`t_ppf`: Student's t through the regularised incomplete beta function
  (Lentz's continued fraction, Numerical Recipes 6.4); the quantile by bisection on the CDF.
- :func:`cluster_mean`: the ratio estimator ``R = Σ_g S_g / Σ_g n_g`` (position sums and counts
  of each item g) with the linearised, cluster-robust variance
  ``V = G/(G−1) · Σ_g (S_g − R·n_g)² / (Σ_g n_g)²`` — what statsmodels' OLS of the values on a
  constant gives with ``cov_type="cluster"`` (CR1) — and a t interval on ``G − 1`` degrees of
  freedom, G the number of items with at least one position.
- :func:`paired_t`: the one-sample t test of per-item differences (scipy's ``ttest_rel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_NORMAL = NormalDist()
_LARGE_DF = 1e7  # beyond this, t and normal agree to ~1e-8 and the continued fraction is slow


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        for aa in (
            m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """The regularised incomplete beta function I_x(a, b); ``y = 1 − x``, passed in because
    the caller can compute it without cancellation."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    # The fraction converges fast on one side of the mean; use the symmetry on the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    if df > _LARGE_DF:
        return _NORMAL.cdf(t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection, ~1e-12)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if df > _LARGE_DF:
        return _NORMAL.inv_cdf(q)
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, max(1.0, _NORMAL.inv_cdf(q))
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Estimate:
    """A mean with its two-sided interval and, for tests, the p-value (1.0 when undefined)."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    p_value: float = 1.0


def cluster_mean(sums: FloatArray, counts: FloatArray, alpha: float) -> Estimate:
    """Per-token mean of clustered positions (see the module docstring).

    ``sums[g]``/``counts[g]`` are item g's total and its number of positions; items without
    positions are ignored. No positions: mean 0 with a zero-width interval (there is nothing
    to be uncertain about, and JSON has no NaN). One item: the interval collapses to the mean
    (no between-item variance can be estimated; ``n`` says so).
    """
    keep = counts > 0
    s, n = sums[keep], counts[keep]
    groups, total = int(keep.sum()), float(n.sum())
    if groups == 0:
        return Estimate(0, 0.0, 0.0, 0.0)
    mean = float(s.sum()) / total
    if groups == 1:
        return Estimate(1, mean, mean, mean)
    var = groups / (groups - 1) * float(np.sum((s - mean * n) ** 2)) / total**2
    half = t_ppf(1.0 - alpha / 2.0, groups - 1) * math.sqrt(var)
    return Estimate(groups, mean, mean - half, mean + half)


Alternative = Literal["two-sided", "greater"]


def paired_t(diffs: FloatArray, alpha: float, alternative: Alternative) -> Estimate:
    """One-sample t test of the mean of ``diffs`` against 0 (a paired t test of the two sides).

    The interval is two-sided at ``1 − alpha`` for a two-sided test and at ``1 − 2·alpha`` for
    a one-sided one, so its lower limit is the one-sided bound: it lies above zero exactly when
    the one-sided test rejects. Zero spread: p is 0 for a nonzero mean and 1 for a zero one
    (scipy's limits). Fewer than two items: mean (or 0), a collapsed interval and p = 1.
    """
    n = int(diffs.size)
    if n == 0:
        return Estimate(0, 0.0, 0.0, 0.0)
    mean = float(diffs.mean())
    if n == 1:
        return Estimate(1, mean, mean, mean)
    se = float(diffs.std(ddof=1)) / math.sqrt(n)
    two = alternative == "two-sided"
    half = t_ppf(1.0 - alpha / 2.0 if two else 1.0 - alpha, n - 1) * se
    if se == 0.0:
        p = 1.0 if mean == 0.0 or (not two and mean < 0.0) else 0.0
    else:
        t = mean / se
        p = 2.0 * t_cdf(-abs(t), n - 1) if two else t_cdf(-t, n - 1)
    return Estimate(n, mean, mean - half, mean + half, min(1.0, p))
