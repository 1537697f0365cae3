"""The typed result of a token-level comparison: what every renderer reads. Pure data.

A token-level comparison pairs, item by item, the token traces (:mod:`evalpipe.traces`) of a
run and its baseline along one *path*:

- ``decode``: each side's own generation, over the common prefix of the two token sequences
  (past the first divergent token the two contexts differ and nothing is comparable);
- ``forced``: both engines scoring the same token sequence (the baseline's generation,
  teacher-forced through the prefill path), over every position.

The statistics (:mod:`evalpipe.compare.tokens.stats`) fill these records; the JSON edge, the
text report, the dashboard, the gate and the PR comment only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Path = Literal["decode", "forced"]
PATHS: tuple[Path, Path] = ("decode", "forced")

Metric = Literal["kl", "abs_dlogprob", "top1_disagree"]
METRICS: tuple[Metric, Metric, Metric] = ("kl", "abs_dlogprob", "top1_disagree")
"""Per-position divergences, every one 0 for identical engines and larger when they differ:
``kl`` the KL divergence of the run's next-token distribution from the baseline's, estimated
from the top-k (nats); ``abs_dlogprob`` |Δ logprob| of the token both sides scored;
``top1_disagree`` 1 when the two most likely tokens differ (its mean is 1 − top-1 agreement)."""

TokenVerdict = Literal["ok", "token-drift", "unknown"]


@dataclass(frozen=True)
class MetricSummary:
    """One metric over all compared positions of all items.

    ``mean`` is the per-token mean (total over items / positions) with a confidence interval
    that treats items as clusters (tokens of one item are not independent); ``p99`` and
    ``p999`` are percentiles over positions; the worst position is where the metric is
    largest (``worst_position`` counted in the whole sequence: prompt tokens + index).
    """

    mean: float
    ci_low: float
    ci_high: float
    p99: float
    p999: float
    max: float
    worst_item: str | None
    worst_position: int | None


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


@dataclass(frozen=True)
class BoundaryTest:
    """Do positions within ``width`` tokens of a shard boundary diverge more than the rest?

    Per item, the mean ``kl`` near boundaries minus the mean elsewhere (items with positions
    on both sides only); ``difference`` is the mean of those, ``p_value`` two-sided (paired t
    across items)."""

    period: int
    width: int
    n_items: int
    near_mean: float
    rest_mean: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class FloorTest:
    """The pair's per-item mean ``kl`` against the baseline-repeat floor's, on the same items.

    ``p_value`` is one-sided (the pair diverges more than the floor), paired across items.
    """

    n_items: int
    pair_mean: float
    floor_mean: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


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
    by_residue: tuple[Bin, ...] = ()
    by_band: tuple[Bin, ...] = ()
    boundary: BoundaryTest | None = None
    floor: FloorTest | None = None
    floor_metrics: dict[Metric, MetricSummary] | None = None
    verdict: TokenVerdict = "unknown"
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
        """``token-drift`` if any path drifts, ``ok`` if some path is ok, else ``unknown``."""
        verdicts = [p.verdict for p in self.paths.values()]
        if "token-drift" in verdicts:
            return "token-drift"
        return "ok" if "ok" in verdicts else "unknown"
