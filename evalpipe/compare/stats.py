"""Paired statistics of a layout against its baseline; pure functions, no I/O.

One responsibility: turn per-question correctness pairs ``(run_correct, baseline_correct)`` —
run = the layout under test (``dp2tp8dcp8``), baseline = its non-CP twin (``dp2tp8``) on the same
questions, greedy — into the figures a verdict rests on; :mod:`evalpipe.compare.power` holds
the rule and the MDE, ``compare`` joins them. The binomial is scipy.stats'; what scipy lacks
(Tango's score test and interval, Newcombe's) is written here, and tests check every figure
against scipy/statsmodels or published worked examples.

Conventions. Rates are fractions (0.9535, not 95.35). ``delta = run - baseline``: a loss is
negative. ``alpha`` is two-sided: the interval has confidence ``1 - alpha``.

Methods.
* Loss test: exact McNemar, two-sided binomial(b + c, 1/2) on the discordant pairs.
* Non-inferiority: Tango (1998) / Nam (1997) score test of ``H0: delta <= -margin``, with the
  cell probabilities re-estimated under H0 (restricted MLE).
* Interval for delta (``ci_low``/``ci_high``): Tango's score interval, the inverted test, so
  non-inferiority is shown exactly when the printed interval lies above -margin. Newcombe's
  (1998, Stat Med 17:2635) method 10 is offered too; at n = 1319 it differs by up to ~0.15
  points, enough to contradict the verdict near the margin were it the printed one.
* Unpaired reference: Newcombe hybrid score interval and pooled two-proportion z test, as if the
  runs had answered different questions; the width ratio shows what pairing gains.
* Several comparisons in one report: ``holm_adjust`` Holm-adjusts the loss and the
  non-inferiority p-values (two families), recomputes the MDE at ``alpha / k`` (Holm's first
  step) and re-decides; the printed intervals stay unadjusted.
* Generation agreement (identical raw outputs, first differing character/token), prompt-length
  buckets and the noise floor (mean discordance between baseline repeats) are descriptive.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any

from evalpipe.compare.power import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    DEFAULT_MIN_N,
    Verdict,
    decide,
    holm,
)

_NORMAL = NormalDist()


@dataclass(frozen=True)
class PairedTable:
    """The paired 2x2 table: run = layout under test, baseline = its non-CP twin."""

    both_correct: int
    only_run: int
    only_baseline: int
    both_wrong: int

    def __post_init__(self) -> None:
        if min(self.both_correct, self.only_run, self.only_baseline, self.both_wrong) < 0:
            raise ValueError(f"negative count in {self}")

    @property
    def n(self) -> int:
        return self.both_correct + self.only_run + self.only_baseline + self.both_wrong

    @property
    def discordant(self) -> int:
        return self.only_run + self.only_baseline

    @property
    def discordance(self) -> float:
        return self.discordant / _items(self)

    @property
    def run_accuracy(self) -> float:
        return (self.both_correct + self.only_run) / _items(self)

    @property
    def baseline_accuracy(self) -> float:
        return (self.both_correct + self.only_baseline) / _items(self)

    @property
    def delta(self) -> float:
        return (self.only_run - self.only_baseline) / _items(self)


def _items(table: PairedTable) -> int:
    if table.n == 0:
        raise ValueError("no paired items: a statistic of an empty comparison is undefined")
    return table.n


def paired_table(pairs: Iterable[tuple[bool, bool]]) -> PairedTable:
    """Count ``(run_correct, baseline_correct)`` pairs into a :class:`PairedTable`."""
    seen = Counter((bool(run), bool(base)) for run, base in pairs)
    return PairedTable(seen[True, True], seen[True, False], seen[False, True], seen[False, False])


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a single proportion (no continuity correction)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n successes the limit is exactly 0 or 1; the formula would leave float dust.
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


def newcombe_paired_ci(table: PairedTable, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe (1998) method 10 for ``table.delta``: Wilson limits of both accuracies,
    square-and-added with the correlation phi; a positive ``ad - bc`` is shrunk by ``n/2`` (not
    below 0) and phi = 0 when a margin of the table is 0, as Newcombe does."""
    n = _items(table)
    a, b, c, d = table.both_correct, table.only_run, table.only_baseline, table.both_wrong
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if margins == 0:
        phi = 0.0  # correlation undefined with an empty margin; Newcombe takes 0
    elif cross > 0:
        phi = max(cross - n / 2, 0.0) / math.sqrt(margins)
    else:
        phi = cross / math.sqrt(margins)
    dl1, du1, dl2, du2 = p1 - l1, u1 - p1, p2 - l2, u2 - p2
    low = table.delta - math.sqrt(max(dl1 * dl1 - 2 * phi * dl1 * du2 + du2 * du2, 0.0))
    high = table.delta + math.sqrt(max(du1 * du1 - 2 * phi * du1 * dl2 + dl2 * dl2, 0.0))
    return max(-1.0, low), min(1.0, high)


