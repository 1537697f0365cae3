"""The canary table for the terminal: one row per fault and size, then each signal's smallest
detectable fault at 60, 120 and 1 319 items. Reads :class:`evalpipe.api.canary.CanaryReport`
rows only; labels and run ids are escaped (a grid is user text)."""

from __future__ import annotations

import math

from evalpipe.canary.table import NS, SIGNALS, CanaryReport, CanaryRow, smallest_table
from evalpipe.report.textfmt import p_text, pts, safe, share

HEADER = (
    f"{'fault / variant':34} {'identical':>9}  {'accuracy Δ pts [95% CI]':26} "
    f"{'verdict':12}  {'KL nats/token [95% CI]':28} {'token':12} {'items to drift':>17} "
    "first divergences near a boundary; KL boundary test"
)


def _nats(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2e}"


def _items(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:.0f}"


def where(r: CanaryRow) -> str:
    """Where the first divergences fall against the fault's period: how many within the
    window of a boundary against the count the actual positions give by chance, and the
    boundary test of the KL (or why there is none)."""
    if not r.reached:
        return "never reached (sequences too short)"
    if not r.divergent:
        return "none diverged"
    share = f"{r.near}/{r.divergent} within ±{r.near_width}"
    if r.near_expected is not None:
        share += f" (chance {r.near_expected:.1f}, p={p_text(r.near_p)})"
    test = f"KL test p={p_text(r.boundary_p)}" if r.boundary_p is not None else r.boundary_reason
    return f"{share}; {test}" if test else share


def _row(r: CanaryRow) -> str:
    acc = f"{pts(r.acc_delta)} [{pts(r.acc_low)}, {pts(r.acc_high)}]"
    kl = f"{_nats(r.kl_mean)} [{_nats(r.kl_low)}, {_nats(r.kl_high)}]"
    label = safe(r.label if r.role == "fault" else f"benign: {r.label}", 34)
    return (
        f"{label:34} {share(r.identical):>9}  {acc:26} {r.acc_verdict:12}  {kl:28} "
        f"{r.token_verdict:12} {_items(r.acc_items):>7} / {_items(r.token_items):<7} "
        f"{where(r)} (period {r.period})"
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
