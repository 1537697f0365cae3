"""Plain-text rendering of a comparison for the terminal; works on ``Comparison.to_dict()``.

Model outputs are untrusted: control characters (terminal escape sequences) are shown
escaped, never written raw.
"""

from __future__ import annotations

from typing import Any

SYMBOL = {"ok": "✓ OK", "drift": "✗ DRIFT", "inconclusive": "? INCONCLUSIVE"}


def safe(text: str, limit: int = 160) -> str:
    """One line, control characters escaped, cut to ``limit`` characters."""
    out = []
    for ch in text[:limit]:
        if ch == "\n":
            out.append("⏎")
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if len(text) > limit else "")


def pts(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def format_comparison(c: dict[str, Any], max_flips: int = 5) -> str:
    lines = [
        f"{c['layout']} (run {c['run_id']}) vs {c['baseline_layout']} (baseline "
        f"{c['baseline_run_id']}): {c['task']} v{c['task_version']}, n={c['n']} "
        f"(excluded {c['excluded']})",
        "                 baseline right  baseline wrong",
        f"  run right      {c['both_correct']:>14}  {c['only_run']:>14}",
        f"  run wrong      {c['only_baseline']:>14}  {c['both_wrong']:>14}",
        f"accuracy {c['run_accuracy']:.2%} vs {c['baseline_accuracy']:.2%}: delta "
        f"{pts(c['delta'])} pts, {1 - c['alpha']:.0%} CI [{pts(c['ci_low'])}, "
        f"{pts(c['ci_high'])}]; exact McNemar p={c['p_value']:.3g}",
        f"non-inferiority (margin {pts(c['margin'], False)} pts) p={c['noninferiority_p']:.3g}; "
        f"MDE {pts(c['mde'], False)} pts; noise floor "
        + (
            f"{c['noise_floor']:.2%} ({c['noise_repeats']} repeats)"
            if c["noise_floor"] is not None
            else "unknown (run the baseline with --repeat 2 to measure it)"
        ),
        f"unpaired reference CI [{pts(c['unpaired_ci_low'])}, {pts(c['unpaired_ci_high'])}] "
        f"pts, p={c['unpaired_p']:.3g}",
    ]
    if c["agreement"] is not None:
        fd = c["first_difference_chars"]
        where = (
            f"; first difference at char median {fd['median']}, min {fd['min']}" if fd["n"] else ""
        )
        lines.append(f"identical outputs {c['agreement']:.1%}{where}")
    for direction, label in (
        ("correct_to_wrong", "right→wrong"),
        ("wrong_to_correct", "wrong→right"),
    ):
        ids = c["flips"][direction]
        shown = ", ".join(ids[:20]) + (" …" if len(ids) > 20 else "")
        lines.append(f"flips {label} ({len(ids)}): {shown or '-'}")
    examples = [e for e in c["flip_examples"] if e["direction"] == "correct_to_wrong"]
    for e in examples[:max_flips]:
        lines.append(f"  item {e['item_id']} (target {safe(str(e['target']), 40)}):")
        lines.append(f"    run:      {safe(e['run_output'])}")
        lines.append(f"    baseline: {safe(e['baseline_output'])}")
    buckets = [b for b in c["length_buckets"] if b["n"]]
    if buckets:
        parts = [
            f"[{b['low']},{b['high'] if b['high'] is not None else '∞'}) n={b['n']} "
            f"−{b['only_baseline']}/+{b['only_run']}"
            for b in buckets
        ]
        lines.append("by prompt tokens: " + "; ".join(parts))
    lines += format_boundaries(c)
    per = c.get("accuracy_by_verdict", {})
    if len(per) > 1:
        lines.append(
            "accuracy by verdict: "
            + "; ".join(f"{k} {v['run']:.1%} vs {v['baseline']:.1%}" for k, v in per.items())
        )
    lines += [f"warning: {w}" for w in c["warnings"]]
    lines.append(f"verdict: {SYMBOL[c['verdict']]} — {c['reason']}")
    return "\n".join(lines)


def format_boundaries(c: dict[str, Any]) -> list[str]:
    """The shard-boundary table of a comparison: one line per length (or distance) group."""
    groups = c.get("shard_boundaries") or []
    if not groups:
        return []
    source = {"layout": "the run's dcp x interleave", "given": "--shard-period"}.get(
        c.get("shard_period_source") or "", "?"
    )
    lines = [
        f"by position vs shard boundaries (period {c['shard_period']} tokens, {source}):",
        "  group            tokens        n   run   base  delta pts  −/+",
    ]
    for g in groups:
        span = (
            str(g["tokens_low"])
            if g["tokens_low"] == g["tokens_high"]
            else f"{g['tokens_low']}-{g['tokens_high']}"
        )
        lines.append(
            f"  {g['label']:<16} {span:<12} {g['n']:>3} {g['run_correct'] / g['n']:>5.0%} "
            f"{g['baseline_correct'] / g['n']:>5.0%} {pts(g['delta']):>10}  "
            f"−{g['only_baseline']}/+{g['only_run']}"
        )
    return lines
