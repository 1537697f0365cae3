"""Plain-text rendering of a :class:`~evalpipe.compare.core.Comparison` for the terminal.

Model outputs are untrusted: control characters (terminal escape sequences) are shown
escaped, never written raw (:func:`evalpipe.report.textfmt.safe`). The token-level section is
:mod:`evalpipe.report.tokens.text`.
"""

from __future__ import annotations

import statistics

from evalpipe.compare.core import DIRECTIONS, Comparison
from evalpipe.report.textfmt import pts, safe
from evalpipe.report.tokens.text import format_tokens

__all__ = ["SYMBOL", "format_boundaries", "format_comparison", "pts", "safe"]

SYMBOL = {"ok": "✓ OK", "drift": "✗ DRIFT", "inconclusive": "? INCONCLUSIVE"}
_FLIP_LABELS = {"correct_to_wrong": "right→wrong", "wrong_to_correct": "wrong→right"}
_SHARD_SOURCES = {
    "layout": "the run's dcp x interleave",
    "given": "--shard-period",
    "fault": "the period of the run's canary fault",
}


def format_comparison(c: Comparison, max_flips: int = 5) -> str:
    """The comparison as the terminal shows it: table, figures, flips, breakdowns, verdict,
    then the token-level section when the comparison has one (nothing at all without)."""
    tokens = [] if c.tokens is None else format_tokens(c.tokens, SYMBOL[c.verdict])
    return "\n".join([*_figures(c), *_flips(c, max_flips), *_breakdowns(c), *_verdict(c), *tokens])


def _figures(c: Comparison) -> list[str]:
    r, run, base = c.result, c.run.config, c.baseline.config
    noise = c.noise
    return [
        f"{safe(run.layout_name)} (run {safe(c.run.run_id)}) vs {safe(base.layout_name)} (baseline "
        f"{safe(c.baseline.run_id)}): {safe(run.task)} v{safe(run.task_version)}, n={r.n} "
        f"(excluded {c.n_excluded})",
        "                 baseline right  baseline wrong",
        f"  run right      {r.both_correct:>14}  {r.only_run:>14}",
        f"  run wrong      {r.only_baseline:>14}  {r.both_wrong:>14}",
        f"accuracy {r.run_accuracy:.2%} vs {r.baseline_accuracy:.2%}: delta "
        f"{pts(r.delta)} pts, {1 - r.alpha:.0%} CI [{pts(r.ci_low)}, "
        f"{pts(r.ci_high)}]; exact McNemar p={r.p_value:.3g}",
        f"non-inferiority (margin {pts(r.margin, False)} pts) p={r.noninferiority_p:.3g}; "
        f"MDE {pts(r.mde, False)} pts; noise floor "
        + (
            f"{noise.floor:.2%} ({noise.repeats} repeats)"
            if noise.floor is not None
            else "unknown (run the baseline with --repeat 2 to measure it)"
        ),
        f"unpaired reference CI [{pts(r.unpaired_ci_low)}, {pts(r.unpaired_ci_high)}] "
        f"pts, p={r.unpaired_p:.3g}",
    ]


def _flips(c: Comparison, max_flips: int) -> list[str]:
    lines = []
    if c.agreement is not None:
        fd = c.first_difference_chars
        where = (
            f"; first difference at char median {statistics.median(fd)}, min {min(fd)}"
            if fd
            else ""
        )
        lines.append(f"identical outputs {c.agreement:.1%}{where}")
    for direction in DIRECTIONS:
        ids = c.flips[direction]
        label = _FLIP_LABELS[direction]
        shown = ", ".join(safe(i, 40) for i in ids[:20]) + (" …" if len(ids) > 20 else "")
        lines.append(f"flips {label} ({len(ids)}): {shown or '-'}")
    examples = [e for e in c.flip_examples if e.direction == "correct_to_wrong"]
    for e in examples[:max_flips]:
        lines.append(f"  item {safe(e.item_id, 40)} (target {safe(str(e.target), 40)}):")
        lines.append(f"    run:      {safe(e.run_output)}")
        lines.append(f"    baseline: {safe(e.baseline_output)}")
    return lines


def _breakdowns(c: Comparison) -> list[str]:
    lines = []
    buckets = [b for b in c.buckets if b.n]
    if buckets:
        parts = [
            f"[{b.low},{b.high if b.high is not None else '∞'}) n={b.n} "
            f"−{b.only_baseline}/+{b.only_run}"
            for b in buckets
        ]
        lines.append("by prompt tokens: " + "; ".join(parts))
    lines += format_boundaries(c)
    if len(c.per_verdict) > 1:
        lines.append(
            "accuracy by verdict: "
            + "; ".join(f"{safe(k, 40)} {a:.1%} vs {b:.1%}" for k, (a, b) in c.per_verdict.items())
        )
    return lines


def _verdict(c: Comparison) -> list[str]:
    return [
        *(f"warning: {safe(w, None)}" for w in c.warnings),
        f"verdict: {SYMBOL[c.verdict]} — {c.result.reason}",
    ]


def format_boundaries(c: Comparison) -> list[str]:
    """The shard-boundary table of a comparison: one line per length (or distance) group."""
    if not c.boundaries:
        return []
    source = _SHARD_SOURCES.get(c.shard.source or "", "?")
    lines = [
        f"by position vs shard boundaries (period {c.shard.period} tokens, {source}):",
        "  group            tokens        n   run   base  delta pts  −/+",
    ]
    for g in c.boundaries:
        span = (
            str(g.tokens_low)
            if g.tokens_low == g.tokens_high
            else f"{g.tokens_low}-{g.tokens_high}"
        )
        lines.append(
            f"  {g.label:<16} {span:<12} {g.n:>3} {g.run_correct / g.n:>5.0%} "
            f"{g.baseline_correct / g.n:>5.0%} {pts(g.delta):>10}  "
            f"−{g.only_baseline}/+{g.only_run}"
        )
    return lines
