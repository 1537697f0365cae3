"""Where two runs differ, beyond the 2x2 table: identical outputs and the first differing
character, flips by prompt-length bucket and by position relative to shard boundaries. Pure."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def _first_mismatch(a: Sequence[object], b: Sequence[object]) -> int | None:
    """Index of the first differing element (the shorter length on a prefix); None if equal.

    Equal sequences are the common case (identical outputs) and cost one C comparison; else a
    binary search over prefix slices, also in C: no per-element Python loop.
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


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character (the shorter length on a prefix); None if equal."""
    return _first_mismatch(a, b)


def first_token_difference(a_tokens: Sequence[object], b_tokens: Sequence[object]) -> int | None:
    """Token index of the first difference, as :func:`first_difference`."""
    # One sequence type on both sides: a list never equals a tuple, even with equal items.
    return _first_mismatch(tuple(a_tokens), tuple(b_tokens))


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
        i = bisect.bisect_right(edges, tokens)  # how many edges the length reaches
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
