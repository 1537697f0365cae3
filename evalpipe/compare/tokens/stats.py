"""Token-level divergence of a run from its baseline along one path, with intervals, a noise
floor and a verdict: fills :class:`evalpipe.compare.tokens.types.PathComparison`. Pure; numpy.

Compared positions. ``decode``: each item's common prefix of token ids plus the first differing
position (both contexts are still identical there, and it is where the distributions part: left
out, top-1 disagreement would be 0 by construction under greedy decoding). When one generation
is a strict prefix of the other, the divergence is at the shorter length and has no position to
compare. ``forced``: every position; an item whose two sides scored different ids (or whose
prompts differ in length, on either path) is left out and counted in ``skipped_items``.
Position ``i`` sits at ``start + i`` in the whole sequence; its top-k is the distribution of
token ``i`` given everything before it.

Per-position metrics.
- ``kl``: KL(baseline ‖ run) on the coarse partition {baseline's top-k tokens} ∪ {the rest}.
  p_j = exp(baseline top logprob j); q_j = the run's probability of the same token, read from
  its top-k. A token the run did not list gets ``min(q_k, r / m)`` (q_k the run's smallest
  listed probability, which bounds any unlisted token; r = 1 − Σ run listed, m the tokens to
  impute); such positions count in ``missing_tokens``. The rest bucket has 1 − Σ p_j and
  1 − Σ q_j. Probability masses are floored at ``EPS`` = 1e-6, about the float32 resolution of a
  sum near 1, and the result at 0. Bias: merging tokens never increases KL (data-processing
  inequality), so with nothing imputed the estimate is a LOWER bound of the true KL; it misses
  divergence among the tokens outside the baseline's top-k. An imputed q is the largest value
  the run's report allows for every missing token at once, so it understates that token's own
  term, while the rest bucket's term grows: the sign of that bias is not fixed, hence the count.
  Identical top-k lists give exactly 0.
- ``abs_dlogprob``: |Δ logprob| of the baseline's token (the token both scored, except at a
  decode divergence, where the run's probability of the baseline's token comes from its top-k
  or the imputation above). Logprobs are floored at ``LOGPROB_FLOOR`` so that −inf is finite.
- ``top1_disagree``: 1 when the first entries of the two top-k lists differ.

Summaries (:class:`MetricSummary`): the per-token mean Σ values / Σ positions with a t interval
on items − 1 degrees of freedom and cluster-robust (CR1) variance, items as clusters
(:mod:`evalpipe.compare.tokens.inference`; its lower limit floored at 0, every metric being >= 0);
p99 and p99.9 are numpy's linear percentiles over positions. No positions: every figure 0.0 and
no worst item (JSON carries no NaN); ``n_tokens`` = 0 says why.

Localisation (:mod:`evalpipe.compare.tokens.loc`) bins ``kl``. The boundary test leaves out the
decode divergence positions: a parting position is selected for a large KL and sits at the end
of its item's compared prefix, so among the items with positions on both sides of a boundary
it falls on one side more than the other: a difference with no boundary effect (in a synthetic
null, 1 319 items, p ≈ 1e-5 with it; left out, 8 of 150 null runs reject at 0.05). Where
generations part relative to boundaries is ``divergence_offsets``.

Noise floor: the per-item mean ``kl`` (each item weighing the same) of the pair against that of
the baseline and its repeat on the same items; one-sided paired t test; its interval is the
two-sided 1 − 2·alpha one, above 0 exactly when the test rejects at alpha.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from evalpipe.compare.breakdown import NEAR_BOUNDARY
from evalpipe.compare.tokens import loc
from evalpipe.compare.tokens.inference import cluster_mean, paired_t
from evalpipe.compare.tokens.types import (
    METRICS,
    FloorTest,
    Metric,
    MetricSummary,
    Path,
    PathComparison,
    TokenVerdict,
)
from evalpipe.traces import StoredTrace, TokenTrace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Pairs = Mapping[str, tuple[StoredTrace, StoredTrace]]

EPS = 1e-6
LOGPROB_FLOOR = -100.0
DEFAULT_BANDS = (512, 1024, 2048, 4096, 8192, 16384, 32768)
NO_FLOOR = "no baseline repeat to set the noise floor: run the baseline with --repeat 2"


def position_metrics(base: TokenTrace, run: TokenTrace) -> tuple[dict[Metric, FloatArray], int]:
    """Each metric at each position of two aligned traces (see the module docstring), and the
    number of positions whose KL needed an imputed run probability. Vectorised."""
    b_ids, r_ids = base.top_ids, run.top_ids
    b_ok = (b_ids >= 0) & np.isfinite(base.top_logprobs)
    r_ok = (r_ids >= 0) & np.isfinite(run.top_logprobs)
    b_lp = np.where(b_ok, base.top_logprobs, 0.0).astype(np.float64)
    r_lp = np.where(r_ok, run.top_logprobs, 0.0).astype(np.float64)
    p = np.where(b_ok, np.exp(b_lp), 0.0)
    q_listed = np.where(r_ok, np.exp(r_lp), 0.0)
    # The run's logprob of each baseline top token: one pass per run column (k is small), not
    # a (positions, k, k) comparison array.
    found = np.zeros(b_ids.shape, dtype=bool)
    lq_found = np.zeros(b_ids.shape)
    for j in range(r_ids.shape[1]):
        hit = (b_ids == r_ids[:, j : j + 1]) & r_ok[:, j : j + 1]
        found |= hit
        lq_found = np.where(hit, r_lp[:, j : j + 1], lq_found)
    found &= b_ok
    missing = b_ok & ~found
    n_missing = missing.sum(axis=1)
    residual = np.maximum(1.0 - q_listed.sum(axis=1), 0.0)
    q_last = np.where(r_ok, q_listed, np.inf).min(axis=1)  # inf: the run listed nothing
    imputed = np.maximum(np.minimum(q_last, residual / np.maximum(n_missing, 1)), EPS)
    lq = np.where(found, lq_found, np.log(imputed)[:, None])
    terms = np.where(b_ok, p * (b_lp - lq), 0.0).sum(axis=1)
    p_rest = np.maximum(1.0 - p.sum(axis=1), EPS)
    q_rest = np.maximum(1.0 - np.where(b_ok, np.exp(lq), 0.0).sum(axis=1), EPS)
    kl = np.maximum(terms + p_rest * np.log(p_rest / q_rest), 0.0)

    # The run's logprob of the baseline's token: its own where both chose it, else its top-k.
    same = base.token_ids == run.token_ids
    hit = (r_ids == base.token_ids[:, None]) & r_ok
    r_of_b = np.where(hit.any(axis=1), np.where(hit, r_lp, 0.0).sum(axis=1), np.log(imputed))
    r_chosen = np.where(same, run.logprobs.astype(np.float64), r_of_b)
    dlp = np.abs(
        np.maximum(r_chosen, LOGPROB_FLOOR)
        - np.maximum(base.logprobs.astype(np.float64), LOGPROB_FLOOR)
    )
    top1 = (b_ids[:, 0] != r_ids[:, 0]).astype(np.float64) if b_ids.shape[1] else kl * 0.0
    values: dict[Metric, FloatArray] = {"kl": kl, "abs_dlogprob": dlp, "top1_disagree": top1}
    return values, int((n_missing > 0).sum())


@dataclass(frozen=True)
class Positions:
    """Every compared position of a set of pairs, flat: ``items`` indexes ``item_ids``."""

    item_ids: tuple[str, ...]
    items: IntArray
    positions: IntArray
    values: dict[Metric, FloatArray]
    missing: int
    skipped: int
    identical: int
    first_divergence: tuple[int, ...]
    k: int
    divergent: npt.NDArray[np.bool_]
    """Decode path: the positions where the two generations part (the last of their item)."""

    def item_means(self, metric: Metric = "kl") -> dict[str, float]:
        """Each item's mean of ``metric`` over its positions (items with positions only)."""
        sums, counts = _per_item(self, self.values[metric])
        return {
            i: float(s / n) for i, s, n in zip(self.item_ids, sums, counts, strict=True) if n > 0
        }


