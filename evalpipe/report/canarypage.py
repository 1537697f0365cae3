"""The dashboard's canary page: per clean run with injected faults beside it, a row per fault
and size (the same rows as ``evalpipe canary``) and, per fault kind, a dose-response chart of
each signal against the fault's size, the benign pairs' range drawn as a band."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalpipe.canary.rows import StoredCanary, canary_rows
from evalpipe.canary.table import NS, SIGNALS, CanaryRow, Smallest, smallest_table
from evalpipe.compare.core import Settings
from evalpipe.faults import parse_fault
from evalpipe.records import Run
from evalpipe.report.canarytext import where
from evalpipe.report.charts import Chart, dose_chart
from evalpipe.store import Store


@dataclass(frozen=True)
class CanaryGroup:
    """One canary: its clean run, rows and, per fault kind, the dose-response charts."""

    clean: Run
    rows: tuple[CanaryRow, ...]
    charts: tuple[tuple[str, tuple[Chart, ...]], ...]
    smallest: Smallest


def canary_groups(
    store: Store, canaries: Sequence[StoredCanary], settings: Settings
) -> list[CanaryGroup]:
    """The rows and charts of ``canaries`` (:func:`evalpipe.canary.rows.stored_canaries`),
    computed by the comparison core."""
    out = []
    for found in canaries:
        faults = [a.run.config.fault for a in found.arms if a.role == "fault"]
        period = parse_fault(faults[0] or "").locating_period
        rows = tuple(canary_rows(store, found.clean, found.arms, period, settings))
        out.append(CanaryGroup(found.clean, rows, _charts(rows), smallest_table(rows)))
    return out


def canary_context(groups: Sequence[CanaryGroup]) -> dict[str, Any]:
    heads = [f"{s} n={n}" for s in SIGNALS for n in NS]
    return {"groups": list(groups), "smallest_heads": heads, "where": where}


def _range(values: Sequence[float | None]) -> tuple[float, float] | None:
    found = [v for v in values if v is not None]
    return (min(found), max(found)) if found else None


SIGNAL_FIELDS = (
    ("KL nats/token (log)", ("kl_mean", "kl_low", "kl_high"), True),
    ("accuracy Δ", ("acc_delta", "acc_low", "acc_high"), False),
    ("identical outputs", ("identical", "identical", "identical"), False),
)
"""Each dose chart: its title, the row fields of its value and interval, a log axis or not."""


def _charts(rows: Sequence[CanaryRow]) -> tuple[tuple[str, tuple[Chart, ...]], ...]:
    """Per fault kind, each signal of :data:`SIGNAL_FIELDS` against the fault's size, the
    range of the benign pairs' intervals as the band."""
    benign = [r for r in rows if r.role == "benign"]
    out = []
    for kind in dict.fromkeys(r.kind for r in rows if r.role == "fault" and r.kind):
        mine = sorted((r for r in rows if r.kind == kind), key=lambda r: abs(r.size or 0))
        sizes = [f"{r.size:g}" for r in mine]
        charts = []
        for title, (value, low, high), log in SIGNAL_FIELDS:
            band = _range([getattr(r, f) for r in benign for f in (low, high)])
            values, lows, highs = ([getattr(r, f) for r in mine] for f in (value, low, high))
            chart = dose_chart(
                f"{kind}: {title}", sizes, values, lows, highs, band, log=log, percent=not log
            )
            if chart is not None:
                charts.append(chart)
        out.append((kind, tuple(charts)))
    return tuple(out)
