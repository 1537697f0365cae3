"""The canary: run a grid of injected faults and benign variants against the clean run on the
real engine, compare each with the clean run, and tabulate which signal sees what
(:mod:`evalpipe.canary`)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalpipe.canary.table import CanaryReport
from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions

if TYPE_CHECKING:
    from evalpipe.canary.grid import Grid

Say = Callable[[str], None]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class CanarySettings:
    """How a canary runs and decides: the grid file (None: the built-in grid), the most
    engine starts it may cost, retries of a lost engine, and the comparison's thresholds
    (margin and alpha as fractions)."""

    grid: str | None = None
    max_starts: int = 20
    max_retries: int = 2
    margin: float = 0.01
    alpha: float = 0.05
    min_n: int = 100


def load_grid(path: str | None) -> Grid:
    """The grid in the YAML file ``path``, or the built-in one; every problem refused with
    its line, before anything starts."""
    from evalpipe.canary.grid import default_grid, parse_grid

    if path is None:
        return default_grid()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalpipeError(f"cannot read the canary grid {path}: {exc}") from exc
    return parse_grid(text, path)


def _clean(options: RunOptions) -> RunOptions:
    """The clean run's options: a built-in model resolved to its folder, and the engine
    arguments every arm shares (on CPU, a DCP layout's sliding-window override)."""
    from evalpipe.api.running import resolve_model
    from evalpipe.run.cpu_dcp import pair_engine_args

    if options.engine != "endpoint":
        options = dataclasses.replace(options, model=resolve_model(options.model))
    return dataclasses.replace(options, engine_args=pair_engine_args(options, options.layout))


def canary(options: RunOptions, settings: CanarySettings, say: Say = _stderr) -> CanaryReport:
    """Run the canary on ``options``' model, task, layout and items: the clean run and its
    repeat, then every fault and benign variant of the grid (one engine start each), then
    compare each with the clean run. Finished runs are reused and unfinished ones resumed, so
    the same command picks up where it stopped."""
    from evalpipe.canary.plan import plan_canary
    from evalpipe.canary.rows import Arm, canary_rows
    from evalpipe.compare.core import Settings
    from evalpipe.run.plan import precheck
    from evalpipe.store import open_store
    from evalpipe.sweep.local import run_local

    grid = load_grid(settings.grid)
    options = _clean(options)
    planned = plan_canary(options, grid, settings.max_starts)
    precheck(planned.clean.options, *(a.options for a in planned.arms))
    say(
        f"canary: {planned.starts} engine starts (clean + {len(grid.faults)} faults + "
        f"{len(grid.benign)} benign variants) on {options.model}, {options.task}, "
        f"{options.layout}"
    )
    results = run_local(
        planned.groups(), settings.max_retries, lambda m: say(m.replace("sweep:", "canary:", 1))
    )
    clean = results[0].cells
    if not clean or clean[0].run_id is None or clean[0].state not in ("finished", "reused"):
        why = clean[0].message if clean else "it did not run"
        raise EvalpipeError(f"the canary's clean run did not finish: {why}; rerun to resume it")

    with open_store(options.store) as store:
        base = store.get_run(clean[0].run_id)
        arms, failures = [], []
        for arm, result in zip(planned.arms, results[1:], strict=True):
            cell = result.cells[0]
            if cell.run_id is None or cell.state not in ("finished", "reused"):
                failures.append(f"{arm.label}: {cell.message or cell.state}")
                continue
            arms.append(Arm(store.get_run(cell.run_id), arm.role, arm.label))
        thresholds = Settings(settings.margin, settings.alpha, settings.min_n)
        rows = canary_rows(store, base, arms, grid_period(grid), thresholds)
    repeat = clean[1].run_id if len(clean) > 1 else None
    return CanaryReport(
        options.model,
        options.task,
        base.config.layout,
        grid.source,
        base.run_id,
        repeat,
        tuple(rows),
        tuple(failures),
        planned.starts,
    )


def canary_dry_run(options: RunOptions, settings: CanarySettings) -> str:
    """What ``canary`` would do: every engine start with its runs, each new, to resume or
    reused (nothing is started or stored)."""
    from evalpipe.api.sweeping import plan_states
    from evalpipe.canary.plan import plan_canary
    from evalpipe.report.sweeptext import dry_run_lines
    from evalpipe.run.plan import precheck
    from evalpipe.sweep.cells import SweepPlan

    grid = load_grid(settings.grid)
    options = _clean(options)
    planned = plan_canary(options, grid, settings.max_starts)
    precheck(planned.clean.options, *(a.options for a in planned.arms))
    groups = planned.groups()
    states = plan_states(SweepPlan(groups, (), grid.source), options.store)
    head = f"canary: {planned.starts} engine starts, grid {grid.source}"
    return "\n".join([head, *dry_run_lines(groups, states)])


def grid_period(grid: Grid) -> int | None:
    """The period benign variants are localised against: the grid's first fault's (None for
    a dcp-merge fault: the layout's shard period)."""
    return grid.faults[0].locating_period


def canary_json(report: CanaryReport) -> dict[str, Any]:
    """``report`` as ``evalpipe canary --json`` prints it (keys are only ever added)."""
    from evalpipe.canary.table import NS, SIGNALS, smallest_detectable

    out = dataclasses.asdict(report)
    out["rows"] = [r.to_json() for r in report.rows]
    out["smallest_detectable"] = {
        s: {str(n): smallest_detectable(report.rows, s, n) for n in NS} for s in SIGNALS
    }
    return out


def format_canary(report: CanaryReport) -> str:
    """``report`` as ``evalpipe canary`` prints it: one row per fault and size."""
    from evalpipe.report.canarytext import format_canary as render

    return render(report)
