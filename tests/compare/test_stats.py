"""evalpipe.compare.stats and .power against scipy/statsmodels and published worked examples.

Tables are written ``T(both_correct, only_run, only_baseline, both_wrong)``; in Newcombe's and
Fagerland's notation that is (a, b, c, d) with the difference (b - c) / n.
"""

from __future__ import annotations

import json
import math

import pytest
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from evalpipe.compare.breakdown import (
    agreement,
    first_difference,
    first_token_difference,
    length_buckets,
)
from evalpipe.compare.power import decide, holm, mde, verdict
from evalpipe.compare.stats import (
    PairedTable,
    compare,
    compare_table,
    holm_adjust,
    mcnemar_exact_p,
    newcombe_paired_ci,
    noise_floor,
    noninferiority_p,
    paired_table,
    tango_ci,
    unpaired,
    wilson,
)

T = PairedTable

# Edge cases first: n = 1 in every cell, all right, all wrong, no discordant pairs.
TABLES = [
    T(1, 0, 0, 0), T(0, 1, 0, 0), T(0, 0, 1, 0), T(0, 0, 0, 1),
    T(50, 0, 0, 0), T(0, 0, 0, 50), T(40, 0, 0, 10), T(0, 25, 0, 0), T(0, 0, 25, 0),
    T(1, 1, 7, 12), T(59, 6, 16, 80), T(7, 25, 2, 68), T(36, 12, 2, 0),
    T(1000, 5, 45, 269), T(1055, 8, 9, 247), T(600, 300, 320, 99),
]  # fmt: skip


def _rows(table: PairedTable) -> list[tuple[bool, bool]]:
    return (
        [(True, True)] * table.both_correct
        + [(True, False)] * table.only_run
        + [(False, True)] * table.only_baseline
        + [(False, False)] * table.both_wrong
    )


# --- the table -------------------------------------------------------------------------------


def test_paired_table_counts_pairs_and_derives_rates() -> None:
    table = paired_table([(True, True), (True, False), (False, True), (False, True), (0, 0)])  # type: ignore[list-item]
    assert table == T(1, 1, 2, 1)
    assert table.n == 5 and table.discordant == 3
    assert table.run_accuracy == pytest.approx(2 / 5)
    assert table.baseline_accuracy == pytest.approx(3 / 5)
    assert table.delta == pytest.approx(table.run_accuracy - table.baseline_accuracy)
    assert table.discordance == pytest.approx(3 / 5)


def test_empty_or_negative_tables_are_refused() -> None:
    empty = paired_table([])
    assert empty.n == 0
    for statistic in (
        lambda: empty.delta,
        lambda: newcombe_paired_ci(empty),
        lambda: noninferiority_p(empty, 0.01),
        lambda: unpaired(empty),
        lambda: compare([]),
    ):
        with pytest.raises(ValueError, match="no paired items"):
            statistic()
    with pytest.raises(ValueError, match="negative"):
        T(1, -1, 0, 0)


# --- Wilson and Newcombe ---------------------------------------------------------------------


