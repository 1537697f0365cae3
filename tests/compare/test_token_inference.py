"""evalpipe.compare.tokens.inference: the item-jackknife interval of a per-token mean, MOVER for an
excess, the p-values where bounds cross τ, and exact power, against hand computation and
scipy (noncentral t), with a simulation where a closed form would only restate the code."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from evalpipe.compare.tokens.inference import (
    Bounds,
    bounds,
    crossing,
    items_for,
    items_needed,
    power,
    ratio,
)


def _arrays(sums: list[float], counts: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)


# --- the interval of one per-token mean -------------------------------------------------------


def test_degenerate_inputs_have_honest_intervals() -> None:
    assert bounds(ratio(*_arrays([], []))).interval(0.95) == (0.0, 0.0)  # nothing to bound
    assert bounds(ratio(*_arrays([0, 0, 0], [3, 4, 5]))).interval(0.95) == (0.0, 0.0)
    # one item: no spread; one item carrying all the mass: no upper limit
    assert bounds(ratio(*_arrays([2.0], [10]))).interval(0.95) == (0.0, math.inf)
    alone = ratio(*_arrays([2.0, 0, 0, 0], [10, 10, 10, 10]))
    low, high = bounds(alone).interval(0.95)
    assert alone.mean == 0.05 and low < 0 and high == math.inf  # 0 is not excluded either
    # items without positions do not count
    assert ratio(*_arrays([1.0, 0.0, 2.0], [10, 0, 10])).n == 2


def test_the_interval_is_asymmetric_above_zero_and_widens_with_the_level() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(20, 200, 30).astype(np.float64)
    sums = counts * rng.lognormal(-7, 0.7, 30)
    b = bounds(ratio(sums, counts))
    low95, high95 = b.interval(0.95)
    low90, high90 = b.interval(0.90)
    mean = sums.sum() / counts.sum()
    assert low95 < low90 < mean < high90 < high95
    assert high95 - mean > mean - low95  # right-skewed, as the estimator is
    loo = (sums.sum() - sums) / (counts.sum() - counts)
    se = math.sqrt(29 / 30 * np.sum((loo - loo.mean()) ** 2))
    assert low95 == pytest.approx(mean - sps.t.ppf(0.975, 29) * se)  # raw scale below
    # the bound family is monotone in t and passes through the mean at 0
    ts = np.linspace(-4, 4, 81)
    values = [b.at(float(t)) for t in ts]
    assert values == sorted(values) and b.at(0.0) == pytest.approx(mean)


def test_pseudo_values_average_to_the_estimate_and_carry_its_jackknife_error() -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(10, 50, 30).astype(np.float64)
    sums = counts * rng.exponential(1e-3, 30)
    r = ratio(sums, counts)
    pseudo = np.asarray(r.pseudo)
    loo = (sums.sum() - sums) / (counts.sum() - counts)
    jack_se = math.sqrt(29 / 30 * np.sum((loo - loo.mean()) ** 2))
    assert pseudo.std(ddof=1) / math.sqrt(30) == pytest.approx(jack_se)
    assert pseudo.mean() == pytest.approx(r.mean, rel=0.05)


# --- an excess over a floor (MOVER) -------------------------------------------------------------


def test_a_zero_floor_leaves_the_pairs_interval_and_mover_adds_the_floors_spread() -> None:
    rng = np.random.default_rng(2)
    counts = rng.integers(50, 150, 20).astype(np.float64)
    pair = ratio(counts * rng.lognormal(-6, 0.7, 20), counts)
    zero = ratio(np.zeros(20), counts)
    assert bounds(pair, zero).interval(0.95) == pytest.approx(bounds(pair).interval(0.95))
    floor = ratio(counts * rng.lognormal(-8, 0.7, 20), counts)
    b = bounds(pair, floor)
    (l1, u1), (l2, u2) = bounds(pair).interval(0.95), bounds(floor).interval(0.95)
    d = pair.mean - floor.mean
    want_low = d - math.sqrt((pair.mean - l1) ** 2 + (u2 - floor.mean) ** 2
                             - 2 * b.r * (pair.mean - l1) * (u2 - floor.mean))  # fmt: skip
    want_high = d + math.sqrt((u1 - pair.mean) ** 2 + (floor.mean - l2) ** 2
                              - 2 * b.r * (u1 - pair.mean) * (floor.mean - l2))  # fmt: skip
    assert b.interval(0.95) == pytest.approx((want_low, want_high))
    assert b.r == pytest.approx(np.corrcoef(pair.pseudo, floor.pseudo)[0, 1])


# --- p-values where the bounds cross τ ----------------------------------------------------------


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_an_interval_lies_below_tau_exactly_when_p_is_below_half_its_alpha(level: float) -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(50, 150, 25).astype(np.float64)
    pair = ratio(counts * rng.lognormal(-7, 0.8, 25), counts)
    floor = ratio(counts * rng.lognormal(-9, 0.8, 25), counts)
    for b in (bounds(pair), bounds(pair, floor)):
        low, high = b.interval(level)
        tail = (1 - level) / 2
        p_below, _ = crossing(b, high)  # τ at the upper bound: p is exactly the tail
        _, p_above = crossing(b, low)
        assert p_below == pytest.approx(tail, rel=1e-6)
        assert p_above == pytest.approx(tail, rel=1e-6)
        assert crossing(b, high * 1.0001)[0] < tail < crossing(b, high * 0.9999)[0]


def test_crossing_of_a_flat_or_unbounded_family() -> None:
    flat = Bounds(ratio(*_arrays([1.0, 1.0], [10, 10])))  # no spread at all
    assert crossing(flat, 0.2) == (0.0, 1.0) and crossing(flat, 0.05) == (1.0, 0.0)
    assert crossing(flat, 0.1) == (1.0, 1.0)
    unbounded = Bounds(ratio(*_arrays([1.0, 0.0, 0.0], [10, 10, 10])))
    p_below, p_above = crossing(unbounded, 1.0)
    assert p_below == pytest.approx(0.5) and p_above == pytest.approx(0.5)  # neither is shown


# --- exact power --------------------------------------------------------------------------------


def test_power_is_the_noncentral_t_at_half_alpha() -> None:
    for n, d in ((5, 1.0), (12, 0.7), (40, 0.3)):
        df = n - 1
        want = sps.nct.sf(sps.t.isf(0.025, df), df, math.sqrt(n) * d)
        assert power(n, d, 1.0, 0.05) == pytest.approx(want)
    assert power(1, 1.0, 1.0, 0.05) == 0.0 and power(10, 0.0, 1.0, 0.05) == 0.0
    assert power(3, 1.0, 0.0, 0.05) == 1.0


def test_power_is_one_when_items_barely_vary() -> None:
    """Two kernels that agree to rounding (KL ~1e-11 per item, spread ~1e-12) against τ:
    the noncentral t is far out, where scipy returns NaN; the power is 1."""
    assert power(32, 2e-3, 1e-12, 0.05) == 1.0
    assert power(32, 2e-3, 1e-3, 0.05) == pytest.approx(1.0, abs=1e-9)


def test_items_needed_is_the_smallest_n_with_80_percent_exact_power() -> None:
    for d in (2.5, 1.6, 1.2, 0.5, 0.2):
        n = int(items_for(d, 1.0, 0.8, 0.05))
        assert power(n, d, 1.0, 0.05) >= 0.8 > power(n - 1, d, 1.0, 0.05) or n == 2
    # Where the normal approximation n = ((z_a + z_b) sd / mean)^2 says 2, 3 or 5 items, the
    # exact power of that many is far below 80 %; the exact count is larger.
    z = sps.norm.isf(0.025) + sps.norm.ppf(0.8)
    for approx in (2, 3, 5):
        d = z / math.sqrt(approx)
        assert power(approx, d, 1.0, 0.05) < 0.75
        assert items_for(d, 1.0, 0.8, 0.05) > approx
    assert items_for(-1.0, 1.0, 0.8, 0.05) == math.inf
    assert items_for(1e-12, 1.0, 0.8, 0.05) == math.inf  # beyond any evaluation


def test_items_needed_from_per_item_values_holds_in_simulation() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(3e-4, 6e-4, 120)
    n = int(items_needed(values.tolist()))
    assert n == items_for(float(values.mean()), float(values.std(ddof=1)), 0.8, 0.05)
    sims = rng.normal(values.mean(), values.std(ddof=1), (4000, n))
    test = sps.ttest_1samp(sims, 0.0, axis=1, alternative="greater")
    assert 0.77 < np.mean(test.pvalue < 0.025) < 0.83
    assert items_needed(values.tolist(), signal=2e-3) < n  # a larger signal needs fewer
    with pytest.raises(ValueError):
        items_needed([1.0])
