"""Figures derived from a token-level comparison that every renderer shows alike; pure.

The JSON edge (:mod:`evalpipe.compare.tokens.json`), the text report and the gate read a
:class:`~evalpipe.compare.tokens.types.PathComparison`; what they show beyond its stored fields
(the first-divergence summary, and how many divergences fall next to a shard boundary) is
computed here once, and divergences are written one way (:func:`nats`), so two renderers
cannot disagree on them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from evalpipe.compare.tokens.types import PathComparison

NEAR_BOUNDARY_TOKENS = 16
"""A first divergence at most this many tokens from a shard boundary counts as "near" it."""


@dataclass(frozen=True)
class Divergence:
    """Where the decode path's generations first differ.

    ``near_boundary`` is the share of divergent items whose first differing token lies within
    ``width`` tokens of a shard boundary (|signed distance| ≤ ``width``), None without offsets
    (no shard period); ``chance`` is the share a position drawn uniformly over one period
    would have, (2·width + 1) / period capped at 1, the figure to hold ``near_boundary``
    against.
    """

    n: int
    median: float | None
    min: int | None
    near_boundary: float | None
    width: int
    chance: float | None


def divergence(p: PathComparison, period: int | None) -> Divergence:
    """The first-divergence summary of ``p`` (empty for the forced path)."""
    fd, offsets = p.first_divergence, p.divergence_offsets
    width = NEAR_BOUNDARY_TOKENS
    near = sum(abs(o) <= width for o in offsets) / len(offsets) if offsets else None
    chance = min(1.0, (2 * width + 1) / period) if offsets and period else None
    return Divergence(
        n=len(fd),
        median=statistics.median(fd) if fd else None,
        min=min(fd) if fd else None,
        near_boundary=near,
        width=width,
        chance=chance,
    )


def nats(x: float | None, signed: bool = False) -> str:
    """A divergence (KL, |Δ logprob|; nats) to 3 significant digits, ``1.23e-04``; ``∞`` for
    an unbounded interval side, ``n/a`` for none."""
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return ("-" if x < 0 else "+" if signed else "") + "∞"
    return f"{x:+.2e}" if signed else f"{x:.2e}"