@pytest.mark.parametrize("x,n", [(0, 1), (1, 1), (0, 50), (50, 50), (7, 21), (1257, 1319)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels(x: int, n: int, confidence: float) -> None:
    expected = proportion_confint(x, n, alpha=1 - confidence, method="wilson")
    assert wilson(x, n, confidence) == pytest.approx(expected, abs=1e-12)


def test_wilson_limits_at_zero_and_all_are_exact() -> None:
    for n in range(1, 5000, 7):
        assert wilson(0, n, 0.99)[0] == 0.0 and wilson(n, n, 0.99)[1] == 1.0


# Newcombe (1998) Stat Med 17:2635, the method-10 column for the paper's example tables, 4 dp
# (as reproduced by two independent third-party test suites). One row, (1, 97, 1, 1), is
# 0.87367 by the formula and printed 0.8736, hence the 1e-4 tolerance; dropping Newcombe's
# phi correction moves several rows by > 5e-3, so the tolerance still discriminates.
NEWCOMBE_1998_METHOD_10 = [
    ((36, 12, 2, 0), (0.0569, 0.3404)), ((20, 12, 2, 16), (0.0562, 0.3292)),
    ((18, 12, 2, 18), (0.0562, 0.3290)), ((36, 14, 0, 0), (0.1528, 0.4167)),
    ((35, 14, 0, 1), (0.1461, 0.4175)), ((18, 14, 0, 18), (0.1441, 0.3963)),
    ((2, 97, 1, 0), (0.8721, 0.9854)), ((1, 97, 1, 1), (0.8736, 0.9850)),
    ((0, 29, 1, 0), (0.6666, 0.9882)), ((2, 98, 0, 0), (0.9178, 0.9945)),
    ((1, 98, 0, 1), (0.9171, 0.9916)), ((0, 30, 0, 0), (0.8395, 1.0)),
    ((54, 0, 0, 0), (-0.0664, 0.0664)), ((53, 0, 0, 1), (-0.0729, 0.0729)),
    ((30, 0, 0, 24), (-0.0358, 0.0358)), ((29, 0, 0, 25), (-0.0354, 0.0354)),
    ((28, 0, 0, 26), (-0.0352, 0.0352)), ((27, 0, 0, 27), (-0.0351, 0.0351)),
]  # fmt: skip


@pytest.mark.parametrize("cells,limits", NEWCOMBE_1998_METHOD_10)
def test_newcombe_reproduces_published_method_10(
    cells: tuple[int, int, int, int], limits: tuple[float, float]
) -> None:
    assert newcombe_paired_ci(T(*cells)) == pytest.approx(limits, abs=1e-4)


def test_newcombe_matches_fagerland_square_and_add() -> None:
    # Cavo et al. 2012 in Fagerland, Lydersen & Laake (contingencytables, test-ch8.R).
    assert newcombe_paired_ci(T(59, 6, 16, 80)) == pytest.approx((-0.1186, -0.0046), abs=5e-5)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_newcombe_matches_independent_computation(table: PairedTable, confidence: float) -> None:
    """Square-and-add from statsmodels' Wilson limits and the phi of the 0/1 vectors."""
    n, a, b = table.n, table.both_correct, table.only_run
    c, d = table.only_baseline, table.both_wrong
    run, base = zip(*_rows(table), strict=True)
    p1, p2 = sum(run) / n, sum(base) / n
    l1, u1 = proportion_confint(sum(run), n, alpha=1 - confidence, method="wilson")
    l2, u2 = proportion_confint(sum(base), n, alpha=1 - confidence, method="wilson")
    degenerate = len(set(run)) < 2 or len(set(base)) < 2
    phi = 0.0 if degenerate else sps.pearsonr(run, base).statistic
    if phi > 0:  # Newcombe's correction of a positive ad - bc by n/2
        root = math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
        phi = max(a * d - b * c - n / 2, 0) / root
    dl1, du1, dl2, du2 = p1 - l1, u1 - p1, p2 - l2, u2 - p2
    low = p1 - p2 - math.sqrt(dl1**2 - 2 * phi * dl1 * du2 + du2**2)
    high = p1 - p2 + math.sqrt(du1**2 - 2 * phi * du1 * dl2 + dl2**2)
    assert newcombe_paired_ci(table, confidence) == pytest.approx((low, high), abs=1e-9)


# --- McNemar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", [*TABLES, T(0, 400, 520, 0), T(10, 0, 9, 0), T(5, 3, 3, 5), T(0, 1, 30, 0)]
)
def test_mcnemar_exact_matches_statsmodels_and_scipy(table: PairedTable) -> None:
    cells = [[table.both_correct, table.only_run], [table.only_baseline, table.both_wrong]]
    expected = mcnemar(cells, exact=True).pvalue
    assert mcnemar_exact_p(table) == pytest.approx(expected, rel=1e-9)
    if table.discordant:
        binomial = sps.binomtest(table.only_run, table.discordant, 0.5).pvalue
        assert mcnemar_exact_p(table) == pytest.approx(binomial, rel=1e-9)
    else:
        assert mcnemar_exact_p(table) == 1.0


# --- Tango / Nam non-inferiority -------------------------------------------------------------


def _score_p_by_optimisation(table: PairedTable, margin: float) -> float:
    """The score test from first principles: maximise the multinomial likelihood under
    delta = -margin numerically, then Z = (b - c - n*theta) / sqrt(n*(p_b + p_c - theta**2))."""
    n, b, c, theta = table.n, table.only_run, table.only_baseline, -margin
    rest = n - b - c

    def minus_loglik(q: float) -> float:  # q = P(only_baseline), P(only_run) = q + theta
        terms = [(b, q + theta), (c, q), (rest, 1 - 2 * q - theta)]
        return -sum(k * math.log(p) for k, p in terms if k)

    low, high = max(0.0, -theta), (1 - theta) / 2
    q = optimize.minimize_scalar(
        minus_loglik, bounds=(low + 1e-15, high - 1e-15), method="bounded",
        options={"xatol": 1e-14},
    ).x  # fmt: skip
    z = (b - c - n * theta) / math.sqrt(n * (2 * q + theta - theta**2))
    return float(sps.norm.sf(z))


@pytest.mark.parametrize("table", [t for t in TABLES if t.n > 1])
@pytest.mark.parametrize("margin", [0.01, 0.05, 0.2, -0.03])
def test_noninferiority_p_matches_restricted_likelihood(table: PairedTable, margin: float) -> None:
    expected = _score_p_by_optimisation(table, margin)
    assert noninferiority_p(table, margin) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "table,limits,tolerance",
    [
        (T(1, 1, 7, 12), (-0.517, -0.026), 5e-4),  # Fagerland et al. 2014, Table V (Bentur)
        (T(7, 25, 2, 68), (0.139, 0.321), 5e-4),  # Chang et al. 2023 (PMC10763857), Table 3
        (T(59, 6, 16, 80), (-0.1240, -0.0054), 5e-5),  # contingencytables (Cavo)
        (T(0, 3, 0, 0), (-0.1230, 1.0), 5e-5),  # all pairs for the run: upper limit 1
    ],
)
def test_tango_interval_reproduces_published_limits(
    table: PairedTable, limits: tuple[float, float], tolerance: float
) -> None:
    assert tango_ci(table) == pytest.approx(limits, abs=tolerance)


