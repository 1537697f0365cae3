"""evalpipe.compare.tokens.stats, .loc and .inference against hand computation, numpy,
scipy and statsmodels, on traces built with evalpipe.traces.trace_of."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as sps

from evalpipe.compare.tokens.inference import cluster_mean, paired_t, t_cdf, t_ppf
from evalpipe.compare.tokens.loc import boundary_offsets
from evalpipe.compare.tokens.stats import (
    NO_FLOOR,
    compare_path,
    item_kl,
    items_needed,
    position_metrics,
)
from evalpipe.traces import StoredTrace, TokenTrace, trace_of

Dist = dict[int, float]


def trace(ids: list[int], dists: list[Dist], k: int = 3) -> TokenTrace:
    """Position i chose ``ids[i]``; ``dists[i]`` are its listed token probabilities."""
    lps = [math.log(d[t]) if t in d else math.log(1e-3) for t, d in zip(ids, dists, strict=True)]
    tops = [[(t, math.log(p)) for t, p in d.items()] for d in dists]
    return trace_of(ids, lps, tops, k)


def stored(t: TokenTrace, item: str = "q", start: int = 0, run: str = "r") -> StoredTrace:
    return StoredTrace(run, item, "", start, t)


def kl_of(base: list[Dist], run: list[Dist], k: int = 3) -> tuple[list[float], int]:
    ids = [max(d, key=lambda t: d[t]) for d in base]
    values, missing = position_metrics(trace(ids, base, k), trace(ids, run, k))
    return values["kl"].tolist(), missing


# --- the KL estimator -------------------------------------------------------------------------


def test_kl_equals_the_exact_kl_when_the_whole_distribution_is_listed() -> None:
    p, q = [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]
    (kl,), missing = kl_of([dict(enumerate(p))], [dict(enumerate(q))])
    assert kl == pytest.approx(sps.entropy(p, q), abs=1e-6)
    assert missing == 0


def test_kl_on_the_coarse_partition_is_a_lower_bound() -> None:
    p = [0.5, 0.2, 0.15, 0.1, 0.05]
    q = [0.3, 0.25, 0.05, 0.2, 0.2]
    base = {0: p[0], 1: p[1]}
    run = {0: q[0], 1: q[1]}
    (kl,), missing = kl_of([base], [run], k=2)
    hand = p[0] * math.log(p[0] / q[0]) + p[1] * math.log(p[1] / q[1]) + 0.3 * math.log(0.3 / 0.45)
    assert kl == pytest.approx(hand, abs=1e-6)
    assert kl < sps.entropy(p, q)
    assert missing == 0


def test_kl_imputes_the_residual_share_of_an_unlisted_token() -> None:
    # B (1) is not in the run's list: residual 0.2 over one token, below the run's 2nd prob 0.3.
    (kl,), missing = kl_of([{0: 0.6, 1: 0.3}], [{0: 0.5, 2: 0.3}], k=2)
    hand = 0.6 * math.log(0.6 / 0.5) + 0.3 * math.log(0.3 / 0.2) + 0.1 * math.log(0.1 / 0.3)
    assert kl == pytest.approx(hand, abs=1e-6)
    assert missing == 1


def test_kl_imputation_is_capped_by_the_runs_last_listed_probability() -> None:
    # Both baseline tokens unlisted: residual 0.45 / 2 = 0.225 exceeds the run's k-th 0.05.
    (kl,), missing = kl_of([{0: 0.5, 1: 0.3}], [{2: 0.5, 3: 0.05}], k=2)
    hand = 0.5 * math.log(0.5 / 0.05) + 0.3 * math.log(0.3 / 0.05) + 0.2 * math.log(0.2 / 0.9)
    assert kl == pytest.approx(hand, abs=1e-6)
    assert missing == 1


def test_padding_and_minus_infinity_stay_finite() -> None:
    base = trace_of([5, 6], [-math.inf, -0.1], [[(5, -0.01)], [(6, -0.1), (7, -3.0)]], k=4)
    run = trace_of([5, 6], [-2.0, -math.inf], [[], [(7, -0.2)]], k=4)
    values, missing = position_metrics(base, run)
    for v in values.values():
        assert np.isfinite(v).all()
        assert (v >= 0).all()
    assert values["abs_dlogprob"][0] == pytest.approx(98.0)  # -inf floored at -100
    assert values["top1_disagree"].tolist() == [1.0, 1.0]
    assert missing == 2


def test_identical_traces_give_zeros_and_ok_against_a_zero_floor() -> None:
    rng = np.random.default_rng(0)
    pairs = {}
    for i in range(5):
        dists = [dict(zip(rng.choice(50, 3, replace=False).tolist(), (0.5, 0.3, 0.1), strict=True))]
        t = trace([max(dists[0], key=lambda x: dists[0][x])] * 1, dists)
        pairs[f"q{i}"] = (stored(t, f"q{i}", 4, "b"), stored(t, f"q{i}", 4, "r"))
    res = compare_path("decode", pairs, period=8, floor=pairs)
    for s in res.metrics.values():
        assert (s.mean, s.ci_low, s.ci_high, s.p99, s.p999, s.max) == (0, 0, 0, 0, 0, 0)
    assert res.greedy_agreement == 1.0 and res.first_divergence == ()
    assert res.verdict == "ok" and "within the noise floor" in res.reason
    assert res.floor is not None and res.floor.p_value == 1.0


# --- summaries, intervals and tests -----------------------------------------------------------


def test_cluster_mean_matches_statsmodels_cluster_robust_ols() -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(9), rng.integers(1, 12, 9))
    y = rng.exponential(size=groups.size) + 0.2 * groups
    fit = sm.OLS(y, np.ones_like(y)).fit(
        cov_type="cluster", cov_kwds={"groups": groups}, use_t=True
    )
    est = cluster_mean(np.bincount(groups, weights=y), np.bincount(groups).astype(np.float64), 0.05)
    ((low, high),) = fit.conf_int(0.05)
    assert (est.mean, est.ci_low, est.ci_high) == pytest.approx((fit.params[0], low, high))


def test_metric_summary_of_abs_dlogprob_by_hand() -> None:
    rng = np.random.default_rng(2)
    pairs, deltas = {}, []
    for i in range(30):
        n = int(rng.integers(1, 40))
        lp_b = rng.uniform(-3, 0, n)
        lp_r = lp_b + rng.normal(0, 0.1 * (1 + i % 3), n)
        ids = list(range(n))
        tops_b = [[(j, float(v))] for j, v in zip(ids, lp_b, strict=True)]
        tops_r = [[(j, float(v))] for j, v in zip(ids, lp_r, strict=True)]
        b = trace_of(ids, lp_b.tolist(), tops_b, 1)
        r = trace_of(ids, lp_r.tolist(), tops_r, 1)
        pairs[f"q{i:02d}"] = (stored(b, f"q{i:02d}", 100), stored(r, f"q{i:02d}", 100))
        deltas.append(np.abs(r.logprobs.astype(np.float64) - b.logprobs))
    s = compare_path("forced", pairs).metrics["abs_dlogprob"]
    flat = np.concatenate(deltas)
    est = cluster_mean(
        np.asarray([d.sum() for d in deltas]), np.asarray([d.size for d in deltas], float), 0.05
    )
    assert s.mean == pytest.approx(flat.mean())
    assert (s.ci_low, s.ci_high) == pytest.approx((est.ci_low, est.ci_high))
    assert s.p99 == pytest.approx(np.percentile(flat, 99))
    assert s.p999 == pytest.approx(np.percentile(flat, 99.9))
    worst = int(np.argmax([d.max() for d in deltas]))
    assert s.max == pytest.approx(flat.max())
    assert s.worst_item == f"q{worst:02d}"
    assert s.worst_position == 100 + int(np.argmax(deltas[worst]))


@pytest.mark.parametrize("df", [1, 2, 5, 29, 1000, 1e6])
def test_student_t_matches_scipy(df: float) -> None:
    for t in (-30.0, -2.0, -1e-3, 0.0, 0.7, 3.0, 500.0):
        assert t_cdf(t, df) == pytest.approx(sps.t.cdf(t, df), rel=1e-8, abs=1e-14)
    for q in (0.0005, 0.025, 0.5, 0.95, 0.975, 0.9995):
        assert t_ppf(q, df) == pytest.approx(sps.t.ppf(q, df), rel=1e-8, abs=1e-10)


def test_paired_t_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1, 25), rng.normal(0, 1, 25)
    two = paired_t(a - b, 0.05, "two-sided")
    ref = sps.ttest_rel(a, b)
    assert two.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    ci = ref.confidence_interval(0.95)
    assert (two.ci_low, two.ci_high) == pytest.approx((ci.low, ci.high))
    one = paired_t(a - b, 0.05, "greater")
    ref1 = sps.ttest_1samp(a - b, 0.0, alternative="greater")
    assert one.p_value == pytest.approx(ref1.pvalue, rel=1e-8)
    assert one.ci_low == pytest.approx(ref1.confidence_interval(0.95).low)
    assert paired_t(np.full(4, 0.2), 0.05, "greater").p_value == 0.0
    assert paired_t(np.zeros(4), 0.05, "two-sided").p_value == 1.0


def _forced_pairs(
    kl_at: np.ndarray, start: int, n_items: int, seed: int
) -> dict[str, tuple[StoredTrace, StoredTrace]]:
    """Forced pairs of ``kl_at.size`` positions: the run moves mass off the top token by a
    random amount whose scale at position i is ``kl_at[i]``."""
    rng = np.random.default_rng(seed)
    pairs = {}
    n = kl_at.size
    for i in range(n_items):
        shift = np.clip(rng.exponential(kl_at) + rng.uniform(0, 0.01, n), 0, 0.3)
        ids = [0] * n
        base = [{0: 0.6, 1: 0.3} for _ in range(n)]
        run = [{0: 0.6 - s, 1: 0.3 + s} for s in shift]
        item = f"q{i}"
        pairs[item] = (
            stored(trace(ids, base), item, start, "b"),
            stored(trace(ids, run), item, start),
        )
    return pairs


def test_floor_test_matches_scipy_and_decides_drift() -> None:
    flat = np.full(40, 0.05)
    pair = _forced_pairs(flat, 10, 12, seed=4)
    floor = _forced_pairs(flat * 0.1, 10, 12, seed=5)
    res = compare_path("forced", pair, floor=floor)
    a, b = item_kl("forced", pair), item_kl("forced", floor)
    ref = sps.ttest_rel(list(a.values()), [b[i] for i in a], alternative="greater")
    assert res.floor is not None and res.floor.n_items == 12
    assert res.floor.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert res.verdict == "token-drift" and "above the noise floor" in res.reason
    assert res.floor_metrics is not None and res.floor_metrics["kl"].mean < res.metrics["kl"].mean
    swapped = compare_path("forced", floor, floor=pair)
    assert swapped.verdict == "ok"


def test_no_floor_or_too_small_a_floor_is_unknown() -> None:
    pair = _forced_pairs(np.full(5, 0.05), 0, 3, seed=6)
    assert compare_path("forced", pair).verdict == "unknown"
    assert compare_path("forced", pair).reason == NO_FLOOR
    one = {"q0": pair["q0"]}
    res = compare_path("forced", pair, floor=one)
    assert res.verdict == "unknown" and res.reason.startswith(NO_FLOOR) and "1 usable" in res.reason


def test_empty_input_is_an_unknown_comparison_json_can_carry() -> None:
    res = compare_path("decode", {}, period=16, floor={})
    assert (res.n_items, res.n_tokens, res.verdict) == (0, 0, "unknown")
    assert res.greedy_agreement is None and res.by_band == () and res.boundary is None
    json.dumps(asdict(res), allow_nan=False)


# --- generations: agreement and divergence ----------------------------------------------------


def test_greedy_agreement_and_first_divergence_on_constructed_generations() -> None:
    d = {1: 0.7, 2: 0.2, 3: 0.1}
    e = {2: 0.6, 1: 0.3, 3: 0.1}
    pairs = {
        "same": (
            stored(trace([1, 1, 1, 1], [d] * 4), start=5),
            stored(trace([1, 1, 1, 1], [d] * 4), start=5),
        ),
        # parts at index 2 (position 12): the run prefers token 2 there
        "parts": (
            stored(trace([1, 1, 1, 1], [d] * 4), start=10),
            stored(trace([1, 1, 2, 2], [d, d, e, e]), start=10),
        ),
        # the run stops after 3 tokens: divergence at the shorter length (position 10)
        "prefix": (
            stored(trace([1] * 5, [d] * 5), start=7),
            stored(trace([1] * 3, [d] * 3), start=7),
        ),
    }
    res = compare_path("decode", pairs, period=4)
    assert res.greedy_agreement == pytest.approx(1 / 3)
    assert res.first_divergence == (10, 12)
    assert res.divergence_offsets == tuple(boundary_offsets(np.array([10, 12]), 4).tolist())
    assert res.divergence_offsets == (2, 0)
    assert res.n_tokens == 4 + 3 + 3  # the parting position is compared, nothing after it
    kl = res.metrics["kl"]
    assert kl.worst_item == "parts" and kl.worst_position == 12
    assert kl.max == pytest.approx(sps.entropy([0.7, 0.2, 0.1], [0.3, 0.6, 0.1]), abs=1e-6)
    assert res.metrics["top1_disagree"].mean == pytest.approx(1 / 10)
    # |Δ logprob| of the baseline's token 1 at the parting position: log 0.7 − log 0.3
    assert res.metrics["abs_dlogprob"].max == pytest.approx(math.log(0.7 / 0.3), abs=1e-6)


def test_forced_path_leaves_out_items_whose_ids_differ() -> None:
    d = {1: 0.7, 2: 0.3}
    pairs = {
        "a": (stored(trace([1, 1], [d, d])), stored(trace([1, 1], [d, d]))),
        "b": (stored(trace([1, 1], [d, d])), stored(trace([1, 2], [d, d]))),
        "c": (stored(trace([1, 1], [d, d]), start=3), stored(trace([1, 1], [d, d]), start=4)),
    }
    res = compare_path("forced", pairs)
    assert (res.n_items, res.n_tokens, res.skipped_items) == (1, 2, 2)
    assert res.greedy_agreement is None and res.first_divergence == ()


# --- localisation -----------------------------------------------------------------------------


def test_boundary_test_sees_divergence_injected_near_boundaries_only() -> None:
    period, width, start, n = 64, 4, 20, 200
    where = np.arange(start, start + n)
    near = np.abs(boundary_offsets(where, period)) <= width
    injected = compare_path(
        "forced",
        _forced_pairs(np.where(near, 0.05, 0.005), start, 20, seed=7),
        period=period,
        width=width,
    )
    uniform = compare_path(
        "forced", _forced_pairs(np.full(n, 0.005), start, 20, seed=8), period=period, width=width
    )
    assert injected.boundary is not None and uniform.boundary is not None
    assert injected.boundary.p_value < 1e-6 and injected.boundary.difference > 0
    assert injected.boundary.ci_low > 0
    assert uniform.boundary.p_value > 0.05
    # the residue classes holding the boundary (0–7 and 56–63 mod 64) carry the excess
    means = {b.label: b.mean for b in injected.by_residue}
    assert min(means["0–7 mod 64"], means["56–63 mod 64"]) > 2 * max(
        means["24–31 mod 64"], means["32–39 mod 64"]
    )
    assert sum(b.n_tokens for b in injected.by_residue) == injected.n_tokens


def test_position_bands_split_at_their_edges() -> None:
    pairs = _forced_pairs(np.full(30, 0.01), 500, 3, seed=9)
    res = compare_path("forced", pairs, bands=(512, 520))
    assert [(b.label, b.low, b.high, b.n_tokens, b.n_items) for b in res.by_band] == [
        ("0–511", 0, 511, 36, 3),
        ("512–519", 512, 519, 24, 3),
        ("≥520", 520, 529, 30, 3),
    ]
    assert res.by_residue == () and res.boundary is None


# --- items needed -----------------------------------------------------------------------------


def test_items_needed_matches_the_closed_form_and_a_simulation() -> None:
    rng = np.random.default_rng(10)
    pair = rng.normal(0.012, 0.004, 200)
    floor = rng.normal(0.010, 0.004, 200)
    need = items_needed(pair.tolist(), floor.tolist())
    diff = pair - floor
    z = sps.norm.ppf(0.95) + sps.norm.ppf(0.8)
    assert need == math.ceil((z * diff.std(ddof=1) / diff.mean()) ** 2)
    sims = rng.normal(diff.mean(), diff.std(ddof=1), (4000, int(need)))
    power = np.mean(sps.ttest_1samp(sims, 0.0, axis=1, alternative="greater").pvalue < 0.05)
    assert 0.75 < power < 0.85
    assert items_needed(floor.tolist(), pair.tolist()) == math.inf


def test_boundary_test_leaves_out_where_generations_part() -> None:
    # Identical prefixes; every item parts right at a boundary (position 32). The parting
    # position carries all the KL but is selected, not located: the test must not see it.
    d, e = {1: 0.7, 2: 0.3}, {2: 0.7, 1: 0.3}
    pairs = {}
    for i in range(6):
        n = 32 - 4 + i % 3  # parts at index n: positions 4 + n = 32, 33, 34
        base = trace([1] * (n + 2), [d] * (n + 2))
        run = trace([1] * n + [2, 2], [d] * n + [e, e])
        pairs[f"q{i}"] = (stored(base, f"q{i}", 4), stored(run, f"q{i}", 4))
    res = compare_path("decode", pairs, period=32, width=4)
    assert res.metrics["kl"].max > 0.3 and res.first_divergence == (32, 32, 33, 33, 34, 34)
    assert res.boundary is not None
    assert (res.boundary.difference, res.boundary.p_value) == (0.0, 1.0)
    json.dumps(asdict(res), allow_nan=False)