def mcnemar_exact_p(table: PairedTable) -> float:
    """Two-sided exact McNemar p: doubled binomial(b + c, 1/2) tail of the smaller count."""
    m = table.discordant
    if m == 0:
        return 1.0
    k = min(table.only_run, table.only_baseline)
    # Imported here: the comparison's records load with every CLI command, scipy need not.
    from scipy.stats import binom

    return min(1.0, 2 * float(binom.cdf(k, m, 0.5)))


def noninferiority_p(table: PairedTable, margin: float = DEFAULT_MARGIN) -> float:
    """One-sided p of Tango's score test of ``H0: delta <= -margin`` vs ``delta > -margin``.

    A negative margin asks for superiority by ``-margin``. Inverting the test over the margin
    gives :func:`tango_ci`, so ``p < (1 - confidence) / 2`` iff that interval is above -margin.
    """
    if not -1.0 < margin < 1.0:
        raise ValueError(f"margin must be in (-1, 1), got {margin}")
    n = _items(table)
    b, c, theta = table.only_run, table.only_baseline, -margin
    # Restricted MLE of P(only_baseline) under delta = theta: the root of 2n q^2 + B q + C that
    # keeps P(only_run) = q + theta >= 0 (Tango 1998).
    lin = -b - c + (2 * n - b + c) * theta
    const = -c * theta * (1 - theta)
    q = (-lin + math.sqrt(max(lin * lin - 8 * n * const, 0.0))) / (4 * n)
    variance = n * (2 * q + theta * (1 - theta))
    if variance <= 0:
        return 0.5  # theta = 0 with no discordant pairs: the data carry no direction
    return _NORMAL.cdf(-(b - c - n * theta) / math.sqrt(variance))


def tango_ci(table: PairedTable, confidence: float = 0.95) -> tuple[float, float]:
    """Tango's (1998) score interval for ``table.delta``: the inverted non-inferiority test."""
    tail = _NORMAL.cdf(-_z(confidence))  # (1 - confidence) / 2, validated

    def lower(t: PairedTable) -> float:
        # The one-sided p rises from 0 at delta = -1 to 0.5 at the estimate: bisect for the tail.
        low, high = -1.0, t.delta
        while high - low > 1e-12:
            mid = (low + high) / 2
            low, high = (mid, high) if noninferiority_p(t, -mid) < tail else (low, mid)
        return (low + high) / 2

    mirror = PairedTable(table.both_correct, table.only_baseline, table.only_run, table.both_wrong)
    return lower(table), -lower(mirror)


@dataclass(frozen=True)
class Unpaired:
    """What an unpaired analysis of the same two accuracies would say (reference only)."""

    ci_low: float
    ci_high: float
    p_value: float


def unpaired(table: PairedTable, confidence: float = 0.95) -> Unpaired:
    """Newcombe hybrid score interval and pooled two-proportion z test, ignoring the pairing."""
    n = _items(table)
    x1, x2 = table.both_correct + table.only_run, table.both_correct + table.only_baseline
    p1, p2 = x1 / n, x2 / n
    l1, u1 = wilson(x1, n, confidence)
    l2, u2 = wilson(x2, n, confidence)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = (x1 + x2) / (2 * n)
    se = math.sqrt(pooled * (1 - pooled) * 2 / n)
    # Both runs all right or all wrong: no variance, no evidence of a difference.
    p_value = 1.0 if se == 0 else 2 * _NORMAL.cdf(-abs(diff) / se)
    return Unpaired(low, high, min(1.0, p_value))