def test_noninferiority_is_exactly_the_printed_interval_above_minus_margin() -> None:
    margin, checked = 0.01, 0
    for b in range(0, 30):
        for c in range(0, 45):
            table = T(1000, b, c, 1319 - 1000 - b - c)
            low = tango_ci(table)[0]
            if abs(low + margin) < 1e-9:
                continue
            assert (noninferiority_p(table, margin) < 0.025) == (low > -margin), (b, c)
            checked += 1
    assert checked > 1300


def test_noninferiority_edges() -> None:
    # No discordant pair: the test still sees n items agreeing, Z = sqrt(n*m / (1 - m)).
    assert noninferiority_p(T(1055, 0, 0, 264), 0.01) == pytest.approx(
        sps.norm.sf(math.sqrt(1319 * 0.01 / 0.99)), rel=1e-12
    )
    assert noninferiority_p(T(1, 0, 0, 0), 0.01) > 0.4  # one item proves nothing
    assert noninferiority_p(T(3, 0, 0, 3), 0.0) == 0.5  # no direction at all
    with pytest.raises(ValueError, match="margin"):
        noninferiority_p(T(1, 0, 0, 0), 1.0)


# --- MDE -------------------------------------------------------------------------------------


def _exact_drift_power(n: int, noise: float, drop: float, alpha: float = 0.05) -> float:
    """Exact power of 'loss and two-sided exact McNemar p < alpha' under noise + drop."""
    psi, to_baseline = noise + drop, (noise / 2 + drop) / (noise + drop)
    power = 0.0
    for m in range(1, n + 1):
        weight = sps.binom.pmf(m, n, psi)
        if weight < 1e-13 and m > n * psi:
            break
        critical = next(
            (c for c in range(m // 2 + 1, m + 1) if 2 * sps.binom.sf(c - 1, m, 0.5) < alpha), None
        )
        if critical is not None and 2 * critical > m:
            power += weight * sps.binom.sf(critical - 1, m, to_baseline)
    return float(power)


@pytest.mark.parametrize(
    "n,noise", [(300, 0.01), (1319, 1 / 1319), (1319, 0.0025), (1319, 0.01), (1319, 0.02),
                (5000, 0.005)],
)  # fmt: skip
def test_mde_is_detected_with_at_least_the_claimed_power(n: int, noise: float) -> None:
    drop = mde(n, noise)
    assert 0.80 <= _exact_drift_power(n, noise, drop) <= 0.92
    # ...and is not grossly conservative: 80 % of it is detected with less than that power.
    assert _exact_drift_power(n, noise, 0.8 * drop) < 0.80


def test_mde_solves_connors_equation_and_is_monotone() -> None:
    n, noise = 1319, 0.01
    drop = mde(n, noise)
    za, zb = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    psi = noise + drop
    assert (n * drop - 1) / math.sqrt(n) == pytest.approx(
        za * math.sqrt(psi) + zb * math.sqrt(psi - drop**2), rel=1e-9
    )
    assert mde(n, 0.0) > 5 / n  # never claimed 0, even with no noise at all
    assert mde(n, 0.02) > mde(n, 0.01) > mde(n, 0.005)
    assert mde(5000, 0.01) < mde(1319, 0.01) < mde(300, 0.01)
    assert mde(n, 0.01, alpha=0.01) > mde(n, 0.01) > mde(n, 0.01, power=0.5)
    assert mde(1, 0.5) == math.inf
    with pytest.raises(ValueError):
        mde(0, 0.1)
    with pytest.raises(ValueError):
        mde(100, 1.5)


# --- unpaired reference ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", [t for t in TABLES if 0 < t.run_accuracy + t.baseline_accuracy < 2]
)
def test_unpaired_matches_statsmodels(table: PairedTable) -> None:
    n = table.n
    x1 = table.both_correct + table.only_run
    x2 = table.both_correct + table.only_baseline
    ref = unpaired(table)
    expected = confint_proportions_2indep(x1, n, x2, n, method="newcomb", compare="diff")
    assert (ref.ci_low, ref.ci_high) == pytest.approx(expected, abs=1e-12)
    if x1 == x2:
        assert ref.p_value == pytest.approx(1.0)
    else:
        assert ref.p_value == pytest.approx(proportions_ztest([x1, x2], [n, n])[1], rel=1e-9)
        chi2 = sps.chi2_contingency([[x1, n - x1], [x2, n - x2]], correction=False)
        assert ref.p_value == pytest.approx(chi2.pvalue, rel=1e-9)


def test_unpaired_all_right_or_all_wrong_has_no_evidence() -> None:
    assert unpaired(T(50, 0, 0, 0)).p_value == 1.0
    assert unpaired(T(0, 0, 0, 50)).p_value == 1.0


def test_pairing_narrows_the_interval() -> None:
    result = compare_table(T(1000, 5, 45, 269))
    paired_width = result.ci_high - result.ci_low
    unpaired_width = result.unpaired_ci_high - result.unpaired_ci_low
    assert paired_width < 0.5 * unpaired_width
    assert result.p_value < 1e-8 < result.unpaired_p


# --- Holm ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pvalues",
    [[0.01, 0.04, 0.03, 0.2], [0.02, 0.02, 0.02], [1.0, 0.5], [0.0, 1e-10, 0.5, 0.049], [0.03]],
)
def test_holm_matches_statsmodels(pvalues: list[float]) -> None:
    expected = multipletests(pvalues, method="holm")[1]
    assert holm(pvalues) == pytest.approx(list(expected), abs=1e-15)


