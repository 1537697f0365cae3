"""The token verdict on a tolerance τ (evalpipe.compare.tokens.verdict and .tail): ok only when
shown, drift when the excess is shown above τ or one item is broken, inconclusive with the
reason; thresholds pinned (alpha / 2, MIN_ITEMS, the power condition), Holm over paths, and
where τ comes from. Traces carry a chosen KL per position (token_fixtures.kl_pair)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from token_fixtures import EXCESS, decode_path, kl_pair

from evalpipe.compare.tokens.stats import compare_path
from evalpipe.compare.tokens.tail import first_bad, tail_test, typical
from evalpipe.compare.tokens.types import PathComparison, TokenComparison, Tolerance
from evalpipe.compare.tokens.verdict import (
    DEFAULT_TOKEN_MARGIN,
    MIN_ITEMS,
    TokenMargin,
    holm_paths,
    margin_from,
    rule,
    tolerances,
)
from evalpipe.traces import StoredTrace

Pairs = dict[str, tuple[StoredTrace, StoredTrace]]


def heavy(rng: np.random.Generator, n: int, mean: float, sigma: float = 1.8) -> np.ndarray:
    """``n`` heavy-tailed per-position KL values of expected ``mean`` (lognormal), capped at
    1.5 nats (what a trace pair can carry)."""
    return np.minimum(mean * rng.lognormal(-(sigma**2) / 2, sigma, n), 1.5)


def items(kls: list[np.ndarray], start: int = 800) -> Pairs:
    return {f"q{i:03d}": kl_pair(kl, f"q{i:03d}", start) for i, kl in enumerate(kls)}


def benign(rng: np.random.Generator, count: int, mean: float = 5e-4) -> list[np.ndarray]:
    return [heavy(rng, int(rng.integers(50, 250)), mean) for _ in range(count)]


def zero_floor(kls: list[np.ndarray]) -> Pairs:
    """A bitwise-reproducible baseline repeat: KL 0 at every position of the same items."""
    return items([np.zeros(k.size) for k in kls])


# --- the verdict on traces ----------------------------------------------------------------------


def test_a_benign_pair_is_ok_and_a_gross_fault_drifts_at_60_items() -> None:
    rng = np.random.default_rng(0)
    kls = benign(rng, 60, 4.7e-4)  # tp2 vs tp1 on GSM8K
    ok = compare_path("forced", items(kls), floor=zero_floor(kls))
    assert ok.verdict == "ok", ok.reason
    assert ok.excess is not None and ok.excess.ci_high < DEFAULT_TOKEN_MARGIN
    assert "is below τ = 2.00e-03 (default)" in ok.reason and "power to see τ" in ok.reason
    gross = benign(rng, 60, 1.2e-2)  # ε = 0.2 key scaling
    drift = compare_path("forced", items(gross), floor=zero_floor(gross))
    assert drift.verdict == "token-drift" and "is above τ" in drift.reason
    assert drift.excess is not None and drift.excess.ci_low > DEFAULT_TOKEN_MARGIN


def test_one_broken_item_of_120_is_drift_and_120_benign_items_are_not() -> None:
    rng = np.random.default_rng(1)
    kls = benign(rng, 120)
    clean = compare_path("forced", items(kls), floor=zero_floor(kls))
    assert clean.verdict == "ok" and clean.tail is not None and clean.tail.p_value > 0.5
    kls[37] = heavy(rng, 150, 0.14, sigma=1.0)  # one item at 0.14 nats/token
    res = compare_path("forced", items(kls), floor=zero_floor(kls))
    assert res.verdict == "token-drift", res.reason
    assert res.excess is not None and res.excess.ci_low < DEFAULT_TOKEN_MARGIN  # not the mean
    t = res.tail
    assert t is not None and t.worst_item == "q037" and t.p_value < 1e-6 and t.n_items == 120
    assert t.first_bad_position == 800 and t.worst_tokens == 150
    assert "item q037 is broken: typical KL" in res.reason and "from position 800" in res.reason


def test_a_spike_does_not_make_an_item_broken_but_a_late_steady_excess_is_found() -> None:
    rng = np.random.default_rng(2)
    spike = heavy(rng, 200, 1e-4)
    spike[120] = 1.5  # one near tie: the item's mean is 7.6e-3, far above τ
    late = np.concatenate([heavy(rng, 150, 1e-4), np.full(150, 0.05)])
    pairs = items([spike, late, *benign(rng, 20)])
    pos = compare_path("forced", pairs)
    assert pos.tail is not None and pos.tail.worst_item == "q001"
    assert pos.tail.first_bad_position == 800 + 150  # where its excess starts
    alone = {k: v for k, v in pairs.items() if k != "q001"}
    assert compare_path("forced", alone).tail.p_value == 1.0  # type: ignore[union-attr]


def test_two_items_at_a_high_kl_against_a_zero_floor_are_never_ok() -> None:
    # The old rule said "ok — within the noise floor" here (p = 0.25).
    kls = [np.full(80, 0.09), np.full(80, 0.09)]
    res = compare_path("forced", items(kls), floor=zero_floor(kls))
    assert res.verdict != "ok"
    tiny = [np.full(80, 1e-6)] * 2
    few = compare_path("forced", items(tiny), floor=zero_floor(tiny))
    assert few.verdict == "inconclusive" and "2 items < 10: too few" in few.reason


def test_the_level_follows_alpha() -> None:
    rng = np.random.default_rng(3)
    kls = benign(rng, 30)
    res = compare_path("forced", items(kls), floor=zero_floor(kls), alpha=0.1)
    assert res.excess is not None and res.excess.level == pytest.approx(0.9)
    assert res.metrics["kl"].level == pytest.approx(0.9) and "(90%)" in res.reason
    assert res.decision is not None and res.decision.alpha == 0.1


# --- the rule's thresholds, pinned --------------------------------------------------------------


def decided(**changes: object) -> PathComparison:
    """The fixture's decode path with decision figures changed, re-decided by the rule."""
    base = decode_path()
    assert base.decision is not None
    decision = dataclasses.replace(
        base.decision,
        **{
            "p_ok": 1.0,
            "p_drift": 1.0,
            "p_ok_adjusted": 1.0,
            "p_drift_adjusted": 1.0,
            "items_needed": 3.0,
            **changes,
        },
    )
    path = dataclasses.replace(base, decision=decision)
    verdict, reason = rule(path)
    return dataclasses.replace(path, verdict=verdict, reason=reason)


