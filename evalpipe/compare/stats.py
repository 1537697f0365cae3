"""Paired statistics of a layout against its baseline; pure functions, no I/O, no numpy.

One responsibility: turn per-question correctness pairs ``(run_correct, baseline_correct)`` —
run = the layout under test (``dp2tp8dcp8``), baseline = its non-CP twin (``dp2tp8``) on the same
questions, greedy — into the figures a verdict rests on; :mod:`evalpipe.compare.power` holds
the rule and the MDE, ``compare`` joins them. Standard library only; tests check every figure
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

import itertools
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


def _log_binom_half_cdf(k: int, m: int) -> float:
    """log P(X <= k) for X ~ Binomial(m, 1/2), by log-sum-exp (exact for any m, no overflow)."""
    terms = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) for i in range(k + 1)]
    top = max(terms)
    return top + math.log(math.fsum(math.exp(t - top) for t in terms)) - m * math.log(2)


def mcnemar_exact_p(table: PairedTable) -> float:
    """Two-sided exact McNemar p: doubled binomial(b + c, 1/2) tail of the smaller count."""
    m = table.discordant
    if m == 0:
        return 1.0
    k = min(table.only_run, table.only_baseline)
    return min(1.0, 2 * math.exp(_log_binom_half_cdf(k, m)))


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


def _first_mismatch(a: Sequence[object], b: Sequence[object]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character (the shorter length on a prefix); None if equal.

    Equal strings are the common case (identical outputs) and cost one C comparison; else a
    binary search over prefix slices, also in C: no per-character Python loop.
    """
    if a == b:
        return None
    lo, hi = 0, min(len(a), len(b))  # a[:lo] == b[:lo]; the mismatch is in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def first_token_difference(a_tokens: Sequence[object], b_tokens: Sequence[object]) -> int | None:
    """Token index of the first difference, as :func:`first_difference`."""
    return _first_mismatch(a_tokens, b_tokens)


def agreement(pairs_of_outputs: Iterable[tuple[str, str]]) -> float:
    """Share of items whose two raw outputs are identical."""
    same = [a == b for a, b in pairs_of_outputs]
    if not same:
        raise ValueError("no outputs to compare")
    return sum(same) / len(same)


@dataclass(frozen=True)
class BucketResult:
    """Flips and delta among items whose prompt length is in ``[low, high)`` tokens."""

    low: int
    high: int | None  # None: unbounded
    n: int
    only_run: int
    only_baseline: int
    delta: float | None  # None when the bucket is empty


def length_buckets(
    rows: Iterable[tuple[int, bool, bool]], edges: Sequence[int]
) -> list[BucketResult]:
    """Per prompt-length bucket: ``edges`` (256, 512) give [0, 256), [256, 512), [512, inf).

    ``rows`` are ``(prompt_tokens, run_correct, baseline_correct)``.
    """
    if any(e <= 0 for e in edges) or any(x >= y for x, y in itertools.pairwise(edges)):
        raise ValueError(f"edges must be positive and strictly increasing, got {list(edges)}")
    bounds = [0, *edges]
    counts = [[0, 0, 0] for _ in bounds]  # n, only_run, only_baseline
    for tokens, run, base in rows:
        if tokens < 0:
            raise ValueError(f"negative prompt length {tokens}")
        i = sum(1 for e in edges if tokens >= e)
        counts[i][0] += 1
        counts[i][1] += run and not base
        counts[i][2] += base and not run
    return [
        BucketResult(
            low=bounds[i],
            high=bounds[i + 1] if i + 1 < len(bounds) else None,
            n=n,
            only_run=gain,
            only_baseline=loss,
            delta=(gain - loss) / n if n else None,
        )
        for i, (n, gain, loss) in enumerate(counts)
    ]


@dataclass(frozen=True)
class BoundaryGroup:
    """Paired outcomes of prompts at one position relative to the shard boundaries.

    ``boundary`` is the nearest multiple ``k*period`` (k >= 1) and ``offset_low`` /
    ``offset_high`` the range of signed distances to it (tokens minus boundary) in the group.
    """

    label: str
    tokens_low: int
    tokens_high: int
    boundary: int
    offset_low: int
    offset_high: int
    n: int
    run_correct: int
    baseline_correct: int
    only_run: int
    only_baseline: int

    @property
    def delta(self) -> float:
        return (self.only_run - self.only_baseline) / self.n


NEAR_BOUNDARY = 16
"""Tokens either side of a boundary that count as "at" it (the passkey grid's offsets)."""
MAX_BOUNDARY_GROUPS = 4
"""Boundaries from the 4th on share their groups: the table stays short for long prompts."""


def boundary_groups(
    rows: Iterable[tuple[int, bool, bool]], period: int, exact_limit: int = 40
) -> list[BoundaryGroup]:
    """Group ``(prompt_tokens, run_correct, baseline_correct)`` by position relative to the
    nearest multiple of ``period``: one group per distinct length when there are at most
    ``exact_limit`` of them (a generated length grid), else per boundary (the 4th and later
    together) and distance (``at``: within :data:`NEAR_BOUNDARY` tokens, ``before`` /
    ``after``: further). ``boundary`` is then the group's nearest boundary, the lowest one
    for the merged group."""
    if period < 1:
        raise ValueError(f"period must be positive, got {period}")
    rows = list(rows)
    if any(t < 0 for t, _, _ in rows):
        raise ValueError("negative prompt length")
    exact = len({t for t, _, _ in rows}) <= exact_limit

    def key(tokens: int) -> tuple[int, int]:
        k = max(1, round(tokens / period))
        offset = tokens - k * period
        if exact:
            return k, offset
        side = 0 if abs(offset) <= NEAR_BOUNDARY else (-1 if offset < 0 else 1)
        return min(k, MAX_BOUNDARY_GROUPS), side

    groups: dict[tuple[int, int], list[tuple[int, bool, bool]]] = {}
    for row in rows:
        groups.setdefault(key(row[0]), []).append(row)
    out = []
    for (k, sub), members in sorted(groups.items()):
        offsets = [t - max(1, round(t / period)) * period for t, _, _ in members]
        if exact:
            label = f"{k}×{period}{sub:+d}"
        else:
            where = {0: "at", -1: "before", 1: "after"}[sub]
            many = "≥" if k == MAX_BOUNDARY_GROUPS else ""
            label = f"{where} {many}{k}×{period}"
        out.append(
            BoundaryGroup(
                label=label,
                tokens_low=min(t for t, _, _ in members),
                tokens_high=max(t for t, _, _ in members),
                boundary=k * period,
                offset_low=min(offsets),
                offset_high=max(offsets),
                n=len(members),
                run_correct=sum(r for _, r, _ in members),
                baseline_correct=sum(b for _, _, b in members),
                only_run=sum(r and not b for _, r, b in members),
                only_baseline=sum(b and not r for _, r, b in members),
            )
        )
    return out
