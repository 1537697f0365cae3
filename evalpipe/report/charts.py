"""Charts as inline SVG geometry: numbers in, coordinates out. Pure.

The dashboard must open offline from a file, so there is no chart library to fetch; the
templates draw these shapes with ``<polyline>``/``<polygon>`` and error bars (trends) and
``<rect>``/``<line>`` (the token-level histograms and per-group means with interval
whiskers). Only numbers and our own labels end up here, never model text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
class Whisker:
    """A mean (``y``) with its interval (``low``..``high``, SVG y) at ``x``."""

    x: float
    y: float
    low: float
    high: float
    tip: str


@dataclass(frozen=True)
class Chart:
    """One chart: lines, shaded bands (polygons), horizontal rules, axis ticks, and error
    bars where a band cannot show an interval (a point without neighbours)."""

    title: str
    lines: tuple[Line, ...]
    bands: tuple[tuple[str, str], ...]  # (css class, polygon points)
    rules: tuple[tuple[float, str, str], ...]  # (y, css class, label)
    y_ticks: tuple[tuple[float, str], ...]
    x_ticks: tuple[tuple[float, str], ...]
    whiskers: tuple[Whisker, ...] = ()
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


def _lone_whiskers(
    scale: _Scale, values: Values, low: Values, high: Values, tips: Sequence[str]
) -> tuple[Whisker, ...]:
    """Error bars for the points whose interval a band cannot show: a band joins a point's
    interval to its neighbours', so a point with no neighbouring interval (the only one,
    or one between gaps) would show none."""

    def has(i: int) -> bool:
        return 0 <= i < len(values) and low[i] is not None and high[i] is not None

    return tuple(
        Whisker(scale.x(i), scale.y(v), scale.y(low[i]), scale.y(high[i]), tips[i])  # type: ignore[arg-type]
        for i, v in enumerate(values)
        if v is not None and has(i) and not has(i - 1) and not has(i + 1)
    )


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
        whiskers=_lone_whiskers(scale, delta, low, high, tips),
    )


# --- token-level plots: histograms and means with interval whiskers ------------------------


@dataclass(frozen=True)
class Bar:
    """One histogram bar: top-left corner, size, tooltip."""

    x: float
    y: float
    width: float
    height: float
    tip: str


@dataclass(frozen=True)
class Plot:
    """Bars or whiskers on linear axes, vertical ``marks`` (x, label) and horizontal
    ``rules`` (y, css class, label)."""

    title: str
    bars: tuple[Bar, ...]
    whiskers: tuple[Whisker, ...]
    marks: tuple[tuple[float, str], ...]
    rules: tuple[tuple[float, str, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    x_ticks: tuple[tuple[float, str], ...]
    width: int = WIDTH
    height: int = HEIGHT


MAX_BARS = 24
MAX_MARKS = 16
"""More shard boundaries than this in one histogram would be a grey wash: none are drawn."""


def _map(lo: float, hi: float, a: float, b: float) -> Callable[[float], float]:
    """The linear map of [lo, hi] onto [a, b], rounded for compact SVG."""
    span = hi - lo if hi > lo else 1.0
    return lambda v: round(a + (b - a) * (v - lo) / span, 1)


def _count_ticks(y: Callable[[float], float], top: int) -> tuple[tuple[float, str], ...]:
    return tuple((y(v), str(v)) for v in sorted({0, top // 2, top}))


def histogram(
    title: str, values: Sequence[int], period: int | None = None, centre: bool = False
) -> Plot | None:
    """Counts of ``values`` (token positions) in at most :data:`MAX_BARS` equal bins, with a
    mark at each multiple of ``period`` in range (at 0 only when ``centre``: the values are
    offsets from a boundary). None when there are no values."""
    if not values:
        return None
    lo, hi = min(values), max(values) + 1
    step = max(1, -(-(hi - lo) // MAX_BARS))
    n = -(-(hi - lo) // step)
    counts = [0] * n
    for v in values:
        counts[(v - lo) // step] += 1
    top = max(counts)
    x = _map(lo, lo + n * step, PAD_LEFT, WIDTH - PAD_RIGHT)
    y = _map(0, top, HEIGHT - PAD_BOTTOM, PAD_TOP)
    bars = []
    for i, c in enumerate(counts):
        left, right = lo + i * step, lo + (i + 1) * step
        if c:
            tip = f"{left}–{right - 1}: {c}" if step > 1 else f"{left}: {c}"
            width, height = round(x(right) - x(left), 1), round(y(0) - y(c), 1)
            bars.append(Bar(x(left), y(c), width, height, tip))
    marks: list[tuple[float, str]] = []
    if centre:
        marks = [(x(0), "boundary")] if lo <= 0 < lo + n * step else []
    elif period:
        first = -(-lo // period) * period
        edges = range(max(first, period), lo + n * step + 1, period)
        if len(edges) <= MAX_MARKS:
            marks = [(x(e), f"{e // period}×{period}") for e in edges]
    ticks = sorted({lo, lo + (n // 2) * step, lo + n * step})
    return Plot(
        title=title,
        bars=tuple(bars),
        whiskers=(),
        marks=tuple(marks),
        rules=(),
        y_ticks=_count_ticks(y, top),
        x_ticks=tuple((x(t), str(t)) for t in ticks),
    )


def _sig(v: float) -> str:
    return f"{v:.3g}"


def _tick(v: float) -> str:
    """A short axis label: divergences are often 1e-4, which ``.3g`` writes in 8 characters."""
    if v == 0:
        return "0"
    return f"{v:.1e}" if abs(v) < 0.01 or abs(v) >= 1000 else f"{v:.2g}"


def whisker_plot(
    title: str,
    labels: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    overall: float | None = None,
) -> Plot | None:
    """Each group's mean with its interval, and the overall mean as a rule; groups whose
    figures are not finite are left out. None when no group has finite figures."""
    keep = [i for i in range(len(labels)) if all(math.isfinite(s[i]) for s in (means, lows, highs))]
    if not keep:
        return None
    top = max([highs[i] for i in keep] + [0.0])
    bottom = min([lows[i] for i in keep] + [0.0])
    x = _map(-0.5, len(labels) - 0.5, PAD_LEFT, WIDTH - PAD_RIGHT)
    y = _map(bottom, top if top > bottom else bottom + 1e-9, HEIGHT - PAD_BOTTOM, PAD_TOP)
    tips = [f"{labels[i]}: {_sig(means[i])} [{_sig(lows[i])}, {_sig(highs[i])}]" for i in keep]
    whiskers = tuple(
        Whisker(x(i), y(means[i]), y(lows[i]), y(highs[i]), tip)
        for i, tip in zip(keep, tips, strict=True)
    )
    rules = []
    if overall is not None and math.isfinite(overall):
        rules.append((y(overall), "overall", f"all {_tick(overall)}"))
    every = max(1, -(-len(labels) // 8))
    shown = sorted({*range(0, len(labels), every), len(labels) - 1})
    return Plot(
        title=title,
        bars=(),
        whiskers=whiskers,
        marks=(),
        rules=tuple(rules),
        y_ticks=tuple((y(v), _tick(v)) for v in (bottom, (bottom + top) / 2, top)),
        x_ticks=tuple((x(i), labels[i]) for i in shown),
    )


# --- dose-response: one signal against a fault's size, the benign pairs as a band -----------

LOG_FLOOR = 1e-8
"""Where a log-scale dose chart puts a zero when nothing is above zero (identical outputs give
a KL of exactly 0)."""


def dose_chart(
    title: str,
    sizes: Sequence[str],
    values: Values,
    lows: Values,
    highs: Values,
    benign: tuple[float, float] | None,
    log: bool = False,
    percent: bool = False,
) -> Chart | None:
    """A signal (``values`` with intervals) at each fault size (x, in order), on a log10 axis
    when ``log``; ``benign`` (low, high) is the range the benign pairs span, drawn as a band a
    detected fault rises out of. None when no value is finite."""

    # On a log axis a zero (an interval reaching 0) sits a decade below the smallest value.
    positive = [v for v in (*values, *lows, *highs) if v is not None and v > 0]
    floor = min(positive) / 10 if positive else LOG_FLOOR

    def t(v: float | None) -> float | None:
        if v is None or not math.isfinite(v):
            return None
        return math.log10(max(v, floor)) if log else v

    ys, lo, hi = [t(v) for v in values], [t(v) for v in lows], [t(v) for v in highs]
    band = None if benign is None else (t(benign[0]), t(benign[1]))
    extra = [] if band is None else [b for b in band if b is not None]
    found = _finite(ys, lo, hi, extra)
    if not _finite(ys):
        return None
    scale = _Scale(len(sizes), min(found), max(found))

    def label(v: float) -> str:
        if log:
            return f"{10**v:.1e}"
        return f"{v * 100:.0f}%" if percent else _tick(v)

    tips = [f"size {sizes[i]}: {label(v)}" if v is not None else "" for i, v in enumerate(ys)]
    bands: list[tuple[str, str]] = []
    if band is not None and band[0] is not None and band[1] is not None:
        x0, x1 = PAD_LEFT, WIDTH - PAD_RIGHT
        y0, y1 = scale.y(band[0]), scale.y(band[1])
        bands.append(("benign", f"{x0},{y1} {x1},{y1} {x1},{y0} {x0},{y0}"))
    whiskers = tuple(
        Whisker(scale.x(i), scale.y(v), scale.y(lo[i]), scale.y(hi[i]), tips[i])  # type: ignore[arg-type]
        for i, v in enumerate(ys)
        if v is not None and lo[i] is not None and hi[i] is not None
    )
    steps = 4
    ticks = tuple(
        (
            scale.y(scale.lo + (scale.hi - scale.lo) * k / steps),
            label(scale.lo + (scale.hi - scale.lo) * k / steps),
        )
        for k in range(steps + 1)
    )
    return Chart(
        title=title,
        lines=(_line(scale, "fault", "dose", ys, tips),),
        bands=tuple(bands),
        rules=(),
        y_ticks=ticks,
        x_ticks=tuple((scale.x(i), s) for i, s in enumerate(sizes)),
        whiskers=whiskers,
    )
