"""The tail test: is some item broken while the mean over items still looks fine? Pure.

A bug that hits only long prompts hits a few items of a mixed set; the per-token mean over 120
items dilutes one broken item 120 times. So each item is also tested alone, against a per-item
tolerance, with a false-alarm rate that holds across items (Bonferroni). See
:class:`evalpipe.compare.tokens.types.TailTest` for what is reported.

Per item: the values are ``log(kl + EPS)`` over its compared positions in order (``EPS`` =
1e-6, the KL estimator's own resolution, so an exact 0 stays finite). Per-position KL is
heavy-tailed on its own scale (a near tie can carry 100× the median) and light-tailed on the
log scale, where a t test is sound. Positions of one item depend on each other, so they are cut
into ``B = ⌊√n⌋`` contiguous blocks (2 to :data:`MAX_BLOCKS`) and the t test runs on the block
means with ``B − 1`` degrees of freedom (batch means). The hypothesis: the item's typical KL
(``exp`` of the mean log) is at most ``tolerance`` above its floor's typical KL on the same
item (0 without a floor for it). The tail test has little to work on along the decode path,
where a broken item parts after a few tokens; the teacher-forced path compares every position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats

from evalpipe.compare.tokens.types import TailTest

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EPS = 1e-6
MAX_BLOCKS = 32


def typical(values: FloatArray) -> float:
    """The geometric-mean KL of ``values`` (``exp(mean log(kl + EPS)) − EPS``); 0 for none."""
    if values.size == 0:
        return 0.0
    # exp(mean log(x + EPS)) − EPS, written so that all-zero KL gives exactly 0
    return EPS * float(np.expm1(np.mean(np.log1p(values / EPS))))


def _blocks(v: FloatArray) -> FloatArray:
    count = min(MAX_BLOCKS, max(2, math.isqrt(v.size)))
    return np.asarray([b.mean() for b in np.array_split(v, count)])


def _item_test(v: FloatArray, threshold: float) -> tuple[float, float]:
    """``(t, p)`` of the one-sided batch-means t test of ``mean(v) > threshold``."""
    means = _blocks(v)
    excess = float(means.mean()) - threshold
    sd = float(means.std(ddof=1))
    if sd == 0.0:
        return (math.inf, 0.0) if excess > 0 else (-math.inf, 1.0)
    t = excess / (sd / math.sqrt(means.size))
    return t, float(stats.t.sf(t, means.size - 1))


def first_bad(v: FloatArray, threshold: float) -> int | None:
    """Index where the suffix of ``v`` with the largest total excess over ``threshold``
    starts; None when no suffix exceeds it."""
    suffix = np.cumsum((v - threshold)[::-1])[::-1]
    k = int(np.argmax(suffix))
    return k if suffix[k] > 0 else None


def tail_test(
    item_ids: Sequence[str],
    items: IntArray,
    positions: IntArray,
    values: FloatArray,
    floor_typical: Mapping[str, float],
    tolerance: float,
) -> TailTest | None:
    """The tail test over the positions of ``items`` (dense indices into ``item_ids``, sorted,
    each item's positions in order); None when no item has two positions."""
    if items.size == 0:
        return None
    cuts = np.flatnonzero(np.diff(items)) + 1
    rows: list[tuple[float, float, int, FloatArray, IntArray, float]] = []
    for idx, pos, val in zip(
        np.split(items, cuts), np.split(positions, cuts), np.split(values, cuts), strict=True
    ):
        if val.size < 2:
            continue
        g = int(idx[0])
        threshold = math.log(tolerance + floor_typical.get(item_ids[g], 0.0) + EPS)
        v = np.log(val + EPS)
        t, p = _item_test(v, threshold)
        rows.append((p, t, g, val, pos, threshold))
    if not rows:
        return None
    p, t, g, val, pos, threshold = min(rows, key=lambda r: (r[0], -r[1], -typical(r[3])))
    bad = first_bad(np.log(val + EPS), threshold)
    return TailTest(
        tolerance=tolerance,
        n_items=len(rows),
        p_value=min(1.0, len(rows) * p),
        worst_item=item_ids[g],
        worst_tokens=int(val.size),
        worst_typical=typical(val),
        worst_mean=float(val.mean()),
        first_bad_position=None if bad is None else int(pos[bad]),
    )
