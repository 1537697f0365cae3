"""Render the pull-request comment: one Markdown summary of the comparisons. Pure.

Comparisons come in as the dicts ``evalpipe compare --json`` prints (extra keys are ignored)
and leave as Markdown for :mod:`evalpipe.github` to post. Model outputs and targets are
untrusted: a model can write ``@org/team``, ``</details>``, ``$x$`` (GitHub math) or our own
sticky marker. So escaping is not left to the template author: the jinja2 environment's
``finalize`` hook Markdown-escapes every ``{{ … }}`` unless a filter here marked its result
:class:`Trusted`, and a forgotten filter shows backslashes instead of pinging someone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from evalpipe import __version__
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

TEMPLATE_NAME = "comment.md.jinja"
MAX_BODY_CHARS = 65536
"""GitHub refuses longer comment bodies (422), so flip examples are dropped to fit."""

REQUIRED_KEYS = (
    "run_id", "baseline_run_id", "model", "task", "layout", "baseline_layout", "n",
    "both_correct", "only_run", "only_baseline", "both_wrong", "run_accuracy",
    "baseline_accuracy", "delta", "ci_low", "ci_high", "p_value", "mde", "agreement",
    "excluded", "verdict", "flips",
)  # fmt: skip

# --- input shapes -------------------------------------------------------------------------


@dataclass(frozen=True)
class FlipExample:
    """One item answered correctly by one side only, with both outputs."""

    item_id: str
    direction: str
    run_output: str
    baseline_output: str
    target: str | None = None
    run_answer: str | None = None
    baseline_answer: str | None = None
    first_difference: int | None = None

    def window_start(self, lead: int) -> int:
        """Where both excerpts start: ``lead`` characters before the outputs diverge."""
        return max((self.first_difference or 0) - lead, 0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlipExample:
        return cls(
            item_id=str(data.get("item_id", "?")),
            direction=str(data.get("direction", "?")),
            run_output=str(data.get("run_output") or ""),
            baseline_output=str(data.get("baseline_output") or ""),
            target=None if data.get("target") is None else str(data["target"]),
            run_answer=_answers(data.get("run_extracted")),
            baseline_answer=_answers(data.get("baseline_extracted")),
            first_difference=data.get("first_difference"),
        )


def _answers(extracted: object) -> str | None:
    """The extracted answer; with several extractors each by name (which is primary is
    not in the comparison, so none is picked)."""
    if not isinstance(extracted, Mapping) or not extracted:
        return None
    if len(extracted) == 1:
        return str(next(iter(extracted.values())))
    return " · ".join(f"{k} {v}" for k, v in extracted.items())


@dataclass(frozen=True)
class CommentComparison:
    """What the comment shows of one run-vs-baseline comparison (fractions, not points)."""

    run_id: str
    baseline_run_id: str
    model: str
    task: str
    layout: str
    baseline_layout: str
    n: int
    both_correct: int
    only_run: int
    only_baseline: int
    both_wrong: int
    run_accuracy: float
    baseline_accuracy: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float | None
    mde: float | None
    agreement: float | None
    excluded: int
    verdict: str
    correct_to_wrong: tuple[str, ...]
    wrong_to_correct: tuple[str, ...]
    flip_examples: tuple[FlipExample, ...] = ()
    engine_versions: Mapping[str, str] = field(default_factory=dict)
    noise_floor: float | None = None
    margin: float | None = None
    alpha: float | None = None
    reason: str | None = None

    @property
    def n_flips(self) -> int:
        return len(self.correct_to_wrong) + len(self.wrong_to_correct)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommentComparison:
        """Build from a ``compare --json`` dict; a missing key or unknown verdict is an error."""
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise EvalpipeError(
                f"comparison {data.get('run_id', '?')} lacks {', '.join(missing)}: pass the "
                "comparisons exactly as `evalpipe compare --json` prints them"
            )
        if data["verdict"] not in VERDICT_LABELS:
            raise EvalpipeError(
                f"comparison {data['run_id']} has verdict {data['verdict']!r}; expected one of "
                f"{', '.join(VERDICT_LABELS)}"
            )
        flips = data["flips"] or {}
        return cls(
            **{k: data[k] for k in REQUIRED_KEYS if k != "flips"},
            correct_to_wrong=tuple(str(i) for i in flips.get("correct_to_wrong", ())),
            wrong_to_correct=tuple(str(i) for i in flips.get("wrong_to_correct", ())),
            flip_examples=tuple(FlipExample.from_dict(x) for x in data.get("flip_examples") or ()),
            engine_versions={
                str(k): str(v) for k, v in (data.get("engine_versions") or {}).items()
            },
            noise_floor=data.get("noise_floor"),
            margin=data.get("margin"),
            alpha=data.get("alpha"),
            reason=data.get("reason"),
        )


@dataclass(frozen=True)
class GateOutcome:
    """The gate's decision for the whole change, shown above the table when given."""

    status: str  # "pass" | "fail" | "incomplete"
    reasons: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateOutcome:
        status = data.get("status", data.get("outcome"))
        if status not in GATE_LABELS:
            raise EvalpipeError(f"gate status {status!r} is not one of {', '.join(GATE_LABELS)}")
        return cls(status=str(status), reasons=tuple(str(r) for r in data.get("reasons") or ()))


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


def _engine_lines(rows: Sequence[CommentComparison]) -> list[tuple[str | None, str]]:
    """Engine versions once if all comparisons share them, else one line per comparison."""
    lines: list[tuple[str | None, str]] = []
    for c in rows:
        text = " · ".join(f"{k} {v}" for k, v in sorted(c.engine_versions.items()))
        if text and all(t != text for _, t in lines):
            lines.append((f"{c.layout} vs {c.baseline_layout} ({c.task})", text))
    if len(lines) == 1:
        return [(None, lines[0][1])]
    return lines


def _ci_level(rows: Sequence[CommentComparison]) -> str | None:
    alphas = {c.alpha for c in rows}
    if len(alphas) == 1 and (alpha := alphas.pop()) is not None:
        return f"{(1 - alpha) * 100:g}%"
    return None


def render_comment(
    comparisons: Sequence[Mapping[str, Any] | CommentComparison],
    dashboard_url: str | None = None,
    gate: Mapping[str, Any] | GateOutcome | None = None,
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
    rows = [
        c if isinstance(c, CommentComparison) else CommentComparison.from_dict(c)
        for c in comparisons
    ]
    if not rows:
        raise EvalpipeError("no comparisons to comment on: run `evalpipe compare` first")
    gate_outcome = (
        gate if isinstance(gate, GateOutcome) or gate is None else GateOutcome.from_dict(gate)
    )
    template = _environment().get_template(TEMPLATE_NAME)
    counts = {v: sum(c.verdict == v for c in rows) for v in VERDICT_LABELS}
    context = {
        "marker": Trusted(marker(marker_key)),
        "gate": gate_outcome,
        "comparisons": rows,
        "counts": {v: n for v, n in counts.items() if n},
        "dashboard_url": _dashboard_link(dashboard_url),
        "engine_lines": _engine_lines(rows),
        "ci_level": _ci_level(rows),
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
