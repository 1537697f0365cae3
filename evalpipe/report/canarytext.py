"""The canary table for the terminal: one row per fault and size, then each signal's smallest
detectable fault at 60, 120 and 1 319 items. Reads :class:`evalpipe.api.canary.CanaryReport`
rows only; labels and run ids are escaped (a grid is user text)."""

from __future__ import annotations

import math

from evalpipe.canary.table import NS, SIGNALS, CanaryReport, CanaryRow, smallest_table
from evalpipe.report.textfmt import p_text, pts, safe, share

HEADER = (
    f"{'fault / variant':34} {'identical':>9}  {'accuracy Δ pts [95% CI]':26} "
    f"{'verdict':12}  {'KL nats/token [95% CI]':28} {'token':12} "
    f"{'first divergences near a boundary':34} {'items (80% power): acc / KL':>28}"
)


def _nats(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2e}"


def _items(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:.0f}"


def _row(r: CanaryRow) -> str:
    acc = f"{pts(r.acc_delta)} [{pts(r.acc_low)}, {pts(r.acc_high)}]"
    kl = f"{_nats(r.kl_mean)} [{_nats(r.kl_low)}, {_nats(r.kl_high)}]"
    where = (
        f"{share(r.near_boundary)} of {r.divergent}, test p={p_text(r.boundary_p)} "
        f"(period {r.period})"
        if r.divergent
        else "none diverged"
    )
    if not r.reached:
        where = "never reached (sequences too short)"
    label = safe(r.label if r.role == "fault" else f"benign: {r.label}", 34)
    return (
        f"{label:34} {share(r.identical):>9}  {acc:26} {r.acc_verdict:12}  {kl:28} "
        f"{r.token_verdict:12} {where:34} {_items(r.acc_items):>13} / {_items(r.token_items):<12}"
    )


def format_canary(report: CanaryReport) -> str:
    n = max((r.n for r in report.rows), default=0)
    lines = [
        f"canary: {safe(report.model)}, {safe(report.task)}, {safe(report.layout)}, {n} items; "
        f"clean run {safe(report.clean_run)}"
        + (f" (noise floor: its repeat {safe(report.repeat_run)})" if report.repeat_run else "")
        + f"; grid {safe(report.grid)}; {report.starts} engine starts",
        HEADER,
        *(_row(r) for r in report.rows),
    ]
    if report.failures:
        lines.append("did not finish (rerun the same command to resume):")
        lines += [f"  {safe(f)}" for f in report.failures]
    lines.append("smallest fault each signal detects with 80 % power (-: no size of the grid)")
    heads = [f"{s} n={n}" for s in SIGNALS for n in NS]
    lines.append(f"  {'kind':14}" + "".join(f"{h:>16}" for h in heads))
    for kind, cells in smallest_table(report.rows):
        lines.append(f"  {kind:14}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)
