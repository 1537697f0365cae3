"""Where each cell stands in the store before it runs: new, to resume, or finished (reused).

A cell is the run ``evalpipe run`` would make with its options, so it is found by the same
configuration hash (model bytes, task version, prompts, data, sampling, engine versions and
arguments, repeat index): a finished run is reused, an unfinished one resumed from its stored
samples. The engine versions are this machine's (or the endpoint's): a cluster node with
another vLLM computes another hash, so what it runs is a new cell there, as it should be.
"""

from __future__ import annotations

from dataclasses import dataclass

from evalpipe.engine import provenance
from evalpipe.engine.session import Generation, connect
from evalpipe.run.plan import plan, run_config
from evalpipe.store import Store
from evalpipe.sweep.cells import Cell, Group


@dataclass(frozen=True)
class CellState:
    """``state``: ``new`` (nothing stored), ``resume`` (an unfinished run with ``stored``
    good samples of ``n_items``) or ``reuse`` (a finished run); ``config_hash`` finds it."""

    cell: Cell
    state: str
    config_hash: str
    n_items: int
    run_id: str | None = None
    stored: int = 0


def group_versions(group: Group) -> dict[str, str]:
    """The engine versions a group's runs will store: its endpoint's, or this machine's."""
    if group.endpoint is None:
        return provenance.engine_versions()
    first = group.cells[0].options
    served = first.served_model or first.model
    return connect(group.endpoint, served, Generation()).versions


def cell_states(store: Store, group: Group) -> list[CellState]:
    """Each of the group's cells as the store has it (nothing is written)."""
    versions = group_versions(group)
    out = []
    for cell in group.cells:
        p = plan(cell.options)
        config_hash = run_config(p, versions).config_hash()
        n_items = len(p.prompts)
        done = store.find_finished(config_hash)
        if done is not None:
            out.append(CellState(cell, "reuse", config_hash, n_items, done.run_id, n_items))
            continue
        unfinished = store.find_unfinished(config_hash)
        if unfinished is None:
            out.append(CellState(cell, "new", config_hash, n_items))
        else:
            stored = len(store.done_item_ids(unfinished.run_id))
            out.append(CellState(cell, "resume", config_hash, n_items, unfinished.run_id, stored))
    return out
