"""The typed result of a token-level comparison: what every renderer reads. Pure data.

A token-level comparison pairs, item by item, the token traces (:mod:`evalpipe.traces`) of a
run and its baseline along one *path*:

- ``decode``: each side's own generation, over the common prefix of the two token sequences
  and the position where they part (past it the two contexts differ and nothing is
  comparable);
- ``forced``: both engines scoring the same token sequence (the baseline's generation,
  teacher-forced through the prefill path), over every position.

The statistics (:mod:`evalpipe.compare.tokens.stats`) fill these records; the JSON edge, the
text report, the dashboard, the gate and the PR comment only read them. Every interval carries
its confidence ``level``; divergences are in nats per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Path = Literal["decode", "forced-decode", "forced"]
PATHS: tuple[Path, ...] = ("decode", "forced-decode", "forced")
"""``decode``: each side's own generation, over the common prefix; ``forced-decode``: both
engines generating the baseline's tokens one decode step at a time (teacher-forced on the
decode kernels); ``forced``: both engines scoring the baseline's tokens as a prompt
(teacher-forced through prefill)."""

MARGIN_PATHS: tuple[Path, Path] = ("decode", "forced")
"""What a τ is set for: free decoding, and teacher forcing (``forced`` and ``forced-decode``
share it: both compare the same token sequence at every position)."""


def margin_path(path: Path) -> Path:
    """The :data:`MARGIN_PATHS` entry whose τ ``path`` is decided on."""
    return "decode" if path == "decode" else "forced"


Metric = Literal["kl", "abs_dlogprob", "top1_disagree"]
METRICS: tuple[Metric, Metric, Metric] = ("kl", "abs_dlogprob", "top1_disagree")
"""Per-position divergences, every one 0 for identical engines and larger when they differ:
``kl`` the KL divergence of the run's next-token distribution from the baseline's, estimated
from the top-k (nats); ``abs_dlogprob`` |Δ logprob| of the token both sides scored;
``top1_disagree`` 1 when the two most likely tokens differ (its mean is 1 − top-1 agreement)."""

TokenVerdict = Literal["ok", "token-drift", "inconclusive"]
TOKEN_VERDICTS: tuple[TokenVerdict, ...] = ("ok", "token-drift", "inconclusive")


@dataclass(frozen=True)
class MetricSummary:
    """One metric over all compared positions of all items.

    ``mean`` is the per-token mean (total over items / positions) with a ``level`` confidence
    interval that treats items as clusters (:mod:`evalpipe.compare.tokens.inference`; its upper
    limit may be ``inf``). ``p99`` and ``p999`` are percentiles over positions, None when fewer
    than :data:`evalpipe.compare.tokens.stats.TAIL_POSITIONS` positions lie beyond them. The
    worst position is where the metric is largest (``worst_position`` counted in the whole
    sequence: prompt tokens + index); ``worst_ties`` positions share that value, and among
    them the worst item is the one with the largest mean of the metric.
    """

    mean: float
    ci_low: float
    ci_high: float
    p99: float | None
    p999: float | None
    max: float
    worst_item: str | None
    worst_position: int | None
    level: float = 0.95
    worst_ties: int = 1


@dataclass(frozen=True)
class Bin:
    """The mean of one metric over the positions that fall in one group (a residue class of
    the shard period, or a position band), with its cluster interval and counts."""

    label: str
    low: int
    high: int  # inclusive bounds of the group (positions, or residues modulo the period)
    n_items: int
    n_tokens: int
    mean: float
    ci_low: float
    ci_high: float
    level: float = 0.95


@dataclass(frozen=True)
class PartingSplit:
    """The decode path's KL apart: over the common prefix, and at the positions where the two
    generations part (selected for a large KL: a near tie, or the divergence itself)."""

    prefix_tokens: int
    prefix_mean: float
    prefix_ci_low: float
    prefix_ci_high: float
    parting_tokens: int
    parting_mean: float
    level: float = 0.95


@dataclass(frozen=True)
class BoundaryTest:
    """Do the positions within ``window`` tokens of a shard boundary (a multiple of
    ``period``) carry more of their items' KL than their share of positions?

    ``near_share`` is the share of compared positions near a boundary, ``kl_share`` the share
    of the KL mass there (each item's mass normalised to its positions, so heavy items do not
    dominate), ``ratio`` their quotient. ``p_value`` is one-sided, from ``draws`` random
    re-placements of every item's boundaries (a random phase among those that bring as many of
    its positions within the window of a boundary), Bonferroni over ``windows``; ``window`` is
    the one with the smallest p. No test (``p_value`` None): ``reason`` says why (period too
    short, no position near a boundary, no KL)."""

    period: int
    windows: tuple[int, ...]
    window: int | None
    n_items: int
    near_tokens: int
    near_share: float
    kl_share: float
    ratio: float
    p_value: float | None
    draws: int
    reason: str = ""


@dataclass(frozen=True)
class DivergenceShare:
    """How many first divergences (decode) fall within ``width`` tokens of a shard boundary,
    against ``expected``: the count if each item's divergence offset into its generation were
    any of the observed offsets that fit it (the null built from the actual prompt lengths,
    not a uniform draw over the period). ``p_value``: exact, one-sided (Poisson-binomial)."""

    period: int
    width: int
    n: int
    near: int
    expected: float
    p_value: float | None
    reason: str = ""


@dataclass(frozen=True)
class Excess:
    """The pair's per-token mean KL in excess of the noise floor's, on the items both have.

    ``floor_mean`` None: no floor was measured, and the bounds are the pair's own (the floor
    can only lower the excess, so they still bound it from above). ``item_values`` are the
    per-item (jackknife pseudo-) values whose mean is about ``estimate``: what
    :func:`evalpipe.compare.tokens.inference.items_needed` takes; ``spread`` their standard
    deviation."""

    n_items: int
    pair_mean: float
    floor_mean: float | None
    estimate: float
    ci_low: float
    ci_high: float
    level: float
    spread: float
    item_values: tuple[float, ...] = ()


@dataclass(frozen=True)
class TailTest:
    """Is some item broken? Per item, its *typical* KL (the geometric mean over its compared
    positions, less its floor's) against ``tolerance``: a one-sided t test on block means of
    log KL (contiguous blocks absorb the positions' dependence; the log scale tames their
    heavy tail, so one spike does not make an item broken and a steadily diverging one is).
    ``p_value`` is Bonferroni over the ``n_items`` items tested (those with 2+ positions), a
    false alarm on any item at most ``p``. The worst item is the one with the smallest p;
    ``first_bad_position`` is where its stretch of positions above the tolerance starts (the
    suffix with the largest log excess), None when there is none."""

    tolerance: float
    n_items: int
    p_value: float
    worst_item: str | None = None
    worst_tokens: int = 0
    worst_typical: float = 0.0
    worst_mean: float = 0.0
    first_bad_position: int | None = None


@dataclass(frozen=True)
class Tolerance:
    """τ: the KL in excess of the floor (nats/token) a path may show and still be ``ok``;
    ``source`` says where it came from (the default, given, or a reference pair)."""

    tau: float
    source: str


@dataclass(frozen=True)
class Decision:
    """The figures the verdict rule (:mod:`evalpipe.compare.tokens.verdict`) used.

    ``p_ok``: one-sided p of "the excess is at least τ"; ``p_drift``: of "the excess is at
    most τ and no item is broken" (the mean's and the tail test's, Bonferroni-combined).
    ``*_adjusted``: Holm over the ``comparisons`` paths decided together (both paths of a
    comparison, every comparison of a report or gate). ``items_needed``: items for 80 % power
    to see τ (exact), at the first Holm level."""

    tolerance: Tolerance
    alpha: float
    p_ok: float
    p_drift: float
    p_mean_drift: float
    p_ok_adjusted: float
    p_drift_adjusted: float
    comparisons: int
    items_needed: float
    min_items: int
    floor: bool


@dataclass(frozen=True)
class PathComparison:
    """The token-level comparison of one pair along one path."""

    path: Path
    n_items: int
    n_tokens: int
    k: int
    metrics: dict[Metric, MetricSummary]
    greedy_agreement: float | None = None
    """Share of items whose generated token ids are identical (decode path only)."""
    first_divergence: tuple[int, ...] = ()
    """Decode path: the whole-sequence position of each divergent item's first differing
    token, sorted."""
    divergence_offsets: tuple[int, ...] = ()
    """The same positions as signed distances to the nearest shard boundary (needs a period)."""
    divergence_share: DivergenceShare | None = None
    parting: PartingSplit | None = None
    by_residue: tuple[Bin, ...] = ()
    by_band: tuple[Bin, ...] = ()
    boundary: BoundaryTest | None = None
    excess: Excess | None = None
    tail: TailTest | None = None
    floor_metrics: dict[Metric, MetricSummary] | None = None
    decision: Decision | None = None
    verdict: TokenVerdict = "inconclusive"
    reason: str = ""
    missing_tokens: int = 0
    """Positions whose KL estimate had to impute a baseline top-k token the run did not list."""
    skipped_items: int = 0
    """Items left out: on the forced path the two sides scored different token ids; on either
    path the two prompts' token counts (``start``) differ."""


@dataclass(frozen=True)
class TokenComparison:
    """A run against its baseline, token by token, on every path both have traces for.

    ``unavailable`` says, for a path that could not be compared, why (e.g. "baseline has no
    token logprobs: rerun it with --logprobs 5"); ``period`` is the shard period used for
    localisation (None: no split KV cache and none given).
    """

    run_id: str
    baseline_id: str
    period: int | None
    paths: dict[Path, PathComparison] = field(default_factory=dict)
    unavailable: dict[Path, str] = field(default_factory=dict)

    @property
    def verdict(self) -> TokenVerdict:
        """``token-drift`` if any path drifts; ``ok`` if every compared path is ok (at least
        one); else ``inconclusive``."""
        verdicts = [p.verdict for p in self.paths.values()]
        if "token-drift" in verdicts:
            return "token-drift"
        return "ok" if verdicts and all(v == "ok" for v in verdicts) else "inconclusive"

    @property
    def reason(self) -> str:
        """Each path's reason, and why a path was not compared."""
        parts = [f"{name}: {p.reason}" for name, p in self.paths.items()]
        parts += [f"{name}: {why}" for name, why in self.unavailable.items()]
        return "; ".join(parts) or "no path compared"
