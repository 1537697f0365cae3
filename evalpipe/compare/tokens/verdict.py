"""The token-level verdict of one path on a tolerance τ, and τ itself. Pure.

τ is the KL in excess of the noise floor (nats/token) a path may show and still be ``ok``.
With ``alpha`` two-sided as everywhere in evalpipe (the intervals at ``1 − alpha``), each
one-sided claim is made at ``alpha / 2`` (the ICH E9 convention of the accuracy verdict):

1. ``inconclusive`` without comparable items.
2. ``token-drift`` when the lower bound of the excess is above τ, or the tail test
   (:mod:`evalpipe.compare.tokens.tail`) finds a broken item: ``p_drift`` < ``alpha / 2``, the
   two tests Bonferroni-combined (``p_drift = 2 · min`` of theirs) so that a path within τ
   with no broken item drifts with probability at most ``alpha / 2``. Only with a measured
   floor: without one a large KL may be the engine's own noise.
3. ``ok`` when the upper bound of the excess is below τ (``p_ok`` < ``alpha / 2``), there are
   at least :data:`MIN_ITEMS` items (below that the interval's coverage on heavy-tailed data is
   not established, ``benchmarks/token_verdict.py``) and the items give at least
   :data:`POWER` power to see an excess of τ (exact; :func:`evalpipe.compare.tokens.inference.
   items_needed`): ``ok`` is shown, never merely "not rejected". Without a floor the upper
   bound is the pair's own KL, which the floor can only lower: ``ok`` can still be shown.
4. ``inconclusive`` otherwise, with the reason: too few items, too few for τ, the interval
   straddles τ, or no floor to show a drift against.

Both p-values are Holm-adjusted over every path decided together (:func:`holm_paths`: the two
paths of a comparison, every comparison of one report or gate), and the power is computed at
the first Holm level. The default τ is :data:`DEFAULT_TOKEN_MARGIN`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from evalpipe.compare.power import holm
from evalpipe.compare.tokens.inference import items_for, power
from evalpipe.compare.tokens.types import (
    MARGIN_PATHS,
    PATHS,
    Decision,
    Excess,
    Path,
    PathComparison,
    TailTest,
    TokenComparison,
    TokenVerdict,
    Tolerance,
    margin_path,
)
from evalpipe.compare.tokens.view import nats

DEFAULT_TOKEN_MARGIN = 2e-3
"""The default τ, nats/token, both paths. Provisional, set from the figures known when it was
chosen (issues 19 and 20): benign pairs on Gemma-3-270M GSM8K measure 2.9e-4 (float32 vs
bfloat16) and 4.7e-4 (tp2 vs tp1), a key-scaling fault of ε = 0.05 9.2e-4; gross faults
1.2e-2 (ε = 0.2) and 0.41 (ε = 0.5). llama.cpp reports a mean KLD of 5.5e-4 for f16 and 1.4e-3
for q8_0 (a change users accept) on LLaMA-3-8B; SGLang's KL tests use 0.01. 2e-3 is above
q8_0 and 4× the largest benign pair, 6× below the smallest gross fault: a benign pair's upper
bound falls below it at 60 items, a gross fault's lower bound above it. Recalibrate it from
the canary table (``evalpipe canary``) for another model, or give a relative τ."""
NO_FLOOR = "no baseline repeat to set the noise floor: run the baseline with --repeat 2"
MIN_ITEMS = 10
"""No ``ok`` on fewer items (see the module docstring)."""
POWER = 0.8


@dataclass(frozen=True)
class TokenMargin:
    """Where τ comes from: per path in nats/token, or ``factor`` × a reference pair's upper
    bound on the same path (a known-benign change on the same model and task, e.g. tp2 vs
    tp1). ``given`` is False for the defaults."""

    decode: float = DEFAULT_TOKEN_MARGIN
    forced: float = DEFAULT_TOKEN_MARGIN
    factor: float | None = None
    given: bool = False

    def describe(self) -> str:
        if self.factor is not None:
            return f"{self.factor:g} × the reference pair's upper bound"
        if self.decode == self.forced:
            return f"{self.decode:g} nats/token"
        return f"decode {self.decode:g}, forced {self.forced:g} nats/token"


def margin_from(value: object) -> TokenMargin:
    """A :class:`TokenMargin` from a number (both paths), a mapping or text ``decode=X,forced=Y``
    (per path, the other at the default), or text ``Nx`` (N × a reference pair's upper
    bound); ValueError with what is wrong otherwise (a τ must be a positive finite number)."""
    if isinstance(value, str) and value.strip().lower().endswith("x"):
        return TokenMargin(factor=_positive(value.strip()[:-1], "a factor"), given=True)
    if isinstance(value, str) and "=" in value:
        pairs = [part.partition("=") for part in value.split(",")]
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k not in MARGIN_PATHS)
        if unknown or not value:
            raise ValueError(
                f"give τ per path as decode=X,forced=Y (decode: free generation; forced: both "
                f"teacher-forced paths, forced-decode and prefill), not "
                f"{', '.join(unknown) or 'nothing'}"
            )
        taus = {k: _positive(v, f"τ of {k}") for k, v in value.items()}
        default = DEFAULT_TOKEN_MARGIN
        return TokenMargin(taus.get("decode", default), taus.get("forced", default), given=True)
    tau = _positive(value, "τ")
    return TokenMargin(tau, tau, given=True)


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in nats/token, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return number


def tolerances(
    margin: TokenMargin, reference: TokenComparison | str | None = None, label: str = ""
) -> dict[Path, Tolerance | str]:
    """τ of each path, or why there is none. A relative margin reads ``reference`` (the
    reference pair's comparison, ``label`` naming it; a text: why there is none)."""
    out: dict[Path, Tolerance | str] = {}
    for path in PATHS:
        if margin.factor is None:
            tau = margin.decode if margin_path(path) == "decode" else margin.forced
            out[path] = Tolerance(tau, "given" if margin.given else "default")
        elif reference is None or isinstance(reference, str):
            out[path] = f"no τ: {reference or 'a relative token margin needs a reference pair'}"
        else:
            out[path] = _relative(margin.factor, reference.paths.get(path), path, label)
    return out


def _relative(factor: float, ref: PathComparison | None, path: Path, label: str) -> Tolerance | str:
    bound = None if ref is None or ref.excess is None else ref.excess.ci_high
    if ref is None or ref.excess is None or bound is None:
        return f"no τ: the reference pair {label} has no {path} path to compare"
    if not (math.isfinite(bound) and bound > 0):
        return f"no τ: the reference pair {label} bounds its {path} KL by {nats(bound)}"
    source = f"{factor:g} × {nats(bound)}, the {ref.excess.level:.0%} upper bound of {label}"
    return Tolerance(factor * bound, source)


def decide(
    n_items: int,
    excess: Excess | None,
    tail: TailTest | None,
    tolerance: Tolerance,
    alpha: float,
    p_ok: float,
    p_mean_drift: float,
) -> Decision:
    """The decision figures of one path before any multiplicity adjustment."""
    floor = excess is not None and excess.floor_mean is not None
    p_drift = p_mean_drift if tail is None else min(1.0, 2 * min(p_mean_drift, tail.p_value))
    spread = 0.0 if excess is None else excess.spread
    return Decision(
        tolerance=tolerance,
        alpha=alpha,
        p_ok=p_ok,
        p_drift=p_drift if floor else 1.0,
        p_mean_drift=p_mean_drift,
        p_ok_adjusted=p_ok,
        p_drift_adjusted=p_drift if floor else 1.0,
        comparisons=1,
        items_needed=items_for(tolerance.tau, spread, POWER, alpha),
        min_items=MIN_ITEMS,
        floor=floor,
    )


def rule(p: PathComparison) -> tuple[TokenVerdict, str]:
    """The verdict and its reason from ``p``'s decision (module docstring); without a floor
    the reason says how to measure one."""
    verdict, reason = _rule(p)
    d = p.decision
    if d is not None and not d.floor and "--repeat 2" not in reason:
        reason = f"{reason} ({NO_FLOOR})"
    return verdict, reason


def _rule(p: PathComparison) -> tuple[TokenVerdict, str]:
    d, e = p.decision, p.excess
    if p.n_items == 0 or d is None or e is None:
        return "inconclusive", p.reason or "no items with comparable tokens"
    half = d.alpha / 2
    tau = f"τ = {nats(d.tolerance.tau)} ({d.tolerance.source})"
    holm_note = f" [Holm, {d.comparisons} paths]" if d.comparisons > 1 else ""
    figures = (
        f"KL {'over the floor ' if d.floor else ''}{nats(e.estimate)} "
        f"[{nats(e.ci_low)}, {nats(e.ci_high)}] ({e.level:.0%}) on {e.n_items} items"
    )
    if d.floor and d.p_drift_adjusted < half:
        return "token-drift", _drift_reason(p, d, figures, tau) + holm_note
    if d.p_ok_adjusted < half:
        if e.n_items < d.min_items:
            return "inconclusive", (
                f"{figures} is below {tau}, but {e.n_items} items < {d.min_items}: too few "
                "for a token verdict"
            )
        if e.n_items < d.items_needed:
            return "inconclusive", (
                f"too few items for τ: {figures} is below {tau}, but 80 % power to see τ "
                f"needs {_count(d.items_needed)} items"
            )
        seen = power(e.n_items, d.tolerance.tau, e.spread, d.alpha / d.comparisons)
        return "ok", f"{figures} is below {tau}; {seen:.0%} power to see τ{holm_note}"
    if math.isinf(e.ci_high):
        return "inconclusive", (
            f"{figures}: its upper bound is unbounded (the KL sits on too few items to bound it)"
        )
    if not d.floor and d.p_mean_drift * d.comparisons < half:
        return "inconclusive", (
            f"{figures} is above {tau}, but the noise floor is unknown: run the baseline with "
            "--repeat 2"
        )
    return "inconclusive", f"{figures} straddles {tau}{holm_note}"


def _count(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.0f}"


def _drift_reason(p: PathComparison, d: Decision, figures: str, tau: str) -> str:
    """Which of the two tests fired: the mean's bounds, the tail test's worst item, or both."""
    factor = d.p_drift_adjusted / d.p_drift if d.p_drift > 0 else 1.0
    parts = []
    if min(1.0, 2 * d.p_mean_drift * factor) < d.alpha / 2 or p.tail is None:
        parts.append(f"{figures} is above {tau}")
    t = p.tail
    if t is not None and min(1.0, 2 * t.p_value * factor) < d.alpha / 2:
        where = "" if t.first_bad_position is None else f" from position {t.first_bad_position}"
        parts.append(
            f"item {t.worst_item} is broken: typical KL {nats(t.worst_typical)} (mean "
            f"{nats(t.worst_mean)}) over {t.worst_tokens} tokens{where}, above τ "
            f"(p = {t.p_value:.2g}, Bonferroni over {t.n_items} items)"
        )
    return "; ".join(parts)


def holm_paths(comparisons: Sequence[TokenComparison | None]) -> list[TokenComparison | None]:
    """Every path of ``comparisons`` re-decided with both p-values Holm-adjusted over all of
    them, and the power at the first Holm level."""
    slots = [
        (i, name)
        for i, t in enumerate(comparisons)
        if t is not None
        for name, p in t.paths.items()
        if p.decision is not None
    ]
    k = len(slots)
    decisions = [comparisons[i].paths[n].decision for i, n in slots]  # type: ignore[union-attr]
    ok = holm([d.p_ok for d in decisions if d is not None])
    drift = holm([d.p_drift for d in decisions if d is not None])
    out = list(comparisons)
    for (i, name), d, p_ok, p_drift in zip(slots, decisions, ok, drift, strict=True):
        t = out[i]
        assert t is not None and d is not None
        path = t.paths[name]
        spread = 0.0 if path.excess is None else path.excess.spread
        decided = replace(
            d,
            p_ok_adjusted=p_ok,
            p_drift_adjusted=p_drift,
            comparisons=max(k, 1),
            items_needed=items_for(d.tolerance.tau, spread, POWER, d.alpha / max(k, 1)),
        )
        path = replace(path, decision=decided)
        verdict, reason = rule(path)
        out[i] = replace(t, paths={**t.paths, name: replace(path, verdict=verdict, reason=reason)})
    return out
