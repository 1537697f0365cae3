"""Markdown for GitHub, safe with untrusted text: escaping, labels and number formats.

Model outputs and targets are untrusted: a model can write ``@org/team``, ``</details>``,
``$x$`` (GitHub math) or our own sticky marker. Everything rendered here is :class:`Trusted`;
anything else that reaches a template is escaped by :func:`md_escape`. Pure.
"""

from __future__ import annotations

import html
import math
import re

VERDICT_LABELS = {"ok": "✅ ok", "drift": "❌ drift", "inconclusive": "⚠️ inconclusive"}
GATE_LABELS = {"pass": "✅ pass", "fail": "❌ fail", "incomplete": "⚠️ incomplete"}
DIRECTIONS = {"correct_to_wrong": "✓→✗", "wrong_to_correct": "✗→✓"}
_MINUS = "\u2212"
# Invisible, and breaks GitHub's @mention / #ref / autolink patterns, which all need the
# characters to touch (Dependabot and Renovate neutralise mentions the same way).
_ZWSP = "\u200b"
# C0 controls and the bidi overrides ("Trojan source"): nothing a reviewer should see.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"\s+")
# Markdown punctuation that can start emphasis, code, links, strikethrough, table cells,
# headings or math ($…$ is LaTeX on GitHub, and GSM8K answers are full of dollars).
_MD_PUNCT = re.compile(r"([\\`*_\[\]|~$#])")
_ISSUE_REF = re.compile(r"(\\?#|(?i:\bgh-))(?=\d)")
_AUTOLINK = re.compile(r"(?i)\b(?:https?|ftp|mailto):|\bwww\.")


class Trusted(str):
    """Markdown made by this module (escaped text, formatted numbers): emitted as is."""


def _clean(text: object, limit: int | None, start: int = 0) -> str:
    """One line of visible text, cut to ``limit`` characters with an ellipsis."""
    raw = "" if text is None else str(text)
    prefix = ""
    if start > 0:
        raw, prefix = raw[start:], "…"
    s = _SPACES.sub(" ", _INVISIBLE.sub("", raw)).strip()
    if limit is not None and len(prefix) + len(s) > limit:
        s = s[: max(limit - len(prefix) - 1, 0)].rstrip() + "…"
    return prefix + s


def _defuse(s: str) -> str:
    """Break mentions, issue references and autolinks without changing what is read."""
    s = s.replace("@", "@" + _ZWSP)
    s = _ISSUE_REF.sub(lambda m: m.group(1) + _ZWSP, s)
    return _AUTOLINK.sub(lambda m: m.group(0)[:-1] + _ZWSP + m.group(0)[-1], s)


def md_escape(text: object, limit: int | None = None, start: int = 0) -> Trusted:
    """``text`` as inert inline Markdown: one line, safe in a table cell, at most ``limit``.

    HTML becomes entities (so ``<!--`` cannot fake or end our marker, ``</details>`` cannot
    close a block), Markdown punctuation is backslash-escaped, and ``@user``, ``#123``,
    ``GH-1`` and URLs get a zero-width space so GitHub neither notifies nor links.
    ``start`` > 0 shows the text from that character on, after an ellipsis.
    """
    s = html.escape(_clean(text, limit, start), quote=False)
    return Trusted(_defuse(_MD_PUNCT.sub(r"\\\1", s)))


def html_text(text: object, limit: int | None = None) -> Trusted:
    """``text`` for an HTML context (``<summary>``), where backslash escapes would show."""
    return Trusted(_defuse(html.escape(_clean(text, limit))))


def finalize(value: object) -> object:
    # Every {{ }} passes through here: untrusted unless a filter vouched for it.
    return value if isinstance(value, Trusted) else md_escape(value)


# --- numbers ------------------------------------------------------------------------------


def signed_pts(fraction: float) -> str:
    """A difference in percentage points with a real minus sign: ``−1.2``, ``+0.4``, ``0.0``."""
    v = round(fraction * 100, 1)
    if v == 0:
        return "0.0"
    return f"+{v:.1f}" if v > 0 else f"{_MINUS}{-v:.1f}"


def delta_ci(delta: float, low: float, high: float) -> Trusted:
    """``−1.2 pts [−2.0, −0.4]``."""
    return Trusted(f"{signed_pts(delta)} pts [{signed_pts(low)}, {signed_pts(high)}]")


def pts(fraction: float | None) -> Trusted:
    """An unsigned size in points (MDE, margin); ``—`` when there is none (an infinite MDE:
    nothing this many items could detect)."""
    if fraction is None or not math.isfinite(fraction):
        return Trusted("—")
    return Trusted(f"{fraction * 100:.1f} pts")


def percent(fraction: float | None) -> Trusted:
    return Trusted("—" if fraction is None else f"{fraction * 100:.1f}%")


def p_value(p: float | None) -> Trusted:
    if p is None:
        return Trusted("—")
    return Trusted("<0.001" if p < 0.001 else f"{p:.3f}")


def verdict_label(verdict: str) -> Trusted:
    """Symbol and word, so the verdict does not rely on colour (or emoji) alone."""
    return Trusted(VERDICT_LABELS[verdict])


def gate_label(status: str) -> Trusted:
    return Trusted(GATE_LABELS[status])


def direction_label(direction: str) -> Trusted:
    return Trusted(DIRECTIONS.get(direction, "?"))
