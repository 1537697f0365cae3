"""A sweep for the terminal (one screen) and as JSON. Pure: it renders what it is given.

The dry run lists every cell with the devices its engine needs and whether the store already
has it (reused, resumed with how many samples, or new). After a sweep: one line per group
(engine start, cells finished, reused, failed), one line per pair (accuracy delta and
verdict, token verdict), the failures with their reasons, the gate and the dashboard.
Names from the plan or the store are escaped like every other untrusted text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from evalpipe.report.text import SYMBOL
from evalpipe.report.textfmt import pts, safe
from evalpipe.sweep.cells import Group, GroupResult
from evalpipe.sweep.outcome import PairOutcome, SweepOutcome
from evalpipe.sweep.state import CellState

MAX_LINES = 12
"""Most failure and pair lines shown; the rest are counted (``--json`` has them all)."""


def format_outcome(o: SweepOutcome) -> str:
    plan = o.plan
    n_models = len({g.model for g in plan.groups})
    head = (
        f"sweep {safe(plan.source)}: {len(plan.cells)} cells in {len(plan.groups)} groups "
        f"(one engine per model and layout, {n_models} model(s)), {len(plan.pairs)} pairs; "
        f"executor {o.executor}"
    )
    if o.dry_run:
        return "\n".join([head, *dry_run_lines(o.plan.groups, o.states)])
    lines = [head, *(_group_line(r, o) for r in o.results)]
    lines += _failures(o)
    lines += _pair_lines(o.pairs)
    if o.gate is not None:
        lines.append(f"gate: {o.gate.status} (exit {o.gate.exit_code})")
        lines += [f"  {safe(r)}" for r in o.gate.reasons[:MAX_LINES]]
    if o.dashboard is not None:
        lines.append(f"dashboard: {safe(o.dashboard)}/index.html")
    lines.append(_timing(o))
    return "\n".join(lines)


def dry_run_lines(groups: Sequence[Group], states: Sequence[CellState]) -> list[str]:
    """Each group (one engine) and its cells, each new, to resume or reused, and the counts."""
    by_key = {s.cell.key: s for s in states}
    lines = []
    counts: Counter[str] = Counter(s.state for s in states)
    for g in groups:
        where = f"endpoint {safe(g.endpoint)}" if g.endpoint else f"{g.devices} device(s)"
        lines.append(f"{safe(g.key)}: {where}, {len(g.cells)} cells")
        for c in g.cells:
            lines.append(f"  {safe(c.key):<48} {_state(by_key.get(c.key))}")
    lines.append(
        f"{counts['new']} new, {counts['resume']} to resume, {counts['reuse']} reused "
        "(nothing was started or stored)"
    )
    return lines


def _state(s: CellState | None) -> str:
    if s is None or s.state == "new":
        return f"new ({s.n_items} items)" if s is not None else "new"
    if s.state == "reuse":
        return f"reused: run {safe(s.run_id or '')}"
    return f"resume run {safe(s.run_id or '')}: {s.stored}/{s.n_items} samples stored"


def _group_line(r: GroupResult, o: SweepOutcome) -> str:
    counts = Counter(c.state for c in r.cells)
    parts = [f"{counts[s]} {s}" for s in ("finished", "reused", "failed", "not run") if counts[s]]
    start = f", engine up in {r.server_start_s:.0f} s" if r.server_start_s is not None else ""
    host = f" on {safe(r.host)}" if r.host and o.executor == "ray" else ""
    retried = f", {r.attempts} attempts" if r.attempts > 1 else ""
    return f"  {safe(r.key)}{host}: {', '.join(parts) or 'no cells'}{start}{retried}"


def _failures(o: SweepOutcome) -> list[str]:
    bad = o.unfinished
    lines = [f"  ✗ {safe(c.key)} {c.state}: {_first_line(c.message)}" for c in bad[:MAX_LINES]]
    if len(bad) > MAX_LINES:
        lines.append(f"  … and {len(bad) - MAX_LINES} more")
    if bad:
        lines.append("  run the same command again: finished cells are reused, the rest resume")
    return lines


def _first_line(text: str | None) -> str:
    return safe(text.splitlines()[0], 600) if text else ""  # the reason whole, not cut


def _pair_lines(pairs: tuple[PairOutcome, ...]) -> list[str]:
    if not pairs:
        return []
    lines = ["pairs (run vs baseline):"]
    for p in pairs[:MAX_LINES]:
        name = f"{safe(p.pair.run)} vs {safe(p.pair.baseline.split('/')[-1])}"
        c = p.comparison
        if c is None:
            lines.append(f"  {name}: not compared ({safe(p.missing or '')})")
            continue
        r = c.result
        tokens = "" if c.tokens is None else f"; tokens {c.tokens.verdict}"
        lines.append(
            f"  {name}: {SYMBOL[c.verdict]} Δ {pts(r.delta)} pts [{pts(r.ci_low)}, "
            f"{pts(r.ci_high)}], n={r.n}{tokens}"
        )
    if len(pairs) > MAX_LINES:
        lines.append(f"  … and {len(pairs) - MAX_LINES} more (`--json` lists them all)")
    verdicts = Counter(p.comparison.verdict if p.comparison else "missing" for p in pairs)
    lines.append("  " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())))
    return lines


def _timing(o: SweepOutcome) -> str:
    starts = [r.server_start_s for r in o.results if r.server_start_s is not None]
    engine = sum(c.generation_s or 0.0 for r in o.results for c in r.cells)
    return (
        f"took {o.wall_s:.0f} s: {len(starts)} engine start(s) {sum(starts):.0f} s, "
        f"generation {engine:.0f} s; exit {o.exit_code}"
    )


def outcome_json(o: SweepOutcome) -> dict[str, Any]:
    """Everything the summary shows, whole: cells, groups, pairs, gate."""
    from evalpipe.compare.jsonout import to_json

    states = {s.cell.key: s for s in o.states}
    return {
        "source": o.plan.source,
        "executor": o.executor,
        "dry_run": o.dry_run,
        "exit_code": o.exit_code,
        "wall_s": o.wall_s,
        "cells": [
            {
                "key": c.key,
                "model": c.model,
                "task": c.task,
                "layout": c.layout,
                "repeat_index": c.repeat_index,
                "baseline": c.baseline,
                "devices": g.devices,
                "before": states[c.key].state if c.key in states else None,
            }
            for g in o.plan.groups
            for c in g.cells
        ],
        "groups": [
            {
                "key": r.key,
                "host": r.host,
                "attempts": r.attempts,
                "server_start_s": r.server_start_s,
                "engine_lost": r.engine_lost,
                "cells": [vars(c) for c in r.cells],
            }
            for r in o.results
        ],
        "pairs": [
            {
                "run": p.pair.run,
                "baseline": p.pair.baseline,
                "missing": p.missing,
                "comparison": None if p.comparison is None else to_json(p.comparison),
            }
            for p in o.pairs
        ],
        "gate": None if o.gate is None else o.gate.to_dict(),
        "dashboard": o.dashboard,
    }