def test_ok_and_drift_are_claimed_at_half_alpha_not_a_quarter_or_all_of_it() -> None:
    # alpha = 0.05: one-sided claims at 0.025. Moving it to 0.0125 or 0.05 fails one of these.
    assert decided(p_ok_adjusted=0.02).verdict == "ok"
    assert decided(p_ok_adjusted=0.03).verdict == "inconclusive"
    assert decided(p_drift_adjusted=0.02, p_drift=0.02).verdict == "token-drift"
    assert decided(p_drift_adjusted=0.03, p_drift=0.03).verdict == "inconclusive"


def test_ok_needs_min_items_and_the_items_for_80_percent_power() -> None:
    def with_items(n: int, needed: float) -> PathComparison:
        path = decode_path(excess=dataclasses.replace(EXCESS, n_items=n), n_items=n)
        d = dataclasses.replace(
            path.decision,  # type: ignore[arg-type]
            p_ok_adjusted=0.001,
            p_drift_adjusted=1.0,
            p_drift=1.0,
            items_needed=needed,
        )
        verdict, reason = rule(dataclasses.replace(path, decision=d))
        return dataclasses.replace(path, verdict=verdict, reason=reason)

    assert with_items(MIN_ITEMS, 3).verdict == "ok"
    short = with_items(MIN_ITEMS - 1, 3)
    assert (
        short.verdict == "inconclusive" and f"{MIN_ITEMS - 1} items < {MIN_ITEMS}" in short.reason
    )
    assert with_items(40, 40).verdict == "ok"
    weak = with_items(39, 40)
    assert weak.verdict == "inconclusive"
    assert "too few items for τ" in weak.reason and "needs 40 items" in weak.reason


def test_no_floor_no_drift_and_an_unbounded_mean_is_said() -> None:
    no_floor = decided(p_drift_adjusted=0.001, p_drift=0.001, p_mean_drift=0.001, floor=False)
    assert no_floor.verdict == "inconclusive"
    assert "no baseline repeat to set the noise floor: run the baseline with" in no_floor.reason
    unbounded = dataclasses.replace(EXCESS, ci_low=0.0, ci_high=math.inf)
    path = dataclasses.replace(decided(), excess=unbounded)  # a mean that cannot be bounded
    verdict, reason = rule(path)
    assert verdict == "inconclusive" and "its upper bound is unbounded" in reason