def _per_item(pos: Positions, values: FloatArray) -> tuple[FloatArray, FloatArray]:
    groups = len(pos.item_ids)
    sums = np.bincount(pos.items, weights=values, minlength=groups).astype(np.float64)
    return sums, np.bincount(pos.items, minlength=groups).astype(np.float64)


def _concat(traces: list[TokenTrace]) -> TokenTrace:
    """One trace of all positions of ``traces``, top lists padded to the widest."""
    width = max((t.k for t in traces), default=0)

    def pad(a: npt.NDArray[np.generic], fill: float) -> npt.NDArray[np.generic]:
        extra = np.full((a.shape[0], width - a.shape[1]), fill, dtype=a.dtype)
        return np.concatenate([a, extra], axis=1) if width > a.shape[1] else a

    return TokenTrace(
        np.concatenate([t.token_ids for t in traces]).astype(np.int32),
        np.concatenate([t.logprobs for t in traces]).astype(np.float32),
        np.concatenate([pad(t.top_ids, -1) for t in traces]).astype(np.int32),
        np.concatenate([pad(t.top_logprobs, -np.inf) for t in traces]).astype(np.float32),
    )


def _head(t: TokenTrace, n: int) -> TokenTrace:
    return TokenTrace(t.token_ids[:n], t.logprobs[:n], t.top_ids[:n], t.top_logprobs[:n])


