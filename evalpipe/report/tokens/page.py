"""What the comparison page's "Token level" section shows, from a
:class:`~evalpipe.compare.tokens.types.TokenComparison`: formatted figures and chart geometry.

Plain values only (strings, numbers, :mod:`evalpipe.report.charts` plots); the template does
the HTML and escapes every value, item ids included (they come from the data). Figures are
formatted here, once, so the page and its tests read the same text. Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evalpipe.compare.tokens.types import (
    METRICS,
    PATHS,
    Bin,
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
from evalpipe.report.charts import Plot, histogram, whisker_plot

PATH_TITLES = {
    "decode": "Decode path: each side's own generation, over the common prefix",
    "forced-decode": "Forced-decode path: both engines generating the baseline's tokens step "
    "by step (teacher-forced on the decode kernels), every position",
    "forced": "Prefill path: both engines scoring the baseline's tokens (teacher-forced)",
}
METRIC_LABELS: dict[Metric, str] = {
    "kl": "KL (nats, top-k estimate)",
    "abs_dlogprob": "|Δ logprob| of the scored token",
    "top1_disagree": "top-1 disagreement",
}


def share(v: float | None) -> str:
    """A fraction as a percentage with two decimals (top-1 disagreement is often < 1 %)."""
    if v is None or not math.isfinite(v):
        return nats(v)
    return f"{v * 100:.2f}%"


def figure(metric: Metric, v: float | None) -> str:
    """A metric's figure: divergences in nats as every renderer writes them, shares in %."""
    return share(v) if metric == "top1_disagree" else nats(v)


def p_text(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


@dataclass(frozen=True)
class MetricRow:
    """One metric's row: mean [CI], tail percentiles, the worst position, the floor's mean."""

    metric: Metric
    label: str
    mean: str
    ci: str
    p99: str
    p999: str
    max: str
    worst_item: str | None
    worst_position: int | None
    ties: int
    floor: str


def metric_row(metric: Metric, s: MetricSummary, floor: MetricSummary | None) -> MetricRow:
    return MetricRow(
        metric=metric,
        label=METRIC_LABELS[metric],
        mean=figure(metric, s.mean),
        ci=f"[{figure(metric, s.ci_low)}, {figure(metric, s.ci_high)}]",
        p99="—" if s.p99 is None else figure(metric, s.p99),
        p999="—" if s.p999 is None else figure(metric, s.p999),
        max=figure(metric, s.max),
        worst_item=s.worst_item,
        worst_position=s.worst_position,
        ties=s.worst_ties,
        floor="—"
        if floor is None
        else f"{figure(metric, floor.mean)} "
        f"[{figure(metric, floor.ci_low)}, {figure(metric, floor.ci_high)}]",
    )


def divergence_line(p: PathComparison) -> str | None:
    """Where the generations first differ, in one sentence (decode path; None without any)."""
    d = divergence(p)
    if not d.n:
        return None
    text = f"{d.n} items diverge; first differing token at position {d.min} at the earliest"
    text += f", median {d.median:g}" if d.median is not None else ""
    if d.near_boundary is not None and d.chance is not None and d.p_value is not None:
        text += (
            f"; {d.near_boundary * 100:.0f}% within ±{d.width} tokens of a shard boundary, "
            f"{d.chance * 100:.0f}% expected from the actual positions (p {p_text(d.p_value)})"
        )
    return text


def bin_plot(title: str, bins: tuple[Bin, ...], overall: float | None) -> Plot | None:
    return whisker_plot(
        title,
        [b.label for b in bins],
        [b.mean for b in bins],
        [b.ci_low for b in bins],
        [b.ci_high for b in bins],
        overall,
    )


@dataclass(frozen=True)
class PathView:
    """One path's part of the section."""

    path: str
    title: str
    p: PathComparison
    greedy: str | None
    metrics: list[MetricRow]
    divergence_summary: str | None
    first_divergence: Plot | None
    offsets: Plot | None
    by_residue: Plot | None
    by_band: Plot | None
    floor: str | None
    tail: str | None
    parting: str | None
    boundary: str | None
    level: str


def path_view(p: PathComparison, period: int | None) -> PathView:
    kl = p.metrics.get("kl")
    overall = None if kl is None else kl.mean
    floors = p.floor_metrics or {}
    divergent = len(p.first_divergence)
    return PathView(
        path=p.path,
        title=PATH_TITLES.get(p.path, p.path),
        p=p,
        greedy=None if p.greedy_agreement is None else share(p.greedy_agreement),
        metrics=[metric_row(m, p.metrics[m], floors.get(m)) for m in METRICS if m in p.metrics],
        divergence_summary=divergence_line(p),
        first_divergence=histogram(
            f"First divergent token: position in the sequence ({divergent} items)",
            p.first_divergence,
            period,
        ),
        offsets=histogram(
            "First divergent token: tokens from the nearest shard boundary",
            p.divergence_offsets,
            centre=True,
        ),
        by_residue=bin_plot(
            f"Mean KL by position modulo the shard period ({period})", p.by_residue, overall
        ),
        by_band=bin_plot(_band_title(p.by_band), p.by_band, overall),
        floor=None if p.excess is None else excess_sentence(p.excess),
        tail=None if p.tail is None else tail_sentence(p.tail),
        parting=parting_sentence(p.parting),
        boundary=None if p.boundary is None else boundary_sentence(p.boundary),
        level=f"{kl.level:.0%}" if kl is not None else "95%",
    )


def _band_title(bins: tuple[Bin, ...]) -> str:
    width = bins[0].high - bins[0].low + 1 if len(bins) > 1 else 0
    return f"Mean KL by position ({width}-token bands)" if width > 1 else "Mean KL by position"


@dataclass(frozen=True)
class TokenView:
    """The section: the overall token verdict, each compared path, each path not compared."""

    verdict: str
    period: int | None
    paths: list[PathView]
    unavailable: list[tuple[str, str]]


def token_view(t: TokenComparison) -> TokenView:
    return TokenView(
        verdict=t.verdict,
        period=t.period,
        paths=[path_view(t.paths[name], t.period) for name in PATHS if name in t.paths],
        unavailable=sorted(t.unavailable.items()),
    )
