"""The typed sweep: what a plan expands to, and what running it returned.

A :class:`Cell` is one run (model, task, layout, repeat); a :class:`Group` is the cells one
engine serves, one per (model, layout), so a server starts once per pair and serves every task
of it; a :class:`Pair` is a layout and the baseline its runs are compared with. Everything here
is plain frozen data, so a group can be sent to another process (a Ray worker) as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from evalpipe.options import RunOptions


@dataclass(frozen=True)
class Cell:
    """One run of the matrix. ``options`` are complete: what ``evalpipe run`` would be given
    (layout, repeat index, store, limit, engine arguments …), so a cell run alone or by a sweep
    has the same configuration and pairs, reuses and resumes alike. ``line`` is the plan line
    it comes from (its task's entry)."""

    model: str
    task: str
    layout: str
    repeat_index: int
    options: RunOptions
    baseline: bool = False
    line: int | None = None
    variant: str = ""
    """What sets the cell apart from a plain run of its layout (a canary's fault or benign
    variant, e.g. `` [fault: key-scale 0.2]``), part of its key."""

    @property
    def key(self) -> str:
        """``model/task/layout#repeat``: how messages and results name the cell; a baseline
        of a generated long-context task made for a CP layout's shard grid adds ``@grid``."""
        grid = self.options.shard_layout
        suffix = f"@{grid}" if grid and grid != self.layout else ""
        return f"{self.model}/{self.task}/{self.layout}{suffix}{self.variant}#{self.repeat_index}"


@dataclass(frozen=True)
class Group:
    """The cells one engine serves: one (model, layout). ``devices`` are the accelerators the
    layout occupies; ``endpoint`` is a server the plan says is already running for this pair
    (then nothing is launched)."""

    model: str
    layout: str
    devices: int
    cells: tuple[Cell, ...]
    endpoint: str | None = None
    variant: str = ""
    """As :attr:`Cell.variant`: a canary starts one engine per fault and per benign variant."""

    @property
    def key(self) -> str:
        return f"{self.model}@{self.layout}{self.variant}"


@dataclass(frozen=True)
class Pair:
    """The cell ``run`` compared with the cell ``baseline`` (by key): the same model, task
    and repeat on a layout and on its baseline layout."""

    run: str
    baseline: str


@dataclass(frozen=True)
class SweepPlan:
    """A plan file (or the flags of a small sweep), expanded. ``groups`` run in this order on
    one machine; ``source`` names where it came from, for messages."""

    groups: tuple[Group, ...]
    pairs: tuple[Pair, ...]
    source: str = "<flags>"

    @property
    def cells(self) -> tuple[Cell, ...]:
        return tuple(c for g in self.groups for c in g.cells)


@dataclass(frozen=True)
class CellResult:
    """One cell's outcome. ``state``: ``finished``, ``reused`` (a finished run already in
    the store, nothing generated), ``failed``, or ``not run`` (its group never got an engine:
    retries exhausted, or the sweep stopped). ``generation_s`` is the engine time of its
    requests (the run's ``duration_s``); ``wall_s`` the whole cell, planning and storing
    included."""

    key: str
    state: str
    run_id: str | None = None
    message: str | None = None
    wall_s: float = 0.0
    generation_s: float | None = None
    n_samples: int = 0


@dataclass(frozen=True)
class GroupResult:
    """One group's outcome on one attempt. ``server_start_s`` is the time its engine took to
    become healthy (None: an endpoint, or it never started); ``engine_lost`` says the engine
    died under it (the executor retries the group: finished cells are reused, the cell it
    was running resumes from its stored samples); ``host`` where it ran."""

    key: str
    cells: tuple[CellResult, ...]
    server_start_s: float | None = None
    engine_lost: str | None = None
    host: str = ""
    attempts: int = 1
