"""Dashboard data: every finished run paired with its baseline and compared by the core.

The pairing rules are :mod:`evalpipe.compare.pairing`'s (``pairing_key``, ``baseline_layout``,
the newest pairing run with repeat 0 preferred), applied to the run list in memory: calling
``find_baseline`` per run re-reads every run each time. Every figure is a core
:class:`~evalpipe.compare.core.Comparison` (:mod:`evalpipe.report.compute`), so the numbers are
the ones ``evalpipe compare`` prints (tests check it). Comparisons are not Holm-adjusted: each
cell stands alone, as ``evalpipe compare RUN`` would report it.

A comparison whose inputs are unchanged since the previous render comes from the cache
(:mod:`evalpipe.report.cache`) instead, without its flip examples; :func:`complete` computes
those again for the pages that need them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from evalpipe.compare.core import Comparison
from evalpipe.compare.pairing import baseline_layout, pairing_key
from evalpipe.compare.pairing import find_baseline as _find_baseline
from evalpipe.compare.runs import shard_period_of
from evalpipe.compare.stats import PairedResult
from evalpipe.errors import EvalpipeError
from evalpipe.layout import parse
from evalpipe.records import Run, canonical_json
from evalpipe.report import cache
from evalpipe.report.compute import SETTINGS, Job, compute
from evalpipe.store import Store
from evalpipe.store.traces import trace_stamp


@dataclass(frozen=True)
class Cell:
    """One run that should be compared: its baseline and comparison, or why there is none."""

    run: Run
    baseline_layout: str
    baseline: Run | None = None
    reason: str | None = None
    comparison: Comparison | None = None
    job: Job | None = field(default=None, compare=False)
    key: str = ""  # digest of the comparison's inputs (cache.comparison_key)
    complete: bool = True  # False: from the cache, without flip examples

    @property
    def result(self) -> PairedResult | None:
        return None if self.comparison is None else self.comparison.result

    @property
    def verdict(self) -> str:
        """``ok``/``drift``/``inconclusive``, or ``missing`` when nothing could be compared."""
        return "missing" if self.comparison is None else self.comparison.verdict


@dataclass(frozen=True)
class DashboardData:
    """All runs (newest first), a :class:`Cell` per run that has a baseline layout, and the
    cache entries of the comparisons shown (to save for the next render)."""

    runs: list[Run]
    cells: dict[str, Cell]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    computed: int = 0  # comparisons computed (not from the cache)

    @property
    def baseline_layouts(self) -> set[str]:
        return {c.baseline_layout for c in self.cells.values()}


def _canonical_pairs(pairs: Mapping[str, str] | None) -> dict[str, str]:
    return {parse(k).canonical: parse(v).canonical for k, v in (pairs or {}).items()}


def _wanted_layout(run: Run, pairs: Mapping[str, str]) -> str | None:
    """The layout ``run`` is compared with, or ``None`` when it is not compared (a run with
    a canary fault: the clean run of its own layout)."""
    try:
        layout = parse(run.config.layout)
    except EvalpipeError:
        return None  # an imported run with a layout we cannot parse: shown, not compared
    override = None if run.config.fault else pairs.get(layout.canonical)
    if override is None and not layout.is_cp and run.config.fault is None:
        return None
    return baseline_layout(run, override)


def _repeat_key(run: Run) -> str:
    return canonical_json({**run.config.key(), "repeat_index": None})


def _pair_runs(
    store: Store, finished: list[Run], pairs: Mapping[str, str]
) -> tuple[list[Cell], dict[str, list[Run]]]:
    """Cells with their baseline chosen (or the reason there is none), and repeat groups."""
    by_key: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    keys = {r.run_id: canonical_json(pairing_key(r)) for r in finished}
    for r in finished:  # newest first, like store.list_runs
        if r.config.fault is None:  # a run with a canary fault is never a baseline
            by_key[(r.config.task, r.config.layout, keys[r.run_id])].append(r)
    repeats: dict[str, list[Run]] = defaultdict(list)
    for r in finished:
        repeats[_repeat_key(r)].append(r)
    cells: list[Cell] = []
    for run in finished:
        try:
            wanted = _wanted_layout(run, pairs)
        except EvalpipeError as exc:
            cells.append(Cell(run=run, baseline_layout="?", reason=str(exc)))
            continue
        if wanted is None:
            continue
        found = [
            r
            for r in by_key.get((run.config.task, wanted, keys[run.run_id]), [])
            if r.run_id != run.run_id
        ]
        first = [r for r in found if r.config.repeat_index == 0] or found
        if first:
            cells.append(Cell(run=run, baseline_layout=wanted, baseline=first[0]))
            continue
        try:  # compare's own search, for its message (what differs, how to make one)
            _find_baseline(store, run, pairs.get(parse(run.config.layout).canonical))
            reason = "no baseline found"  # unreachable unless the store changed meanwhile
        except EvalpipeError as exc:
            reason = str(exc)
        cells.append(Cell(run=run, baseline_layout=wanted, reason=reason))
    return cells, repeats


def _with_job(
    cell: Cell, repeats: Sequence[Run], shard_period: int | None, stamps: Mapping[str, Any]
) -> Cell:
    """``cell`` with what its comparison needs (its runs' trace stamps from ``stamps``, every
    run's), and the digest of all of it."""
    assert cell.baseline is not None
    job = Job(cell.run, cell.baseline, tuple(repeats), shard_period_of(cell.run, shard_period))
    job = job.with_traces(stamps)
    key = cache.comparison_key(job.run, job.baseline, job.repeats, job.shard, SETTINGS, job.traces)
    return replace(cell, job=job, key=key)


def _from_cache(cell: Cell, entries: Mapping[str, Mapping[str, Any]]) -> Cell | None:
    entry = entries.get(cell.key)
    if entry is None or cell.baseline is None:
        return None
    if "reason" in entry:
        return replace(cell, reason=str(entry["reason"]))
    try:
        comparison = cache.from_entry(entry, cell.run, cell.baseline)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # an entry of another shape: compute it again
    return replace(cell, comparison=comparison, complete=False)


def _outcome(cell: Cell, outcome: Comparison | str) -> Cell:
    if isinstance(outcome, str):
        return replace(cell, reason=outcome)
    return replace(cell, comparison=outcome, complete=True)


def _entry(cell: Cell) -> dict[str, Any]:
    if cell.comparison is None:
        return {"reason": cell.reason}
    return cache.to_entry(cell.comparison)


def load(
    store: Store,
    pairs: Mapping[str, str] | None = None,
    shard_period: int | None = None,
    cached: Mapping[str, Mapping[str, Any]] | None = None,
) -> DashboardData:
    """Every run of ``store`` and every comparison the dashboard shows; ``shard_period``
    (tokens) overrides each run's own (dcp x interleave) for the shard-boundary panel.

    ``cached`` (from :func:`evalpipe.report.cache.load`) holds comparisons of an earlier
    render by input digest; those are reused, the others computed."""
    runs = store.list_runs()
    finished = [r for r in runs if r.status == "finished"]
    cells, groups = _pair_runs(store, finished, _canonical_pairs(pairs))
    # One query for every run's token traces: which pairs get a token-level comparison, and
    # what in their cache key says the traces changed (a teacher-forced score added later).
    stamps = trace_stamp(store, [r.run_id for r in finished])
    done: dict[str, Cell] = {}
    todo: list[Cell] = []
    for cell in cells:
        if cell.baseline is None:
            done[cell.run.run_id] = cell
            continue
        cell = _with_job(cell, groups[_repeat_key(cell.baseline)], shard_period, stamps)
        hit = _from_cache(cell, cached or {})
        if hit is None:
            todo.append(cell)
        else:
            done[cell.run.run_id] = hit
    outcomes = compute(store, [c.job for c in todo if c.job is not None])
    for cell in todo:
        done[cell.run.run_id] = _outcome(cell, outcomes[cell.run.run_id])
    ordered = {c.run.run_id: done[c.run.run_id] for c in cells}
    entries = {c.key: _entry(c) for c in ordered.values() if c.key}
    return DashboardData(runs=runs, cells=ordered, entries=entries, computed=len(todo))


def complete(store: Store, cells: Sequence[Cell]) -> dict[str, Cell]:
    """``cells`` from the cache computed again, with their flip examples, by run id."""
    todo = [c for c in cells if not c.complete and c.job is not None]
    outcomes = compute(store, [c.job for c in todo if c.job is not None])
    return {c.run.run_id: _outcome(c, outcomes[c.run.run_id]) for c in todo}
