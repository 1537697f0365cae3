"""Number and text formats of the terminal reports: one escaped line of untrusted text,
points, shares and p-values (divergences: :func:`evalpipe.compare.tokens.view.nats`). Pure.

Model outputs, item ids and anything an imported file names (model, task, layout) are
untrusted: control characters (terminal escape sequences, bidi overrides) are shown escaped,
never written raw.
"""

from __future__ import annotations

import math

# Characters a terminal acts on instead of showing: C0 controls (ESC starts a sequence that
# can recolour, clear or retitle the terminal, BEL rings), DEL, C1 controls (0x9B is a
# one-byte CSI) and the Unicode bidi overrides and isolates, which reorder what is displayed.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _control(ch: str) -> bool:
    code = ord(ch)
    return code < 32 or 0x7F <= code < 0xA0 or ch in _BIDI


def safe(text: str, limit: int | None = 160) -> str:
    """One line, control characters escaped (``\\x1b``, ``\\u202e``), cut to ``limit``
    characters (``None``: whole)."""
    cut = text if limit is None else text[:limit]
    out = []
    for ch in cut:
        if ch == "\n":
            out.append("⏎")
        elif _control(ch):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if len(cut) < len(text) else "")


def pts(x: float | None, signed: bool = True) -> str:
    """A fraction in points; ``n/a`` for none (or an infinite MDE: nothing detectable)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def share(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, ``12.5%``; ``n/a`` for none."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.{digits}f}%"


def p_text(p: float | None) -> str:
    """A p-value to 3 significant digits; ``n/a`` for none (a degenerate test)."""
    return "n/a" if p is None or not math.isfinite(p) else f"{p:.3g}"