# --- verdicts --------------------------------------------------------------------------------


def test_clear_drift_is_drift() -> None:
    result = compare_table(T(1000, 5, 45, 269))  # -3 points, 40 net flips against the run
    assert result.verdict == "drift"
    assert "McNemar" in result.reason


def test_identical_answers_at_gsm8k_size_are_ok() -> None:
    result = compare(_rows(T(1055, 0, 0, 264)))
    assert result.verdict == "ok"
    assert result.ci_low > -result.margin


def test_too_few_items_are_inconclusive_even_if_identical() -> None:
    result = compare_table(T(40, 0, 0, 10))
    assert result.verdict == "inconclusive"
    assert "min_n" in result.reason


def test_noisy_engine_is_inconclusive_not_ok() -> None:
    # 4.5 % discordance, balanced: no loss seen, but the interval still reaches past -1 point.
    result = compare_table(T(1000, 30, 30, 259))
    assert result.ci_low < -result.margin < result.delta
    assert result.verdict == "inconclusive"
    assert "not shown" in result.reason and f"MDE {result.mde * 100:.2f} points" in result.reason


def test_two_percent_balanced_noise_without_loss_is_ok_though_the_mde_exceeds_the_margin() -> None:
    # GSM8K size, 2 % discordance (13 flips each way), no loss: the 95 % interval excludes
    # -1 point, so the pass is earned; the MDE (1.5 points) is reported, not a veto.
    result = compare_table(T(1093, 13, 13, 200))
    assert result.mde > 0.015 > result.margin
    assert -0.0085 < result.ci_low < -0.0075  # the "about -0.8 points"
    assert result.verdict == "ok"
    assert result.reason.startswith("non-inferior within 1.00 points")
    assert "MDE 1.5" in result.reason and "could go unseen" in result.reason


