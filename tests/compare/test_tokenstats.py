"""evalpipe.compare.tokens.positions and .stats against hand computation, numpy and scipy, on
traces built with evalpipe.traces.trace_of: the KL estimator, the summaries, where generations
part, the bands. The interval, the verdict and localisation have their own test modules."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats as sps

from evalpipe.compare.tokens.inference import bounds, ratio
from evalpipe.compare.tokens.loc import boundary_offsets
from evalpipe.compare.tokens.positions import position_metrics
from evalpipe.compare.tokens.stats import TAIL_POSITIONS, compare_path
from evalpipe.compare.tokens.verdict import NO_FLOOR
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
        assert (s.mean, s.ci_low, s.ci_high, s.max) == (0, 0, 0, 0)
        assert (s.p99, s.p999) == (None, None)  # 5 positions: no tail to speak of
    assert res.greedy_agreement == 1.0 and res.first_divergence == ()
    assert res.excess is not None and (res.excess.estimate, res.excess.ci_high) == (0.0, 0.0)
    # Nothing diverges, but 5 items are too few to show it: ok needs 10.
    assert res.verdict == "inconclusive" and "5 items < 10: too few" in res.reason
    ten = {f"{k}{j}": v for k, v in pairs.items() for j in range(2)}
    assert compare_path("decode", ten, floor=ten).verdict == "ok"


# --- summaries, intervals and tests -----------------------------------------------------------


def _jackknife_interval(sums: np.ndarray, counts: np.ndarray, level: float) -> tuple[float, float]:
    """The item-jackknife t interval, lower limit on the raw scale and upper on the R^-1.5
    scale, written out once more by hand."""
    g = sums.size
    r = sums.sum() / counts.sum()
    loo = [(sums.sum() - sums[i]) / (counts.sum() - counts[i]) for i in range(g)]

    def se(xs: list[float]) -> float:
        return math.sqrt((g - 1) / g * sum((x - sum(xs) / g) ** 2 for x in xs))

    t = sps.t.ppf(0.5 + level / 2, g - 1)
    upper = r**-1.5 - t * se([x**-1.5 for x in loo])
    return r - t * se(loo), (upper ** (-2 / 3) if upper > 0 else math.inf)


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
    sums = np.asarray([d.sum() for d in deltas])
    counts = np.asarray([d.size for d in deltas], float)
    assert s.mean == pytest.approx(flat.mean()) and s.level == 0.95
    assert (s.ci_low, s.ci_high) == pytest.approx(_jackknife_interval(sums, counts, 0.95))
    assert (s.ci_low, s.ci_high) == pytest.approx(bounds(ratio(sums, counts)).interval(0.95))
    assert s.ci_low < s.mean < s.ci_high and s.ci_high - s.mean > s.mean - s.ci_low
    # p99 needs 5 positions beyond it (500 here or more); p99.9 needs 5 000.
    assert flat.size * 0.01 >= TAIL_POSITIONS > flat.size * 0.001
    assert s.p99 == pytest.approx(np.percentile(flat, 99)) and s.p999 is None
    worst = int(np.argmax([d.max() for d in deltas]))
    assert s.max == pytest.approx(flat.max())
    assert s.worst_item == f"q{worst:02d}"
    assert s.worst_position == 100 + int(np.argmax(deltas[worst]))


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


def test_the_excess_is_the_pair_less_the_floor_on_the_items_both_have() -> None:
    flat = np.full(40, 0.05)
    pair = _forced_pairs(flat, 10, 12, seed=4)
    floor = _forced_pairs(flat * 0.1, 10, 12, seed=5)
    res = compare_path("forced", pair, floor=floor)
    e = res.excess
    assert e is not None and e.n_items == 12 and e.floor_mean is not None
    assert res.floor_metrics is not None and res.floor_metrics["kl"].mean == pytest.approx(
        e.floor_mean
    )
    assert e.pair_mean == pytest.approx(res.metrics["kl"].mean)
    assert e.estimate == pytest.approx(e.pair_mean - e.floor_mean)
    assert e.ci_low < e.estimate < e.ci_high and e.level == 0.95
    assert len(e.item_values) == 12 and np.mean(e.item_values) == pytest.approx(
        e.estimate, rel=0.05
    )
    assert e.spread == pytest.approx(np.std(e.item_values, ddof=1))
    assert res.verdict == "token-drift" and "is above τ = 2.00e-03 (default)" in res.reason
    # a floor on other items only is no floor: the pair's own figures, said so
    elsewhere = {f"x{k}": v for k, v in floor.items()}
    alone = compare_path("forced", pair, floor=elsewhere)
    assert alone.excess is not None and alone.excess.floor_mean is None
    assert "the noise floor is unknown: run the baseline with --repeat 2" in alone.reason


def test_without_a_floor_ok_can_be_shown_and_drift_cannot() -> None:
    small = compare_path("forced", _forced_pairs(np.full(20, 1e-5), 0, 12, seed=6))
    assert small.verdict == "ok" and NO_FLOOR in small.reason
    large = compare_path("forced", _forced_pairs(np.full(20, 0.05), 0, 12, seed=6))
    assert large.verdict == "inconclusive"
    assert "is above τ = 2.00e-03 (default), but the noise floor is unknown" in large.reason


def test_empty_input_is_an_inconclusive_comparison_json_can_carry() -> None:
    res = compare_path("decode", {}, period=16, floor={})
    assert (res.n_items, res.n_tokens, res.verdict) == (0, 0, "inconclusive")
    assert res.reason == "no items with comparable tokens"
    assert res.greedy_agreement is None and res.by_band == () and res.excess is None
    assert res.boundary is not None and res.boundary.reason == "no compared positions"
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
    assert res.parting is not None and (res.parting.prefix_tokens, res.parting.parting_tokens) == (
        9,
        1,
    )
    assert res.parting.parting_mean == pytest.approx(res.metrics["kl"].max)
    assert res.parting.prefix_mean == 0.0  # identical distributions until they part
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


# --- bands -----------------------------------------------------------------------------------


def test_position_bands_split_at_their_edges() -> None:
    pairs = _forced_pairs(np.full(30, 0.01), 500, 3, seed=9)
    res = compare_path("forced", pairs, bands=(512, 520))
    assert [(b.label, b.low, b.high, b.n_tokens, b.n_items) for b in res.by_band] == [
        ("0–511", 0, 511, 36, 3),
        ("512–519", 512, 519, 24, 3),
        ("≥520", 520, 529, 30, 3),
    ]
    assert res.by_residue == () and res.boundary is None


def test_default_bands_show_a_trend_where_fixed_bands_show_one_dot() -> None:
    # GSM8K-like: every position in 700–999, which the old 512/1024 edges put in one band.
    pairs = _forced_pairs(np.linspace(0.001, 0.02, 300), 700, 4, seed=11)
    res = compare_path("forced", pairs)
    assert [(b.low, b.high) for b in res.by_band][:2] == [(672, 703), (704, 735)]
    assert len(res.by_band) == 11 and res.by_band[-1].label == "≥992"
    means = [b.mean for b in res.by_band[1:]]
    assert means == sorted(means)  # the rising KL shows
    per_period = compare_path("forced", pairs, period=64)  # one band per shard period
    assert [b.low for b in per_period.by_band] == [640, 704, 768, 832, 896, 960]
