"""Render the pull-request comment: one Markdown summary of the comparisons. Pure.

Comparisons come in as typed :class:`~evalpipe.compare.core.Comparison` records (the template
reads their fields and :class:`~evalpipe.compare.core.Flip` s directly) and leave as Markdown
for :mod:`evalpipe.github` to post. Model outputs and targets are untrusted: a model can write
``@org/team``, ``</details>``, ``$x$`` (GitHub math) or our own sticky marker. So escaping is
not left to the template author: the jinja2 environment's ``finalize`` hook Markdown-escapes
every ``{{ … }}`` unless a filter here marked its result :class:`Trusted`, and a forgotten
filter shows backslashes instead of pinging someone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from evalpipe import __version__
from evalpipe.compare.core import Comparison, Flip
from evalpipe.compare.tokens.types import MetricSummary, PathComparison, TokenComparison
from evalpipe.compare.tokens.view import interval, nats
from evalpipe.errors import EvalpipeError
from evalpipe.github import marker
from evalpipe.report.markdown import (
    GATE_LABELS,
    VERDICT_LABELS,
    Trusted,
    delta_ci,
    direction_label,
    finalize,
    gate_label,
    html_text,
    md_escape,
    p_value,
    percent,
    pts,
    verdict_label,
)
from evalpipe.report.templates import template_dirs

TOKEN_LABELS = {"token-drift": "❌ token-drift", "ok": "✅ ok", "inconclusive": "⚠️ inconclusive"}
TEMPLATE_NAME = "comment.md.jinja"
MAX_BODY_CHARS = 65536
"""GitHub refuses longer comment bodies (422), so flip examples are dropped to fit."""

# --- filters and the gate outcome ---------------------------------------------------------


def answers(extracted: Mapping[str, str | None]) -> str | None:
    """The extracted answer; with several extractors each by name (which is primary is
    not in the comparison, so none is picked)."""
    if not extracted:
        return None
    if len(extracted) == 1:
        return str(next(iter(extracted.values())))
    return " · ".join(f"{k} {v}" for k, v in extracted.items())


def window_start(flip: Flip, lead: int) -> int:
    """Where both excerpts of ``flip`` start: ``lead`` characters before the outputs diverge."""
    return max((flip.first_difference or 0) - lead, 0)


def token_label(tokens: TokenComparison | None) -> Trusted:
    """The token-level verdict; ``—`` when the comparison had no token traces."""
    return Trusted("—" if tokens is None else TOKEN_LABELS[tokens.verdict])


def kl_ci(s: MetricSummary) -> Trusted:
    """``1.23e-03 [1.01e-03, 1.46e-03] (95%)``: a mean KL with its interval, in nats."""
    return Trusted(f"{nats(s.mean)} {interval(s.ci_low, s.ci_high, s.level)}")


def floor_kl(p: PathComparison) -> Trusted:
    """The baseline-repeat floor's mean KL on this path (``—``: no floor)."""
    if p.excess is not None and p.excess.floor_mean is not None:
        return Trusted(nats(p.excess.floor_mean))
    return Trusted("—")


def decode_kl(tokens: TokenComparison | None) -> Trusted:
    """The decode path's mean KL [CI] vs the floor's, for the table (``—`` without one)."""
    p = None if tokens is None else tokens.paths.get("decode")
    if p is None or "kl" not in p.metrics:
        return Trusted("—")
    return Trusted(f"{kl_ci(p.metrics['kl'])} vs {floor_kl(p)}")


@dataclass(frozen=True)
class GateOutcome:
    """The gate's decision for the whole change, shown above the table when given."""

    status: str  # "pass" | "fail" | "incomplete"
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in GATE_LABELS:
            raise EvalpipeError(
                f"gate status {self.status!r} is not one of {', '.join(GATE_LABELS)}"
            )


# --- rendering ----------------------------------------------------------------------------