def test_a_margin_sized_loss_in_the_same_noise_is_not_ok() -> None:
    # The same 2 % noise plus 13 one-way flips: a true loss of 0.99 points.
    result = compare_table(T(1080, 13, 26, 200))
    assert result.ci_low < -result.margin
    assert result.noninferiority_p >= result.alpha / 2
    assert result.verdict != "ok"


@pytest.mark.parametrize("noise", [0.0025, 0.005, 0.01, 0.02])
def test_false_pass_rate_at_a_margin_sized_loss_is_below_alpha_half(noise: float) -> None:
    """Exact P(ok) when the true loss equals the margin: the guarantee ``ok`` rests on."""
    n, margin, false_pass = 1319, 0.01, 0.0
    psi, to_baseline = noise + margin, (noise / 2 + margin) / (noise + margin)
    for m in range(1, n + 1):
        weight = sps.binom.pmf(m, n, psi)
        if weight < 1e-13 and m > n * psi:
            break
        for c in range(m + 1):
            if compare_table(T(n - m - 200, m - c, c, 200), margin=margin).verdict == "ok":
                false_pass += weight * sps.binom.pmf(c, m, to_baseline)
    # The score test is approximate; exactly, 2.0-2.3 % here: close to, and under, alpha / 2.
    assert 0.015 < false_pass <= 0.025


def test_significant_loss_inside_the_margin_is_ok() -> None:
    result = compare_table(T(80000, 1000, 1200, 17800))  # -0.2 points, established
    assert result.p_value < 1e-4
    assert result.verdict == "ok"


def test_a_detected_loss_is_reported_even_when_underpowered() -> None:
    result = compare_table(T(100, 0, 12, 38))
    assert result.mde > result.margin
    assert result.verdict == "drift"


def test_verdict_thresholds_are_strict() -> None:
    common = {"n": 1319, "delta": -0.02, "mde": 0.005, "margin": 0.01, "alpha": 0.05}
    assert verdict(p_value=0.05, noninferiority_p=0.5, **common)[0] == "inconclusive"  # type: ignore[arg-type]
    assert verdict(p_value=0.0499, noninferiority_p=0.5, **common)[0] == "drift"  # type: ignore[arg-type]
    # A (significant) gain is never a drift, whatever the non-inferiority p says.
    assert verdict(p_value=0.001, noninferiority_p=0.5, **{**common, "delta": 0.02})[0] != "drift"  # type: ignore[arg-type]
    common["delta"] = 0.0
    assert verdict(p_value=1.0, noninferiority_p=0.025, **common)[0] == "inconclusive"  # type: ignore[arg-type]
    assert verdict(p_value=1.0, noninferiority_p=0.0249, **common)[0] == "ok"  # type: ignore[arg-type]
    # The MDE is reported, never decisive: far above the margin, non-inferiority still passes.
    common["mde"] = 0.05
    decided, why = verdict(p_value=1.0, noninferiority_p=0.0249, **common)  # type: ignore[arg-type]
    assert decided == "ok" and "MDE 5.00 points" in why
    decided, why = verdict(p_value=1.0, noninferiority_p=0.025, **common)  # type: ignore[arg-type]
    assert decided == "inconclusive" and "MDE 5.00 points" in why


