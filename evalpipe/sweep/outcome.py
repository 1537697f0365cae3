"""What a sweep ended with, for the summary, ``--json`` and the exit code."""

from __future__ import annotations

from dataclasses import dataclass

from evalpipe.compare.core import Comparison
from evalpipe.gate.decide import GateDecision
from evalpipe.sweep.cells import CellResult, GroupResult, Pair, SweepPlan
from evalpipe.sweep.state import CellState


@dataclass(frozen=True)
class PairOutcome:
    """One pair after the sweep: its comparison, or why there is none (a cell did not
    finish, or the comparison itself was refused)."""

    pair: Pair
    comparison: Comparison | None = None
    missing: str | None = None


@dataclass(frozen=True)
class SweepOutcome:
    """``states`` is where each cell stood before the sweep (what ``--dry-run`` prints);
    ``results`` are empty for a dry run. ``exit_code``: 0 every cell finished (and the gate
    passed, when asked), 1 a cell failed or never ran (or the gate failed: its own code)."""

    plan: SweepPlan
    executor: str
    states: tuple[CellState, ...]
    results: tuple[GroupResult, ...] = ()
    pairs: tuple[PairOutcome, ...] = ()
    gate: GateDecision | None = None
    dashboard: str | None = None
    wall_s: float = 0.0
    dry_run: bool = False

    @property
    def unfinished(self) -> list[CellResult]:
        """Cells that did not end with a finished (or reused) run."""
        return [c for r in self.results for c in r.cells if c.state not in ("finished", "reused")]

    @property
    def exit_code(self) -> int:
        if self.dry_run:
            return 0
        if self.unfinished:
            return 1
        return self.gate.exit_code if self.gate is not None else 0
