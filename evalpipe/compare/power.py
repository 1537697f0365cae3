"""What a paired comparison could have seen, and the decision: MDE, verdict rule, Holm.

Pure, standard library only (like :mod:`evalpipe.compare.stats`, which computes the
inputs). Kept apart because this is the policy half: the numbers in ``stats`` describe the
data; the rule here decides ``ok`` / ``drift`` / ``inconclusive`` and gives a pass only when the
data show non-inferiority.

MDE. The smallest true drop the two-sided exact McNemar test detects with the given power, by
Connor's (1987) normal approximation with Edwards' continuity correction (``|b - c| - 1``): the
exact test is conservative, and without the correction its exact power at the claimed MDE is
only 76-80 %; with it, 80-90 % (tests and benchmarks/power.py check). Engine noise ``d`` makes
discordant pairs in both directions; a true drop adds ``delta`` one-way flips, so the
alternative has discordance ``d + delta``. Hence the MDE is never 0, even with no observed
discordance: about ``10 / n`` at least (0.8 points at n = 1319 with the 1/n floor). Its no-drift
discordance is the largest of the observed discordance, the noise floor (baseline repeats) and
``1/n``: an observed 0 is not proof of a noiseless engine.

Verdict, in order (``alpha`` two-sided; the one-sided non-inferiority claim at ``alpha / 2`` so
that ``ok`` agrees with the 95 % interval, the ICH E9 convention):
1. ``inconclusive`` if n < min_n (default 100: below it one question moves accuracy by more than
   a point, the normal approximations are poor, and even a noiseless engine has an MDE of ~10
   points, so no useful margin could be certified anyway).
2. ``drift`` if delta < 0, the exact McNemar p < alpha (a loss is established) and
   non-inferiority is not shown (a loss as large as the margin is not excluded). At a true
   delta of 0 this fires with probability <= alpha / 2 whatever the noise. A detected loss is
   reported even when the test was under-powered: low power hides drifts, it does not invent them.
3. ``ok`` if the non-inferiority p < alpha / 2: the 95 % interval excludes a loss of the margin.
4. ``inconclusive`` otherwise: neither a loss nor non-inferiority is shown.

The MDE is reported with every verdict (how small a drift could still hide) but does not gate
``ok``. An earlier rule answered ``inconclusive`` whenever the MDE exceeded the margin; that
added nothing to what ``ok`` guarantees, because the non-inferiority test at ``alpha / 2``
already bounds P(``ok`` | true loss >= margin) by ``alpha / 2`` (exactly 2.0-2.3 % at a
margin-sized loss, n = 1319, 0.25-2 % discordance; tests check). It only withheld passes the
data had earned: at 2 % balanced discordance on 1319 items the 97.5 % lower bound of the
difference is about -0.8 points, yet the MDE (1.5 points) exceeds a 1-point margin, so that rule
never said ``ok`` where this one does two times in three (benchmarks/power.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

Verdict = Literal["ok", "drift", "inconclusive"]

DEFAULT_MARGIN = 0.01
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_N = 100
DEFAULT_POWER = 0.8

_NORMAL = NormalDist()


def mde(
    n: int, discordance: float, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER
) -> float:
    """Smallest true drop the two-sided loss test detects with ``power``; ``inf`` if none.

    Solves ``(n*delta - 1)/sqrt(n) = z_a*sqrt(psi) + z_b*sqrt(psi - delta**2)`` (Connor 1987,
    continuity-corrected) with ``psi = discordance + delta``: noise plus the drop's own flips.
    ``discordance`` is the no-drift rate; :func:`decide` passes the floored value.
    """
    if n < 1 or not 0.0 <= discordance <= 1.0:
        raise ValueError(f"need n >= 1 and discordance in [0, 1], got {n}, {discordance}")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    za, zb = _NORMAL.inv_cdf(1 - alpha / 2), _NORMAL.inv_cdf(power)

    def shortfall(drop: float) -> float:
        psi = discordance + drop
        detected = (n * drop - 1) / math.sqrt(n)
        return detected - za * math.sqrt(psi) - zb * math.sqrt(max(psi - drop**2, 0.0))

    # shortfall/drop is increasing, so there is a single crossing; bisect for it.
    low, high = 0.0, 1.0 - discordance
    if high <= 0 or shortfall(high) < 0:
        return math.inf
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if shortfall(mid) < 0 else (low, mid)
        if high - low < 1e-12:
            break
    return high


MAX_ITEMS = 10**8
"""Where :func:`items_for_drop` gives up: no evaluation has more items."""


def items_for_drop(
    drop: float, discordance: float, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER
) -> float:
    """Items the loss test needs to detect a true ``drop`` with ``power``, when the runs
    otherwise disagree on a ``discordance`` share of items: the smallest n whose MDE (at the
    floored discordance ``max(discordance, 1/n)``, as :func:`decide` uses) is at most
    ``drop``; ``inf`` for no drop, or beyond :data:`MAX_ITEMS`."""
    if not drop > 0:
        return math.inf

    def enough(n: int) -> bool:
        return mde(n, min(1.0, max(discordance, 1 / n)), alpha, power) <= drop

    low, high = 2, 2
    while not enough(high):
        high *= 2
        if high > MAX_ITEMS:
            return math.inf
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return float(low)


def verdict(
    *,
    n: int,
    delta: float,
    p_value: float,
    noninferiority_p: float,
    mde: float,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    min_n: int = DEFAULT_MIN_N,
) -> tuple[Verdict, str]:
    """The verdict and a one-line reason, by the rule in the module docstring."""
    if n < min_n:
        return "inconclusive", f"{n} items < min_n {min_n}"
    if delta < 0 and p_value < alpha and noninferiority_p >= alpha / 2:
        return "drift", (
            f"loss of {-delta * 100:.2f} points is significant (McNemar p={p_value:.3g}) and a "
            f"loss of {margin * 100:.2f} points is not excluded (non-inferiority "
            f"p={noninferiority_p:.3g})"
        )
    # The MDE does not decide, but every non-drift reason names it: a pass still says how
    # small a drift the loss test could have missed.
    seen = f"MDE {mde * 100:.2f} points"
    if noninferiority_p < alpha / 2:
        return "ok", (
            f"non-inferior within {margin * 100:.2f} points (p={noninferiority_p:.3g}); "
            f"{seen}: smaller drifts could go unseen"
        )
    return "inconclusive", (
        f"non-inferiority within {margin * 100:.2f} points not shown "
        f"(p={noninferiority_p:.3g}); {seen}"
    )


def decide(
    n: int,
    delta: float,
    discordance: float,
    p_value: float,
    noninferiority_p: float,
    noise_discordance: float | None = None,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    min_n: int = DEFAULT_MIN_N,
    comparisons: int = 1,
) -> tuple[float, Verdict, str]:
    """``(mde, verdict, reason)`` from a comparison's statistics.

    The MDE uses the floored discordance (module docstring) and is computed at
    ``alpha / comparisons``: with Holm, the first comparison is tested at that level.
    """
    floor = max(discordance, noise_discordance or 0.0, 1 / n)
    detectable = mde(n, min(floor, 1.0), alpha=alpha / comparisons)
    decided, why = verdict(
        n=n,
        delta=delta,
        p_value=p_value,
        noninferiority_p=noninferiority_p,
        mde=detectable,
        margin=margin,
        alpha=alpha,
        min_n=min_n,
    )
    return detectable, decided, why


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order."""
    k = len(pvalues)
    order = sorted(range(k), key=lambda i: pvalues[i])
    adjusted = [0.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * pvalues[i]))  # keeps them monotone
        adjusted[i] = running
    return adjusted
