"""Which runs a frame holds: run ids and filters (tags, model, task, layout, status, time),
checked once into a :class:`Selection`, then answered by one or two store queries."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import PurePath
from typing import TYPE_CHECKING, TypeAlias, TypedDict

from evalpipe.errors import EvalpipeError
from evalpipe.records import RUN_STATUSES, Run

if TYPE_CHECKING:
    from typing import Unpack

    from evalpipe.store import Store

Location: TypeAlias = "str | os.PathLike[str] | Store | None"
"""Where a reader reads: a store's path or URL (opened and closed by the call; None:
``$EVALPIPE_STORE`` or ``./evalpipe.db``), or a store already open
(:func:`evalpipe.store.open_store`), for many frames over one connection."""
Names = str | Iterable[str] | None
"""One value or several (a list, a tuple, a pandas Series); None: no filter."""
When = str | date | datetime | None
"""A date or time: ISO 8601 text (``2026-11-30``, ``2026-11-30T12:00:00+01:00``) or a
``datetime``/``date``; without a time zone it is UTC."""


class Filters(TypedDict, total=False):
    """The filters of every reader that selects runs (keyword arguments; see
    :class:`Selection`): ``tags``, ``model``, ``task``, ``layout``, ``status`` (each one
    value or several), ``since`` and ``until``."""

    tags: Names
    model: Names
    task: Names
    layout: Names
    status: Names
    since: When
    until: When


def _names(value: Names) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(dict.fromkeys(str(v) for v in value))


def _when(value: When, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        parsed = stored_time(value)
        if parsed is None:
            raise EvalpipeError(
                f"{name} {value!r} is not a date or time: use ISO 8601, e.g. 2026-11-30 or "
                "2026-11-30T12:00:00+00:00"
            )
        return parsed
    moment = value if isinstance(value, datetime) else datetime(*value.timetuple()[:3])
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def stored_time(text: str) -> datetime | None:
    """A stored ISO 8601 time (``Z`` too), in UTC when it names no zone; None if it is none."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Selection:
    """Runs with one of ``run_ids`` (ids or unique prefixes; None: every run, an empty list:
    none, so the ids of an empty frame select nothing) that match every
    filter given: all of ``tags``; one of ``models`` (the name or path as run, or its last
    part: ``gemma3-270m`` matches ``/…/gemma3-270m``), ``tasks``, ``layouts`` (any spelling:
    ``TP2DP2`` is ``dp2tp2``) and ``statuses``; started at or after ``since`` and before
    ``until``."""

    run_ids: tuple[str, ...] | None = None
    tags: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    layouts: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def of(cls, run_ids: Names = None, **filters: Unpack[Filters]) -> Selection:
        """The selection these arguments describe; a bad layout, status or time is refused
        before any store is read."""
        from evalpipe.layout import parse

        statuses = _names(filters.get("status"))
        unknown = [s for s in statuses if s not in RUN_STATUSES]
        if unknown:
            raise EvalpipeError(
                f"unknown run status {', '.join(map(repr, unknown))}: one of "
                f"{', '.join(RUN_STATUSES)}"
            )
        return cls(
            run_ids=None if run_ids is None else _names(run_ids),
            tags=_names(filters.get("tags")),
            models=_names(filters.get("model")),
            tasks=_names(filters.get("task")),
            layouts=tuple(dict.fromkeys(parse(x).canonical for x in _names(filters.get("layout")))),
            statuses=statuses,
            since=_when(filters.get("since"), "since"),
            until=_when(filters.get("until"), "until"),
        )

    def matches(self, run: Run) -> bool:
        """Whether ``run`` passes every filter (the run ids aside)."""
        c = run.config
        if not set(self.tags) <= set(run.tags):
            return False
        if self.models and not {c.model, PurePath(c.model).name} & set(self.models):
            return False
        for wanted, value in (
            (self.tasks, c.task),
            (self.layouts, c.layout),
            (self.statuses, run.status),
        ):
            if wanted and value not in wanted:
                return False
        if self.since is None and self.until is None:
            return True
        started = stored_time(run.started_at)
        return (
            started is not None
            and (self.since is None or started >= self.since)
            and (self.until is None or started < self.until)
        )


@contextmanager
def reading(store: Location) -> Iterator[Store]:
    """The store at ``store`` for reading, opened here (never created) unless it is open."""
    from evalpipe.store import Store, open_store

    if isinstance(store, Store):
        yield store
        return
    with open_store(store, create=False) as opened:
        yield opened


def select_runs(store: Store, selection: Selection) -> list[Run]:
    """The runs of ``selection``, newest first: one query for the filters, or for run ids
    two (ids resolved, runs read); unknown or ambiguous ids are named in one error."""
    from evalpipe.store.runreads import read_runs, resolve_run_ids

    if selection.run_ids is not None:
        found = read_runs(store, resolve_run_ids(store, selection.run_ids))
    else:

        def one(values: tuple[str, ...]) -> str | None:
            return values[0] if len(values) == 1 else None  # several: filtered below

        found = store.list_runs(
            task=one(selection.tasks),
            layout=one(selection.layouts),
            status=one(selection.statuses),
        )
    return [r for r in found if selection.matches(r)]
