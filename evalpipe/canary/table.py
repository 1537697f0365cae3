"""One canary row per fault and size (and per benign variant), from its comparison with the
clean run: pure, so every figure is tested on literal comparisons.

Signals, each with the items it needs for 80 % power at the size observed:

- outputs identical: the share of items whose generations match exactly (descriptive);
- accuracy: the paired delta, its interval and the accuracy verdict; items needed to detect
  the observed drop at the pair's other discordance
  (:func:`~evalpipe.compare.power.items_for_drop`);
- token KL: the decode path's per-token mean KL with its interval and the token verdict;
  items the verdict needs to show its excess over the floor above τ;
- localisation: where first divergences fall relative to the fault's period, and the
  boundary test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evalpipe.compare.core import Comparison
from evalpipe.compare.power import items_for_drop
from evalpipe.compare.tokens.json import plain
from evalpipe.faults import FaultSpec

NS = (60, 120, 1319)
"""Item counts the smallest-detectable summary is given at: a quick slice, the canary's
default, and the whole of GSM8K."""

SIGNALS = ("accuracy", "token")
"""The signals with a test, whose smallest detectable fault is reported."""


@dataclass(frozen=True)
class CanaryRow:
    """One fault at one size (``role`` ``fault``), or a benign variant (``benign``), against
    the clean run. Rates are fractions; KL in nats per token. ``*_items``: the items each
    verdict needs to call this fault a drift with 80 % power — the accuracy loss test to see
    the observed drop, the token verdict to show the excess KL above τ (``inf``: never, e.g.
    an excess within τ, which the token verdict passes by design)."""

    label: str
    role: str
    run_id: str
    kind: str | None
    size: float | None
    fault: str | None
    n: int
    identical: float | None
    acc_delta: float
    acc_low: float
    acc_high: float
    acc_verdict: str
    acc_items: float
    kl_mean: float | None
    kl_low: float | None
    kl_high: float | None
    token_verdict: str
    token_items: float
    period: int | None
    divergent: int
    near: int
    near_width: int | None
    near_expected: float | None
    near_p: float | None
    boundary_p: float | None
    boundary_reason: str
    reached: bool

    def to_json(self) -> dict[str, Any]:
        """Strict JSON: an infinite item count (never a drift) or interval bound is ``null``."""
        found = plain(asdict(self))
        assert isinstance(found, dict)
        return found


def row(
    label: str,
    role: str,
    c: Comparison,
    fault: FaultSpec | None,
    token_items: float,
    max_position: int,
) -> CanaryRow:
    """The row of comparison ``c`` (the faulted or benign run against the clean one);
    ``token_items`` comes from the per-item values of the decode KL's excess over the floor
    (:func:`evalpipe.compare.tokens.inference.items_needed`), ``max_position`` is the longest
    sequence (prompt + output) of the run."""
    r = c.result
    other = max(r.discordance - max(-r.delta, 0.0), 0.0)
    decode = None if c.tokens is None else c.tokens.paths.get("decode")
    kl = None if decode is None else decode.metrics.get("kl")
    share = None if decode is None else decode.divergence_share
    boundary = None if decode is None else decode.boundary
    return CanaryRow(
        label=label,
        role=role,
        run_id=c.run.run_id,
        kind=None if fault is None else fault.kind,
        size=None if fault is None else fault.size,
        fault=None if fault is None else fault.canonical,
        n=r.n,
        identical=c.agreement,
        acc_delta=r.delta,
        acc_low=r.ci_low,
        acc_high=r.ci_high,
        acc_verdict=r.verdict,
        acc_items=items_for_drop(-r.delta, other, r.alpha),
        kl_mean=None if kl is None else kl.mean,
        kl_low=None if kl is None else kl.ci_low,
        kl_high=None if kl is None else kl.ci_high,
        token_verdict="inconclusive" if decode is None else decode.verdict,
        token_items=token_items,
        period=None if c.tokens is None else c.tokens.period,
        divergent=0 if decode is None else len(decode.first_divergence),
        near=0 if share is None else share.near,
        near_width=None if share is None else share.width,
        near_expected=None if share is None or share.p_value is None else share.expected,
        near_p=None if share is None else share.p_value,
        boundary_p=None if boundary is None else boundary.p_value,
        boundary_reason=(
            "no shard period"
            if boundary is None
            else boundary.reason
            if boundary.p_value is None
            else ""
        ),
        reached=fault is None or first_position(fault) < max_position,
    )


def first_position(spec: FaultSpec) -> int:
    """The first whole-sequence position the fault acts at."""
    residue = (spec.threshold - spec.offset) % spec.period
    return spec.threshold + (0 if residue < spec.width else spec.period - residue)


def smallest_detectable(rows: Sequence[CanaryRow], signal: str, n: int) -> dict[str, float | None]:
    """Per fault kind, the smallest size the ``signal`` (``accuracy`` or ``token``) detects
    with 80 % power at ``n`` items (None: no size of the grid)."""
    out: dict[str, float | None] = {}
    for r in rows:
        if r.role != "fault" or r.kind is None or r.size is None:
            continue
        items = r.acc_items if signal == "accuracy" else r.token_items
        best = out.get(r.kind)
        if items <= n and (best is None or abs(r.size) < abs(best)):
            out[r.kind] = r.size
        else:
            out.setdefault(r.kind, None)
    return out


Smallest = tuple[tuple[str, tuple[str, ...]], ...]
"""Per fault kind, one cell per (signal, item count): see :func:`smallest_table`."""


def smallest_table(rows: Sequence[CanaryRow]) -> Smallest:
    """Per fault kind, the smallest size each signal of :data:`SIGNALS` detects with 80 %
    power at each item count of :data:`NS` (signal-major, ``-`` for no size of the grid)."""
    found = {(s, n): smallest_detectable(rows, s, n) for s in SIGNALS for n in NS}
    kinds = dict.fromkeys(k for by_kind in found.values() for k in by_kind)
    return tuple(
        (
            kind,
            tuple(
                "-" if (v := found[(s, n)].get(kind)) is None else f"{v:g}"
                for s in SIGNALS
                for n in NS
            ),
        )
        for kind in kinds
    )


@dataclass(frozen=True)
class CanaryReport:
    """The canary's outcome: the clean run and its repeat (the noise floor), one row per
    fault and benign variant, and the arms that did not finish (with why)."""

    model: str
    task: str
    layout: str
    grid: str
    clean_run: str
    repeat_run: str | None
    rows: tuple[CanaryRow, ...]
    failures: tuple[str, ...] = ()
    starts: int = 0
