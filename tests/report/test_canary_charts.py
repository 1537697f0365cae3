"""The canary page's dose-response chart (pure geometry)."""

from __future__ import annotations

import math

from evalpipe.report.charts import HEIGHT, dose_chart


def test_a_log_chart_puts_the_benign_band_below_a_rising_fault() -> None:
    c = dose_chart(
        "key-scale: KL",
        ["0.05", "0.2", "0.5"],
        [1e-3, 1e-2, 0.3],
        [5e-4, 5e-3, 0.2],
        [2e-3, 2e-2, 0.4],
        benign=(3e-4, 6e-4),
        log=True,
    )
    assert c is not None
    ys = [y for _, y, _ in c.lines[0].dots]
    assert ys[0] > ys[1] > ys[2]  # SVG y grows downwards: a rising KL climbs the chart
    ((css, polygon),) = c.bands
    band_top = min(float(p.split(",")[1]) for p in polygon.split())
    assert css == "benign" and band_top > ys[0]  # the smallest fault already above the band
    assert [t for _, t in c.x_ticks] == ["0.05", "0.2", "0.5"]
    assert len(c.whiskers) == 3 and c.y_ticks[-1][1] != c.y_ticks[0][1]


def test_a_zero_on_a_log_axis_sits_a_decade_below_the_smallest_value() -> None:
    c = dose_chart("kv", ["1"], [1e-4], [0.0], [3e-4], benign=None, log=True)
    assert c is not None and not c.bands
    (w,) = c.whiskers
    assert 0 <= w.high < w.y < w.low <= HEIGHT  # the interval's zero end is drawn, on the chart


def test_no_finite_value_no_chart() -> None:
    assert dose_chart("x", ["1"], [None], [None], [None], benign=None) is None
    assert dose_chart("x", ["1"], [math.nan], [None], [None], benign=None) is None