def collect(path: Path, pairs: Pairs) -> Positions:
    """The compared positions of every pair and their metrics (see the module docstring)."""
    ids: list[str] = []
    heads: tuple[list[TokenTrace], list[TokenTrace]] = ([], [])
    starts: list[int] = []
    first: list[int] = []
    split: list[bool] = []
    skipped = identical = 0
    k = None
    for item_id in sorted(pairs):
        base, run = pairs[item_id]
        b, r = base.trace, run.trace
        m = min(b.n, r.n)
        differs = np.flatnonzero(b.token_ids[:m] != r.token_ids[:m])
        d = int(differs[0]) if differs.size else m
        same = d == m and b.n == r.n
        if base.start != run.start or (path == "forced" and not same):
            skipped += 1
            continue
        ids.append(item_id)
        identical += same
        if not same:
            first.append(base.start + d)
        n = m if same else min(d + 1, m)
        split.append(d < m)
        heads[0].append(_head(b, n))
        heads[1].append(_head(r, n))
        starts.append(base.start)
        k = min(b.k, r.k, k if k is not None else b.k)
    counts = np.asarray([h.n for h in heads[0]], dtype=np.int64)
    items = np.repeat(np.arange(len(ids), dtype=np.int64), counts)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.repeat(np.asarray(starts, dtype=np.int64), counts) + (
        np.arange(items.size, dtype=np.int64) - offsets
    )
    divergent = np.zeros(items.size, dtype=bool)
    divergent[(np.cumsum(counts) - 1)[np.asarray(split, dtype=bool)]] = True
    values: dict[Metric, FloatArray] = {m: np.zeros(0) for m in METRICS}
    missing = 0
    if items.size:
        values, missing = position_metrics(_concat(heads[0]), _concat(heads[1]))
    return Positions(
        tuple(ids),
        items,
        positions,
        values,
        missing,
        skipped,
        identical,
        tuple(sorted(first)),
        k or 0,
        divergent,
    )


def summarise(pos: Positions, metric: Metric, alpha: float) -> MetricSummary:
    """The :class:`MetricSummary` of ``metric`` over ``pos`` (see the module docstring)."""
    values = pos.values[metric]
    if values.size == 0:
        return MetricSummary(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, None)
    est = cluster_mean(*_per_item(pos, values), alpha)
    p99, p999 = np.percentile(values, [99.0, 99.9]).tolist()
    worst = int(np.argmax(values))
    return MetricSummary(
        mean=est.mean,
        ci_low=max(0.0, est.ci_low),
        ci_high=est.ci_high,
        p99=float(p99),
        p999=float(p999),
        max=float(values[worst]),
        worst_item=pos.item_ids[int(pos.items[worst])],
        worst_position=int(pos.positions[worst]),
    )


def floor_test(pair: Positions, floor: Positions, alpha: float) -> FloorTest | None:
    """The pair's per-item mean ``kl`` against the floor's on the items both have positions
    for; None below two such items."""
    pair_means, floor_means = pair.item_means(), floor.item_means()
    common = sorted(set(pair_means) & set(floor_means))
    if len(common) < 2:
        return None
    a = np.asarray([pair_means[i] for i in common])
    b = np.asarray([floor_means[i] for i in common])
    est = paired_t(a - b, alpha, "greater")
    return FloorTest(
        n_items=est.n,
        pair_mean=float(a.mean()),
        floor_mean=float(b.mean()),
        difference=est.mean,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        p_value=est.p_value,
    )