@pytest.mark.parametrize("noise", [0.0025, 0.005, 0.01, 0.02])
def test_false_alarm_rate_at_no_drift_is_below_alpha(noise: float) -> None:
    """Exact P(drift) at a true delta of 0, summing over every possible discordant split."""
    n, false_alarm = 1319, 0.0
    for m in range(1, n + 1):
        weight = sps.binom.pmf(m, n, noise)
        if weight < 1e-13 and m > n * noise:
            break
        for c in range(m // 2 + 1, m + 1):  # drift needs more flips against the run
            table = T(n - m - 200, m - c, c, 200)
            if compare_table(table).verdict == "drift":
                false_alarm += weight * sps.binom.pmf(c, m, 0.5)
    assert false_alarm <= 0.025


def test_holm_adjust_can_withdraw_a_drift() -> None:
    alone = compare_table(T(1000, 5, 15, 299))  # McNemar p = 0.041
    assert alone.verdict == "drift"
    both = holm_adjust([alone, compare_table(T(1000, 0, 0, 319))])
    assert both[0].p_value == alone.p_value
    assert both[0].p_adjusted == pytest.approx(2 * alone.p_value)
    assert both[0].verdict == "inconclusive"
    assert both[0].reason.endswith("[Holm, 2 comparisons]")
    assert both[0].mde > alone.mde  # powered at alpha / 2
    assert holm_adjust([alone]) == [alone]


def test_decide_uses_the_noise_floor_when_it_is_larger() -> None:
    quiet = decide(1319, 0.0, 0.001, 1.0, 1e-4)
    noisy = decide(1319, 0.0, 0.001, 1.0, 1e-4, noise_discordance=0.02)
    assert noisy[0] == pytest.approx(mde(1319, 0.02)) and noisy[0] > 0.01
    assert quiet[0] == pytest.approx(mde(1319, 0.001))
    # The floor raises the reported MDE; the verdict rests on non-inferiority alone.
    assert quiet[1] == noisy[1] == "ok"
    assert f"MDE {noisy[0] * 100:.2f} points" in noisy[2]


@pytest.mark.parametrize("table", TABLES)
def test_compare_handles_every_edge_table(table: PairedTable) -> None:
    result = compare_table(table)
    assert -1.0 <= result.ci_low <= result.delta <= result.ci_high <= 1.0
    assert 0.0 <= result.p_value <= 1.0 and 0.0 <= result.noninferiority_p <= 1.0
    assert result.p_adjusted == result.p_value
    if table.n < 100:
        assert result.verdict == "inconclusive"
    json.dumps(result.to_dict(), allow_nan=False)


def test_to_dict_is_flat_fractions_and_json_safe() -> None:
    result = compare_table(T(1000, 5, 45, 269), noise_discordance=0.01)
    data = result.to_dict()
    for key in ("n", "both_correct", "only_run", "only_baseline", "both_wrong", "run_accuracy",
                "baseline_accuracy", "delta", "ci_low", "ci_high", "p_value", "noninferiority_p",
                "mde", "verdict", "unpaired_ci_low", "unpaired_ci_high", "unpaired_p",
                "noise_discordance"):  # fmt: skip
        assert key in data
    assert data["run_accuracy"] == pytest.approx(1005 / 1319)
    assert data["delta"] == pytest.approx(-40 / 1319)
    assert data["noise_discordance"] == 0.01
    assert compare_table(T(1, 0, 0, 0)).to_dict()["mde"] is None  # nothing detectable at n = 1


# --- generation agreement, buckets, noise floor ----------------------------------------------


def test_first_difference() -> None:
    assert first_difference("The answer is 42", "The answer is 42") is None
    assert first_difference("The answer is 42", "The answer is 43") == 15
    assert first_difference("abc", "abcdef") == 3
    assert first_difference("", "x") == 0
    assert first_difference("héllo", "hèllo") == 1
    assert first_token_difference([5, 9, 2], [5, 9, 2]) is None
    assert first_token_difference([5, 9, 2], [5, 8, 2]) == 1
    assert first_token_difference([5, 9], [5, 9, 2]) == 2


def test_agreement() -> None:
    assert agreement([("a", "a"), ("a", "b"), ("c", "c"), ("", "")]) == 0.75
    with pytest.raises(ValueError):
        agreement([])


def test_length_buckets() -> None:
    rows = [(10, True, True), (99, True, False), (100, False, True), (150, False, True),
            (199, True, True), (5000, False, False)]  # fmt: skip
    buckets = length_buckets(rows, (100, 200, 400))
    assert [(b.low, b.high, b.n) for b in buckets] == [
        (0, 100, 2), (100, 200, 3), (200, 400, 0), (400, None, 1)
    ]  # fmt: skip
    assert (buckets[0].only_run, buckets[0].only_baseline, buckets[0].delta) == (1, 0, 0.5)
    assert (buckets[1].only_run, buckets[1].only_baseline) == (0, 2)
    assert buckets[1].delta == pytest.approx(-2 / 3)
    assert buckets[2].delta is None
    with pytest.raises(ValueError):
        length_buckets(rows, (200, 100))
    with pytest.raises(ValueError):
        length_buckets([(-1, True, True)], (100,))


def test_noise_floor_is_the_mean_discordance_of_baseline_repeats() -> None:
    assert noise_floor([T(90, 1, 1, 8), T(90, 3, 1, 6)]) == pytest.approx((0.02 + 0.04) / 2)
    with pytest.raises(ValueError, match="repeats"):
        noise_floor([])
