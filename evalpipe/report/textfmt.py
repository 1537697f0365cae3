"""Number and text formats of the terminal reports: one escaped line of untrusted text,
points, shares and p-values (divergences: :func:`evalpipe.compare.tokenview.nats`). Pure.

Model outputs and item ids are untrusted: control characters (terminal escape sequences)
are shown escaped, never written raw.
"""

from __future__ import annotations

import math


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