def _environment() -> SandboxedEnvironment:
    dirs = template_dirs(TEMPLATE_NAME)
    if not dirs:
        raise EvalpipeError(f"{TEMPLATE_NAME} not found; reinstall evalpipe")
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(dirs[0]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML: finalize does the escaping
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        md_escape=md_escape,
        html_text=html_text,
        delta_ci=delta_ci,
        pts=pts,
        percent=percent,
        p_value=p_value,
        verdict_label=verdict_label,
        gate_label=gate_label,
        direction_label=direction_label,
        answers=answers,
        window_start=window_start,
        token_label=token_label,
        token_verdict_word=lambda v: Trusted(TOKEN_LABELS[v]),
        decode_kl=decode_kl,
        kl_ci=kl_ci,
        floor_kl=floor_kl,
        nats=lambda v: Trusted(nats(v)),
    )
    return env


def _dashboard_link(url: str | None) -> Trusted | None:
    if url is None:
        return None
    if not re.fullmatch(r"https?://[^\s<>()\"'`]+", url):
        raise EvalpipeError(
            f"--dashboard-url must be an http(s) URL without spaces, quotes or brackets: {url!r}"
        )
    return Trusted(url)


def _engine_lines(rows: Sequence[Comparison]) -> list[tuple[str | None, str]]:
    """Engine versions once if all comparisons share them, else one line per comparison."""
    lines: list[tuple[str | None, str]] = []
    for c in rows:
        run = c.run.config
        versions = sorted((str(k), str(v)) for k, v in run.engine_versions.items())
        text = " · ".join(f"{k} {v}" for k, v in versions)
        if text and all(t != text for _, t in lines):
            lines.append(
                (f"{run.layout_name} vs {c.baseline.config.layout_name} ({run.task})", text)
            )
    if len(lines) == 1:
        return [(None, lines[0][1])]
    return lines


def _ci_level(rows: Sequence[Comparison]) -> str | None:
    alphas = {c.result.alpha for c in rows}
    if len(alphas) == 1:
        return f"{(1 - alphas.pop()) * 100:g}%"
    return None


def render_comment(
    comparisons: Sequence[Comparison],
    dashboard_url: str | None = None,
    gate: GateOutcome | None = None,
    max_flips: int = 5,
    excerpt_chars: int = 160,
    marker_key: str | None = None,
) -> str:
    """The comment body: marker, gate, one table row per comparison, top flips, marker.

    Shows at most ``max_flips`` examples per comparison, each output cut to
    ``excerpt_chars`` characters around where run and baseline first differ; examples are
    dropped further if the body would exceed GitHub's limit.
    """
    if excerpt_chars < 16:
        raise EvalpipeError("excerpt_chars must be at least 16")
    rows = list(comparisons)
    if not rows:
        raise EvalpipeError("no comparisons to comment on: run `evalpipe compare` first")
    for c in rows:
        if c.verdict not in VERDICT_LABELS:
            raise EvalpipeError(
                f"comparison {c.run.run_id} has verdict {c.verdict!r}; expected one of "
                f"{', '.join(VERDICT_LABELS)}"
            )
    template = _environment().get_template(TEMPLATE_NAME)
    counts = {v: sum(c.verdict == v for c in rows) for v in VERDICT_LABELS}
    context = {
        "marker": Trusted(marker(marker_key)),
        "gate": gate,
        "comparisons": rows,
        "counts": {v: n for v, n in counts.items() if n},
        "dashboard_url": _dashboard_link(dashboard_url),
        "engine_lines": _engine_lines(rows),
        "ci_level": _ci_level(rows),
        "with_tokens": any(c.tokens is not None for c in rows),
        "token_drift": [c for c in rows if c.tokens and c.tokens.verdict == "token-drift"],
        "excerpt_chars": excerpt_chars,
        "version": __version__,
    }
    for flips in range(max(max_flips, 0), -1, -1):
        body = template.render(context, max_flips=flips, lead=excerpt_chars // 4)
        if len(body) <= MAX_BODY_CHARS:
            return body
    raise EvalpipeError(
        f"the comment would be {len(body)} characters even without flip examples; GitHub "
        f"allows {MAX_BODY_CHARS}: comment on fewer comparisons at once"
    )