def _verdict(n_items: int, test: FloorTest | None, alpha: float) -> tuple[TokenVerdict, str]:
    if n_items == 0:
        return "unknown", "no items with comparable tokens"
    if test is None:
        return "unknown", NO_FLOOR
    figures = (
        f"KL {test.pair_mean:.3g} vs floor {test.floor_mean:.3g} nats/token on "
        f"{test.n_items} items ({test.difference:+.3g}, p = {test.p_value:.2g})"
    )
    if test.p_value < alpha and test.difference > 0:
        return "token-drift", f"above the noise floor: {figures}"
    return "ok", f"within the noise floor: {figures}"


def compare_path(
    path: Path,
    pairs: Pairs,
    *,
    period: int | None = None,
    floor: Pairs | None = None,
    alpha: float = 0.05,
    bands: Sequence[int] = DEFAULT_BANDS,
    width: int = NEAR_BOUNDARY,
) -> PathComparison:
    """Compare ``pairs`` (item → (baseline, run) traces) along ``path``; ``floor`` holds the
    baseline against its repeat on the same path, ``period`` the shard period (None: no
    residue classes, boundary test or divergence offsets)."""
    pos = collect(path, pairs)
    kl = pos.values["kl"]
    floor_pos = collect(path, floor) if floor is not None else None
    test = floor_test(pos, floor_pos, alpha) if floor_pos is not None else None
    verdict, reason = _verdict(len(pos.item_ids), test, alpha)
    if floor_pos is not None and test is None and pos.item_ids:
        reason = f"{NO_FLOOR} (the repeat shares {len(floor_pos.item_ids)} usable items)"
    result = PathComparison(
        path=path,
        n_items=len(pos.item_ids),
        n_tokens=int(pos.items.size),
        k=pos.k,
        metrics={m: summarise(pos, m, alpha) for m in METRICS},
        greedy_agreement=(pos.identical / len(pos.item_ids))
        if path == "decode" and pos.item_ids
        else None,
        first_divergence=pos.first_divergence if path == "decode" else (),
        by_band=loc.by_band(pos.items, pos.positions, kl, bands, alpha) if kl.size else (),
        floor=test,
        floor_metrics={m: summarise(floor_pos, m, alpha) for m in METRICS}
        if floor_pos is not None
        else None,
        verdict=verdict,
        reason=reason,
        missing_tokens=pos.missing,
        skipped_items=pos.skipped,
    )
    if period is None:
        return result
    prefix = ~pos.divergent
    return replace(
        result,
        divergence_offsets=loc.divergence_offsets(result.first_divergence, period),
        by_residue=loc.by_residue(pos.items, pos.positions, kl, period, alpha)
        if kl.size
        else (),
        boundary=loc.boundary_test(
            pos.items[prefix], pos.positions[prefix], kl[prefix], period, width, alpha
        ),
    )


def item_kl(path: Path, pairs: Pairs) -> dict[str, float]:
    """Each item's mean ``kl`` along ``path`` (the per-item figure the floor test pairs)."""
    return collect(path, pairs).item_means()


def items_needed(
    pair_item_means: Sequence[float],
    floor_item_means: Sequence[float],
    power: float = 0.8,
    alpha: float = 0.05,
) -> float:
    """Items the one-sided paired test needs to separate the pair from the floor with
    ``power`` at ``alpha``, from per-item means paired by position in the two sequences:
    ``n = ((z_{1−alpha} + z_power) · sd / mean)²`` of the differences (normal approximation),
    rounded up, at least 2; ``inf`` when the pair does not exceed the floor."""
    if len(pair_item_means) != len(floor_item_means):
        raise ValueError(
            f"{len(pair_item_means)} pair means but {len(floor_item_means)} floor means"
        )
    if len(pair_item_means) < 2:
        raise ValueError("need at least two items to estimate the spread of the differences")
    if not (0.0 < power < 1.0 and 0.0 < alpha < 1.0):
        raise ValueError(f"power and alpha must be in (0, 1), got {power}, {alpha}")
    diffs = np.asarray(pair_item_means, dtype=np.float64) - np.asarray(floor_item_means)
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    if not mean > 0.0:
        return math.inf
    z = NormalDist().inv_cdf(1.0 - alpha) + NormalDist().inv_cdf(power)
    return float(max(2, math.ceil((z * sd / mean) ** 2)))
