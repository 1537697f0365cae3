"""The "token level" section of ``evalpipe compare``'s text report: a
:class:`~evalpipe.compare.tokens.types.TokenComparison` for the terminal. Pure.

Divergences (KL, |Δ logprob|) are in nats with 3 significant digits; shares are percentages;
every interval says its level. Item ids come from data files and reasons may quote them: both
are shown through :func:`evalpipe.report.textfmt.safe`.
"""

from __future__ import annotations

from evalpipe.compare.tokens.types import (
    METRICS,
    Bin,
    BoundaryTest,
    Metric,
    MetricSummary,
    PathComparison,
    TokenComparison,
)
from evalpipe.compare.tokens.view import (
    boundary_sentence,
    divergence,
    excess_sentence,
    nats,
    parting_sentence,
    tail_sentence,
)
from evalpipe.report.textfmt import p_text, safe, share

TOKEN_SYMBOL = {"ok": "✓ OK", "token-drift": "✗ TOKEN-DRIFT", "inconclusive": "? INCONCLUSIVE"}
METRIC_LABELS: dict[Metric, str] = {
    "kl": "KL (nats)",
    "abs_dlogprob": "|Δlogprob|",
    "top1_disagree": "top-1 differs",
}
MAX_BIN_ROWS = 16
"""Rows shown of a localisation table; the rest are counted (``--json`` has them all)."""


def format_tokens(t: TokenComparison, accuracy: str) -> list[str]:
    """The section's lines: the token verdict beside ``accuracy`` (the accuracy verdict as
    shown), then each compared path, then each path that could not be compared and why."""
    period = f"shard period {t.period} tokens" if t.period else "no shard period"
    lines = [
        f"token level: {TOKEN_SYMBOL[t.verdict]} (accuracy {accuracy}); run {safe(t.run_id)} "
        f"vs baseline {safe(t.baseline_id)}, {period}"
    ]
    for name, p in t.paths.items():
        lines += _path(name, p, t.period)
    lines += [f"  {name}: {safe(reason, 600)}" for name, reason in t.unavailable.items()]
    return lines


def _path(name: str, p: PathComparison, period: int | None) -> list[str]:
    head = f"  {name}: {p.n_items} items, {p.n_tokens} tokens, top-{p.k}"
    if p.greedy_agreement is not None:
        head += f"; identical generations {share(p.greedy_agreement)}"
    lines = [head, *_divergence(p)]
    level = p.metrics["kl"].level if "kl" in p.metrics else 0.95
    lines.append(
        f"    {'metric':<15} {'mean [' + f'{level:.0%}' + ' CI]':<30} {'p99':>9} {'p99.9':>9}"
        "  worst item@position"
    )
    lines += [_metric(m, p.metrics[m]) for m in METRICS if m in p.metrics]
    if any(s.p99 is None or s.p999 is None for s in p.metrics.values()):
        lines.append("    (p99 and p99.9 are shown from 500 and 5 000 tokens on)")
    parting = parting_sentence(p.parting)
    if parting is not None:
        lines.append(f"    decode KL apart: {parting}")
    lines += _floor(p) + _tail(p)
    modulo = f" mod {period}" if period else ""
    lines += _bins(f"KL by residue{modulo}", "residues", p.by_residue)
    lines += _bins("KL by position band", "positions", p.by_band)
    if p.boundary is not None:
        lines.append(_boundary(p.boundary))
    if p.missing_tokens:
        lines.append(
            f"    {p.missing_tokens} positions imputed a baseline top-{p.k} token the run "
            "did not list (KL estimate)"
        )
    lines.append(f"    verdict: {TOKEN_SYMBOL[p.verdict]} — {safe(p.reason, 400) or '-'}")
    return lines


def _divergence(p: PathComparison) -> list[str]:
    d = divergence(p)
    if not d.n:
        return []
    where = f"    first divergence ({d.n} items): position median {d.median:g}, min {d.min}"
    if d.near_boundary is not None and d.chance is not None:
        where += (
            f"; {share(d.near_boundary, 0)} within ±{d.width} tokens of a shard boundary, "
            f"{share(d.chance, 0)} expected from the actual positions (p={p_text(d.p_value)})"
        )
    elif p.divergence_share is not None and p.divergence_share.reason:
        where += f"; no boundary share: {p.divergence_share.reason}"
    return [where]


def _value(metric: Metric, x: float | None, signed: bool = False) -> str:
    if metric == "top1_disagree":  # a share of positions, not a divergence
        return ("+" if signed and x is not None and x >= 0 else "") + share(x, 2)
    return nats(x, signed)


def _metric(metric: Metric, s: MetricSummary) -> str:
    mean = f"{_value(metric, s.mean)} [{_value(metric, s.ci_low)}, {_value(metric, s.ci_high)}]"
    worst = "—"
    if s.worst_item is not None:
        position = "?" if s.worst_position is None else s.worst_position
        ties = f" ({s.worst_ties} tied)" if s.worst_ties > 1 else ""
        worst = f"{safe(s.worst_item, 40)}@{position}{ties}"
    p99 = "—" if s.p99 is None else _value(metric, s.p99)
    p999 = "—" if s.p999 is None else _value(metric, s.p999)
    return f"    {METRIC_LABELS[metric]:<15} {mean:<30} {p99:>9} {p999:>9}  {worst}"


def _floor(p: PathComparison) -> list[str]:
    return [] if p.excess is None else [f"    noise floor: {excess_sentence(p.excess)}"]


def _tail(p: PathComparison) -> list[str]:
    line = None if p.tail is None else tail_sentence(p.tail)
    return [] if line is None else [f"    tail test (each item's typical KL): {safe(line, 400)}"]


def _bins(title: str, unit: str, bins: tuple[Bin, ...]) -> list[str]:
    if not bins:
        return []
    lines = [
        f"    {title}:",
        f"      {'group':<12} {unit:<12} {'items':>6} {'tokens':>8}  "
        f"mean KL [{bins[0].level:.0%} CI]",
    ]
    for b in bins[:MAX_BIN_ROWS]:
        span = str(b.low) if b.low == b.high else f"{b.low}-{b.high}"
        lines.append(
            f"      {safe(b.label, 12):<12} {span:<12} {b.n_items:>6} {b.n_tokens:>8}  "
            f"{nats(b.mean)} [{nats(b.ci_low)}, {nats(b.ci_high)}]"
        )
    if len(bins) > MAX_BIN_ROWS:
        lines.append(f"      … {len(bins) - MAX_BIN_ROWS} more groups (--json has them all)")
    return lines


def _boundary(b: BoundaryTest) -> str:
    return f"    boundary test: {boundary_sentence(b)}"