def test_paths_are_holm_adjusted_together() -> None:
    def two(p: float, field: str) -> TokenComparison:
        paths = {
            name: decided(
                **{field: p, f"{field}_adjusted": p},
                **({"p_mean_drift": p} if field == "p_drift" else {}),
            )
            for name in ("decode", "forced")
        }
        paths = {k: dataclasses.replace(v, path=k) for k, v in paths.items()}  # type: ignore[arg-type]
        return TokenComparison("r", "b", 128, paths)  # type: ignore[arg-type]

    for field, alone in (("p_ok", "ok"), ("p_drift", "token-drift")):
        t = two(0.02, field)
        assert {p.verdict for p in t.paths.values()} == {alone}  # each alone: p = 0.02
        (adjusted,) = holm_paths([t])
        assert adjusted is not None
        assert {p.verdict for p in adjusted.paths.values()} == {"inconclusive"}  # Holm: 0.04
        d = adjusted.paths["decode"].decision
        assert d is not None and d.comparisons == 2
        assert getattr(d, f"{field}_adjusted") == pytest.approx(0.04)
    many = holm_paths([two(0.001, "p_ok"), None, two(0.001, "p_ok")])
    assert many[1] is None
    assert {p.decision.comparisons for t in many if t for p in t.paths.values()} == {4}  # type: ignore[union-attr]


# --- the tail test's parts ----------------------------------------------------------------------


def test_the_tail_test_parts() -> None:
    assert typical(np.array([1e-3, 1e-3])) == pytest.approx(1e-3)
    assert typical(np.array([0.0, 0.0])) == 0.0 and typical(np.array([])) == 0.0
    v = np.log(np.array([1e-5, 1e-5, 0.1, 0.2, 0.1]) + 1e-6)
    assert first_bad(v, math.log(1e-3)) == 2
    assert first_bad(v - 100, math.log(1e-3)) is None
    ids = ("a", "b", "c")
    items_ = np.array([0, 0, 0, 1, 1, 1, 2], dtype=np.int64)
    positions = np.array([5, 6, 7, 9, 10, 11, 3], dtype=np.int64)
    values = np.array([1e-5, 1e-5, 1e-5, 0.3, 0.3, 0.31, 0.9])
    t = tail_test(ids, items_, positions, values, {}, 1e-3)
    assert t is not None and t.n_items == 2  # item c has one position: not tested
    assert t.worst_item == "b" and t.first_bad_position == 9
    # Bonferroni: the smallest item p times the items tested
    alone = tail_test(ids[1:2], np.zeros(3, dtype=np.int64), positions[3:6], values[3:6], {}, 1e-3)
    assert alone is not None and t.p_value == pytest.approx(min(1.0, 2 * alone.p_value))
    # the floor's typical KL on the item is allowed on top of the tolerance
    excused = tail_test(ids, items_, positions, values, {"b": 10.0}, 1e-3)
    assert excused is not None and excused.p_value > t.p_value


# --- where τ comes from -------------------------------------------------------------------------


def test_margin_forms_and_bad_margins() -> None:
    assert margin_from(0.003) == TokenMargin(0.003, 0.003, given=True)
    assert margin_from("0.003") == TokenMargin(0.003, 0.003, given=True)
    assert margin_from("decode=0.001, forced=0.004") == TokenMargin(0.001, 0.004, given=True)
    assert margin_from({"forced": 0.004}) == TokenMargin(DEFAULT_TOKEN_MARGIN, 0.004, given=True)
    assert margin_from("3x") == TokenMargin(factor=3.0, given=True)
    for bad in (-0.1, 0, "nan", "inf", "abc", "prefill=0.1", "decode=-1", "0x", True, None):
        with pytest.raises(ValueError):
            margin_from(bad)


def test_tolerances_absolute_relative_and_without_a_reference() -> None:
    assert tolerances(TokenMargin())["decode"] == Tolerance(DEFAULT_TOKEN_MARGIN, "default")
    assert tolerances(margin_from(0.004))["forced"] == Tolerance(0.004, "given")
    reference = TokenComparison("t", "b", None, {"decode": decode_path()})
    relative = tolerances(TokenMargin(factor=3.0, given=True), reference, "tp2 run t vs tp1 run b")
    # The fixture's upper bound is +inf: no τ can come of it; the forced path is not there.
    assert isinstance(relative["decode"], str) and "bounds its decode KL by ∞" in relative["decode"]
    assert (
        relative["forced"]
        == "no τ: the reference pair tp2 run t vs tp1 run b has no forced path to compare"
    )
    bounded = dataclasses.replace(EXCESS, ci_high=5e-4)
    ref = TokenComparison("t", "b", None, {"decode": decode_path(excess=bounded)})
    tau = tolerances(TokenMargin(factor=3.0, given=True), ref, "tp2 run t vs tp1 run b")["decode"]
    assert isinstance(tau, Tolerance) and tau.tau == pytest.approx(1.5e-3)
    assert tau.source == "3 × 5.00e-04, the 95% upper bound of tp2 run t vs tp1 run b"
    missing = tolerances(TokenMargin(factor=3.0, given=True), "the reference pair is missing")
    assert missing["decode"] == "no τ: the reference pair is missing"
    assert tolerances(TokenMargin(factor=3.0, given=True))["decode"].startswith("no τ: a relative")  # type: ignore[union-attr]
