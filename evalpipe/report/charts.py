"""Trend charts as inline SVG geometry: numbers in, coordinates out. Pure.

The dashboard must open offline from a file, so there is no chart library to fetch; the
templates draw these shapes with ``<polyline>``/``<polygon>``. Only numbers and our own labels
end up here, never model text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 560, 160
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 10, 22


@dataclass(frozen=True)
class Line:
    """A polyline (``points`` in SVG syntax) with its legend label and CSS class."""

    label: str
    css: str
    points: str
    dots: tuple[tuple[float, float, str], ...]  # x, y, tooltip


@dataclass(frozen=True)
class Chart:
    """One chart: lines, shaded bands (polygons), horizontal rules, axis ticks."""

    title: str
    lines: tuple[Line, ...]
    bands: tuple[tuple[str, str], ...]  # (css class, polygon points)
    rules: tuple[tuple[float, str, str], ...]  # (y, css class, label)
    y_ticks: tuple[tuple[float, str], ...]
    x_ticks: tuple[tuple[float, str], ...]
    width: int = WIDTH
    height: int = HEIGHT


Values = Sequence[float | None]


class _Scale:
    def __init__(self, n: int, lo: float, hi: float) -> None:
        if hi - lo < 1e-9:
            lo, hi = lo - 0.01, hi + 0.01
        pad = (hi - lo) * 0.08
        self.lo, self.hi, self.n = lo - pad, hi + pad, n

    def x(self, i: int) -> float:
        span = WIDTH - PAD_LEFT - PAD_RIGHT
        return round(PAD_LEFT + (span * (i + 0.5) / self.n), 1)

    def y(self, v: float) -> float:
        span = HEIGHT - PAD_TOP - PAD_BOTTOM
        return round(PAD_TOP + span * (self.hi - v) / (self.hi - self.lo), 1)


def _finite(*series: Values) -> list[float]:
    return [v for s in series for v in s if v is not None]


def _line(scale: _Scale, label: str, css: str, values: Values, tips: Sequence[str]) -> Line:
    pts = [(scale.x(i), scale.y(v), tips[i]) for i, v in enumerate(values) if v is not None]
    return Line(label, css, " ".join(f"{x},{y}" for x, y, _ in pts), tuple(pts))


def _band(scale: _Scale, low: Values, high: Values) -> str:
    idx = [i for i in range(len(low)) if low[i] is not None and high[i] is not None]
    upper = [f"{scale.x(i)},{scale.y(high[i])}" for i in idx]  # type: ignore[arg-type]
    lower = [f"{scale.x(i)},{scale.y(low[i])}" for i in reversed(idx)]  # type: ignore[arg-type]
    return " ".join(upper + lower)


def _y_ticks(scale: _Scale, fmt: str) -> tuple[tuple[float, str], ...]:
    steps = 4
    ticks = []
    for k in range(steps + 1):
        v = scale.lo + (scale.hi - scale.lo) * k / steps
        ticks.append((scale.y(v), fmt.format(v * 100)))
    return tuple(ticks)


def _x_ticks(scale: _Scale, labels: Sequence[str]) -> tuple[tuple[float, str], ...]:
    # At most ~6 labels so they do not overlap; always the first and the last run.
    every = max(1, len(labels) // 6)
    keep = {*range(0, len(labels), every), len(labels) - 1}
    return tuple((scale.x(i), labels[i]) for i in sorted(keep))


def accuracy_chart(labels: Sequence[str], run: Values, baseline: Values) -> Chart:
    """Accuracy of the layout's runs, and of the baseline each was paired with."""
    scale = _Scale(len(labels), min(_finite(run, baseline)), max(_finite(run, baseline)))
    tips = [f"{labels[i]}: {v * 100:.1f}%" if v is not None else "" for i, v in enumerate(run)]
    btips = [
        f"{labels[i]}: baseline {v * 100:.1f}%" if v is not None else ""
        for i, v in enumerate(baseline)
    ]
    lines = [_line(scale, "accuracy", "acc", run, tips)]
    if _finite(baseline):
        lines.append(_line(scale, "baseline accuracy", "base", baseline, btips))
    return Chart(
        title="Accuracy",
        lines=tuple(lines),
        bands=(),
        rules=(),
        y_ticks=_y_ticks(scale, "{:.1f}%"),
        x_ticks=_x_ticks(scale, labels),
    )


def delta_chart(
    labels: Sequence[str],
    delta: Values,
    low: Values,
    high: Values,
    margin: float,
    noise: Values,
) -> Chart:
    """Paired delta with its CI band, zero, the −margin line and the noise floor as ±band."""
    floor = _finite(noise)
    top = max(_finite(high, [0.0], [f / 2 for f in floor]))
    bottom = min(_finite(low, [-margin * 1.2], [-f / 2 for f in floor]))
    scale = _Scale(len(labels), bottom, top)
    tips = [
        f"{labels[i]}: Δ {v * 100:+.2f} pts "
        f"[{(low[i] or 0) * 100:+.2f}, {(high[i] or 0) * 100:+.2f}]"
        if v is not None
        else ""
        for i, v in enumerate(delta)
    ]
    bands = [("ci", _band(scale, low, high))]
    if floor:
        # Half the baseline-repeat discordance either side of zero: how far two repeats of the
        # same configuration already move a delta by noise alone (each flip is half a point).
        half_lo = [None if f is None else -f / 2 for f in noise]
        half_hi = [None if f is None else f / 2 for f in noise]
        bands.insert(0, ("noise", _band(scale, half_lo, half_hi)))
    return Chart(
        title="Δ vs baseline (points, CI band)",
        lines=(_line(scale, "Δ", "delta", delta, tips),),
        bands=tuple(bands),
        rules=((scale.y(0.0), "zero", "0"), (scale.y(-margin), "margin", f"−{margin * 100:g}")),
        y_ticks=_y_ticks(scale, "{:+.1f}"),
        x_ticks=_x_ticks(scale, labels),
    )