@dataclass(frozen=True)
class PairedResult:
    """One run-vs-baseline comparison: the table, its statistics and the verdict."""

    n: int
    both_correct: int
    only_run: int
    only_baseline: int
    both_wrong: int
    run_accuracy: float
    baseline_accuracy: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float
    noninferiority_p: float
    noninferiority_p_adjusted: float
    discordance: float
    noise_discordance: float | None
    mde: float
    margin: float
    alpha: float
    min_n: int
    verdict: Verdict
    reason: str
    unpaired_ci_low: float
    unpaired_ci_high: float
    unpaired_p: float

    @property
    def table(self) -> PairedTable:
        return PairedTable(self.both_correct, self.only_run, self.only_baseline, self.both_wrong)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; an infinite MDE (nothing detectable) becomes None."""
        out = asdict(self)
        out["mde"] = self.mde if math.isfinite(self.mde) else None
        return out


def compare_table(
    table: PairedTable,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    min_n: int = DEFAULT_MIN_N,
    noise_discordance: float | None = None,
) -> PairedResult:
    """All statistics and the verdict for one comparison (no multiplicity adjustment)."""
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin must be in (0, 1) as a fraction (0.01 = 1 point), got {margin}")
    ci_low, ci_high = tango_ci(table, 1 - alpha)
    p = mcnemar_exact_p(table)
    ni_p = noninferiority_p(table, margin)
    detectable, decided, why = decide(
        table.n, table.delta, table.discordance, p, ni_p, noise_discordance, margin, alpha, min_n
    )
    ref = unpaired(table, 1 - alpha)
    return PairedResult(
        **asdict(table),
        n=table.n,
        run_accuracy=table.run_accuracy,
        baseline_accuracy=table.baseline_accuracy,
        delta=table.delta,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p,
        p_adjusted=p,
        noninferiority_p=ni_p,
        noninferiority_p_adjusted=ni_p,
        discordance=table.discordance,
        noise_discordance=noise_discordance,
        mde=detectable,
        margin=margin,
        alpha=alpha,
        min_n=min_n,
        verdict=decided,
        reason=why,
        unpaired_ci_low=ref.ci_low,
        unpaired_ci_high=ref.ci_high,
        unpaired_p=ref.p_value,
    )


def compare(
    pairs: Iterable[tuple[bool, bool]],
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    min_n: int = DEFAULT_MIN_N,
    noise_discordance: float | None = None,
) -> PairedResult:
    """:func:`compare_table` on ``(run_correct, baseline_correct)`` pairs."""
    return compare_table(paired_table(pairs), margin, alpha, min_n, noise_discordance)


def holm_adjust(results: Sequence[PairedResult]) -> list[PairedResult]:
    """Re-decide comparisons reported together: Holm on both p families, MDE at alpha / k."""
    k = len(results)
    if k <= 1:
        return list(results)
    loss = holm([r.p_value for r in results])
    noninf = holm([r.noninferiority_p for r in results])
    out = []
    for r, p, ni_p in zip(results, loss, noninf, strict=True):
        m, v, why = decide(
            r.n, r.delta, r.discordance, p, ni_p, r.noise_discordance, r.margin, r.alpha, r.min_n, k
        )
        adjusted = replace(r, p_adjusted=p, noninferiority_p_adjusted=ni_p, mde=m, verdict=v)
        out.append(replace(adjusted, reason=f"{why} [Holm, {k} comparisons]"))
    return out


def noise_floor(repeat_tables: Iterable[PairedTable]) -> float:
    """Mean discordance between repeats of the baseline: the engine's own noise."""
    rates = [t.discordance for t in repeat_tables]
    if not rates:
        raise ValueError("no baseline repeats: the noise floor is unknown")
    return math.fsum(rates) / len(rates)
