"""Run one group: one engine for a (model, layout), every cell of it in turn.

This is the unit both executors schedule: the local one calls it in this process, the Ray one
in a worker on the node whose accelerators it holds. The engine is started once (or the plan's
endpoint reached) and each cell is the run ``evalpipe run`` would make, sent to that server,
so a cell stores, resumes and pairs exactly as a run alone does. A cell that fails (its error
rate above ``--max-error-rate``) is reported and the next one runs; an engine that dies under
a cell ends the group with ``engine_lost`` so the executor can retry it: the finished cells
are then reused and the interrupted one resumes from its stored samples.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from evalpipe.engine.session import HttpSession, http_session
from evalpipe.errors import EvalpipeError
from evalpipe.run.native import execute
from evalpipe.run.plan import generation, plan, runs_dir, session_spec
from evalpipe.store import open_store
from evalpipe.sweep.cells import Cell, CellResult, Group, GroupResult
from evalpipe.sweep.state import CellState, cell_states

Say = Callable[[str], None]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_group(group: Group, say: Say = _stderr) -> GroupResult:
    """Run every cell of ``group`` on one engine; see the module docstring."""
    host = socket.gethostname()
    try:
        store = open_store(group.cells[0].options.store)
        try:
            states = {s.cell.key: s for s in cell_states(store, group)}
        finally:
            store.close()
    except EvalpipeError as exc:  # the store or the plan's endpoint cannot be reached
        none = tuple(CellResult(c.key, "not run", message=str(exc)) for c in group.cells)
        return GroupResult(group.key, none, engine_lost=str(exc), host=host)
    if all(s.state == "reuse" for s in states.values()):
        reused = tuple(
            CellResult(c.key, "reused", states[c.key].run_id, n_samples=states[c.key].n_items)
            for c in group.cells
        )
        return GroupResult(group.key, reused, host=host)
    started = time.monotonic()
    results: list[CellResult] = []
    try:
        with _server(group, say) as server:
            start_s = time.monotonic() - started if group.endpoint is None else None
            lost = _cells(group, server, states, results, say)
    except EvalpipeError as exc:  # the engine did not start (or the endpoint is not there)
        lost, start_s = str(exc), None
    done = {r.key for r in results}
    rest = tuple(
        CellResult(c.key, "not run", message=lost) for c in group.cells if c.key not in done
    )
    return GroupResult(group.key, (*results, *rest), start_s, lost, host)


def _server(group: Group, say: Say) -> AbstractContextManager[HttpSession]:
    """The group's engine, started from its first cell's configuration (every cell of a group
    has the same model, layout and engine arguments); its log beside the runs' folders."""
    first = group.cells[0].options
    p = plan(first)
    log_dir = runs_dir(first) / "sweep" / re.sub(r"[^\w.@-]+", "_", group.key)
    spec = session_spec(first, p.layout, p.engine_args, p.engine_env, log_dir, generation(p))
    return http_session(spec, say)


def _cells(
    group: Group,
    server: HttpSession,
    states: dict[str, CellState],
    results: list[CellResult],
    say: Say,
) -> str | None:
    """Run the cells in order into ``results``; the reason the engine was lost, if it was."""
    for cell in group.cells:
        state = states[cell.key].state
        begun = time.monotonic()
        try:
            run = execute(cell.options, shared=server)
        except EvalpipeError as exc:
            if not server.alive():
                return f"the engine of {group.key} died during {cell.key}: {exc}"
            results.append(
                CellResult(cell.key, "failed", message=str(exc), wall_s=time.monotonic() - begun)
            )
            say(f"sweep: {cell.key} failed (the next cell runs; rerun to resume it): {exc}")
            continue
        results.append(_result(cell, run.run_id, state, begun, run.duration_s, run.n_samples))
        say(f"sweep: {cell.key} {results[-1].state} (run {run.run_id})")
    return None


def _result(
    cell: Cell, run_id: str, state: str, begun: float, generation_s: float | None, n: int
) -> CellResult:
    return CellResult(
        cell.key,
        "reused" if state == "reuse" else "finished",
        run_id,
        wall_s=time.monotonic() - begun,
        generation_s=None if state == "reuse" else generation_s,
        n_samples=n,
    )
