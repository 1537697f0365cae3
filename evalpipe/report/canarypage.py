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
    return {"groups": list(groups), "smallest_heads": heads}


def _range(values: Sequence[float | None]) -> tuple[float, float] | None:
    found = [v for v in values if v is not None]
    return (min(found), max(found)) if found else None


def _charts(rows: Sequence[CanaryRow]) -> tuple[tuple[str, tuple[Chart, ...]], ...]:
    benign = [r for r in rows if r.role == "benign"]
    kl_band = _range([r.kl_low for r in benign] + [r.kl_high for r in benign])
    acc_band = _range([r.acc_low for r in benign] + [r.acc_high for r in benign])
    same_band = _range([r.identical for r in benign])
    out = []
    for kind in dict.fromkeys(r.kind for r in rows if r.role == "fault" and r.kind):
        mine = sorted((r for r in rows if r.kind == kind), key=lambda r: abs(r.size or 0))
        sizes = [f"{r.size:g}" for r in mine]
        charts = [
            dose_chart(
                f"{kind}: KL nats/token (log)",
                sizes,
                [r.kl_mean for r in mine],
                [r.kl_low for r in mine],
                [r.kl_high for r in mine],
                kl_band,
                log=True,
            ),
            dose_chart(
                f"{kind}: accuracy Δ",
                sizes,
                [r.acc_delta for r in mine],
                [r.acc_low for r in mine],
                [r.acc_high for r in mine],
                acc_band,
                percent=True,
            ),
            dose_chart(
                f"{kind}: identical outputs",
                sizes,
                [r.identical for r in mine],
                [r.identical for r in mine],
                [r.identical for r in mine],
                same_band,
                percent=True,
            ),
        ]
        out.append((kind, tuple(c for c in charts if c is not None)))
    return tuple(out)
