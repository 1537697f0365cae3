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

from evalpipe.compare.tokens.types import (
    BoundaryTest,
    Excess,
    PartingSplit,
    PathComparison,
    TailTest,
)


@dataclass(frozen=True)
class Divergence:
    """Where the decode path's generations first differ.

    ``near_boundary`` is the share of divergent items whose first differing token lies within
    ``width`` tokens of a shard boundary, None without a period; ``chance`` the share expected
    under the null built from the actual prompt lengths and divergence offsets
    (:class:`~evalpipe.compare.tokens.types.DivergenceShare`), ``p_value`` its exact test.
    """

    n: int
    median: float | None
    min: int | None
    near_boundary: float | None
    width: int
    chance: float | None
    p_value: float | None = None


def divergence(p: PathComparison) -> Divergence:
    """The first-divergence summary of ``p`` (empty for the forced path)."""
    fd, share = p.first_divergence, p.divergence_share
    tested = share is not None and share.p_value is not None and share.n > 0
    return Divergence(
        n=len(fd),
        median=statistics.median(fd) if fd else None,
        min=min(fd) if fd else None,
        near_boundary=share.near / share.n if tested and share else None,
        width=share.width if share else 0,
        chance=share.expected / share.n if tested and share else None,
        p_value=share.p_value if tested and share else None,
    )


def nats(x: float | None, signed: bool = False) -> str:
    """A divergence (KL, |Δ logprob|; nats) to 3 significant digits, ``1.23e-04``; ``∞`` for
    an unbounded interval side, ``n/a`` for none."""
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return ("-" if x < 0 else "+" if signed else "") + "∞"
    return f"{x:+.2e}" if signed else f"{x:.2e}"


def interval(low: float, high: float, level: float, signed: bool = False) -> str:
    """``[1.00e-04, 2.00e-04] (95%)``: an interval of divergences with its level."""
    return f"[{nats(low, signed)}, {nats(high, signed)}] ({level:.0%})"


def boundary_sentence(b: BoundaryTest) -> str:
    """The boundary test in one sentence, or why there is none."""
    if b.p_value is None or b.window is None:
        return f"no boundary test at period {b.period}: {b.reason}"
    windows = ", ".join(str(w) for w in b.windows)
    return (
        f"positions within ±{b.window} tokens of a multiple of {b.period} "
        f"({b.near_share:.1%} of the positions of {b.n_items} items) carry {b.kl_share:.1%} "
        f"of the KL (×{b.ratio:.2f}); p = {b.p_value:.3g}, one-sided, Bonferroni over windows "
        f"{windows}, each against {b.draws} random boundary placements"
    )


def excess_sentence(e: Excess) -> str:
    """The pair's KL against the noise floor in one sentence."""
    if e.floor_mean is None:
        return (
            f"not measured (no baseline repeat with token traces): the pair's mean KL "
            f"{nats(e.pair_mean)} {interval(e.ci_low, e.ci_high, e.level)} on {e.n_items} "
            "items bounds the excess from above"
        )
    return (
        f"mean KL {nats(e.pair_mean)} for the pair vs {nats(e.floor_mean)} between baseline "
        f"repeats on the same {e.n_items} items: excess {nats(e.estimate, True)} "
        f"{interval(e.ci_low, e.ci_high, e.level, signed=True)}"
    )


def tail_sentence(t: TailTest) -> str | None:
    """The tail test in one sentence (None: no item was long enough to test)."""
    if t.worst_item is None:
        return None
    bad = t.first_bad_position
    where = "" if bad is None else f", above τ from position {bad}"
    return (
        f"worst item {t.worst_item}: typical KL {nats(t.worst_typical)} (mean "
        f"{nats(t.worst_mean)}) over {t.worst_tokens} tokens{where}, against τ = "
        f"{nats(t.tolerance)} per item; p = {t.p_value:.3g} (Bonferroni over {t.n_items} items)"
    )


def parting_sentence(s: PartingSplit | None) -> str | None:
    """The decode KL over the common prefix and at the parting positions, apart."""
    if s is None or not s.parting_tokens:
        return None
    return (
        f"common prefix {nats(s.prefix_mean)} "
        f"{interval(s.prefix_ci_low, s.prefix_ci_high, s.level)} over {s.prefix_tokens} tokens; "
        f"the {s.parting_tokens} parting positions {nats(s.parting_mean)}"
    )
