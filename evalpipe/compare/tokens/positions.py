"""The compared positions of token-trace pairs and each metric at each of them. Pure; numpy.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evalpipe.compare.tokens.types import METRICS, Metric, Path
from evalpipe.traces import StoredTrace, TokenTrace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Pairs = Mapping[str, tuple[StoredTrace, StoredTrace]]

EPS = 1e-6
LOGPROB_FLOOR = -100.0


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
    parting: tuple[tuple[int, int, int], ...] = ()
    """Decode path, per item whose generations differ: its prompt tokens, how many tokens into
    the generation they part, and at how many offsets they could have (the common length + 1:
    at the last, one side stopped)."""

    def per_item(
        self, values: FloatArray, mask: npt.NDArray[np.bool_] | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Each item's total of ``values`` (one per position) and its number of positions,
        over the positions in ``mask`` (all by default)."""
        groups = len(self.item_ids)
        items = self.items if mask is None else self.items[mask]
        v = values if mask is None else values[mask]
        sums = np.bincount(items, weights=v, minlength=groups).astype(np.float64)
        return sums, np.bincount(items, minlength=groups).astype(np.float64)

    def item_means(self, metric: Metric = "kl") -> dict[str, float]:
        """Each item's mean of ``metric`` over its positions (items with positions only)."""
        sums, counts = self.per_item(self.values[metric])
        return {
            i: float(s / n) for i, s, n in zip(self.item_ids, sums, counts, strict=True) if n > 0
        }


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
    parting: list[tuple[int, int, int]] = []
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
        if base.start != run.start or (path != "decode" and not same):
            skipped += 1
            continue
        ids.append(item_id)
        identical += same
        if not same:
            first.append(base.start + d)
            parting.append((base.start, d, m + 1))
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
        tuple(parting),
    )
