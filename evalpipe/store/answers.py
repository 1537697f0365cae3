"""Bulk reads of stored samples for comparison: many runs in one query, only the fields asked.

A comparison reads a handful of a sample's sixteen columns (``evalpipe.compare.core.Answer``:
item id, whether the engine answered, the verdict, the output, the prompt length, and for
flip examples the target and extracted answers). Reading whole :class:`~evalpipe.records.Sample`
records to build those costs more than the comparison itself (a dashboard of 1 000 runs reads
1.3 M samples), so these functions select only the columns behind the fields asked for, for a
chunk of runs per statement, and hand each row's values straight to a constructor.

The store cannot import the comparison core (imports point down), so the caller passes the
constructor: ``read_answers(store, ids, Answer)`` builds core ``Answer`` s, whose positional
fields are :data:`ANSWER_FIELDS` in this order.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evalpipe.store import Store
from evalpipe.store.schema import samples

T = TypeVar("T")

ANSWER_FIELDS = (
    "item_id",
    "ok",
    "correct",
    "output",
    "prompt_tokens",
    "target",
    "extracted",
    "correct_by",
)
"""The fields of a comparison's answer, in ``Answer``'s positional order."""

LIGHT_FIELDS = ANSWER_FIELDS[:5]
"""What figures need: no target and no JSON maps (a flip example's are read apart)."""

# SQLite caps the bound parameters of a statement (999 before 3.32); stay well under it.
RUNS_PER_QUERY = 500
KEYS_PER_QUERY = 400  # item ids of one run per statement; a statement binds at most twice that

_JSON_FIELDS = frozenset({"extracted", "correct_by", "meta"})
_DERIVED: Mapping[str, sa.ColumnElement[Any]] = {
    # Integers rather than SQL booleans: no per-value result processing on the way out.
    "ok": sa.case((samples.c.error.is_(None), 1), else_=0),
    "correct": sa.case((samples.c.correct, 1), else_=0),
    "output": sa.func.coalesce(samples.c.output, ""),
}


def _columns(fields: Sequence[str]) -> list[sa.ColumnElement[Any]]:
    unknown = [f for f in fields if f not in _DERIVED and f not in samples.c]
    if unknown or not fields:
        raise ValueError(f"unknown sample fields {unknown} (known: {list(samples.c.keys())})")
    return [
        (_DERIVED[f] if f in _DERIVED else samples.c[f]).label(f"f_{i}")
        for i, f in enumerate(fields)
    ]


def _fetch(conn: Connection, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``query`` as the driver returns them (plain tuples).

    SQLAlchemy's result rows cost about as much again as the fetch itself (2 of 4 µs a
    sample); a bulk read of 1.3 M samples skips them. Only plain text and integer values
    pass here, which need no SQLAlchemy result processing on either database.
    """
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional:  # SQLite: qmark; psycopg: named (pyformat)
        params = [params[name] for name in compiled.positiontup or ()]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows
    finally:
        cursor.close()


def _columns_of(
    fields: Sequence[str], rows: Sequence[Sequence[Any]], skip: int, parse_json: bool = True
) -> list[Any]:
    """The rows' values column by column from column ``skip`` on, converted as the fields
    promise: ``ok`` and ``correct`` bools (a NULL verdict is not correct), JSON maps parsed
    (or, without ``parse_json``, their stored text).

    Column-wise, because per-row Python work is what a bulk read costs: a column is one
    comprehension, and the JSON maps of all rows are parsed in one ``json.loads`` (per-call
    overhead, not parsing, dominates small maps)."""
    columns: list[Any] = []
    for i, name in enumerate(fields, start=skip):
        if name in ("ok", "correct"):
            columns.append([r[i] == 1 for r in rows])
        elif name in _JSON_FIELDS and parse_json:
            columns.append(json.loads("[" + ",".join(r[i] for r in rows) + "]"))
        else:
            columns.append([r[i] for r in rows])
    return columns


def read_answers(
    store: Store,
    run_ids: Iterable[str],
    make: Callable[..., T],
    fields: Sequence[str] = ANSWER_FIELDS,
    fill: Sequence[Any] = (),
    *,
    parse_json: bool = True,
) -> dict[str, dict[str, T]]:
    """Each run's samples as ``make(*values, *fill)`` by item id, ``values`` in ``fields``
    order; ``fill`` completes the arguments of fields not read (the same for every sample);
    without ``parse_json`` the JSON maps are their stored text.

    ``fields`` are sample columns plus ``ok`` (the engine answered: no infrastructure error);
    ``correct`` is a bool (NULL is not correct) and ``output`` text ("" for none), as a
    comparison reads them. Every run asked for is in the result, a run without samples (or
    unknown) with an empty dict. Items come in no particular order.

    Example::

        from evalpipe.compare.core import Answer
        answers = read_answers(store, [run.run_id, baseline.run_id], Answer)
    """
    if "item_id" not in fields:
        raise ValueError("fields must include item_id: answers are keyed by it")
    out: dict[str, dict[str, T]] = {i: {} for i in sorted(set(run_ids))}
    item = list(fields).index("item_id")
    for rows in _rows_of_runs(store, out, fields):
        for run_id, group in itertools.groupby(rows, operator.itemgetter(0)):
            values = _columns_of(fields, list(group), 1, parse_json)
            fixed = [itertools.repeat(v) for v in fill]
            out[run_id] = dict(zip(values[item], map(make, *values, *fixed), strict=False))
    return out


def _rows_of_runs(
    store: Store, run_ids: Iterable[str], fields: Sequence[str]
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows ``(run_id, *fields)`` of the runs' samples, a statement per
    :data:`RUNS_PER_QUERY` runs, each chunk's rows in run order."""
    ids = sorted(set(run_ids))
    columns = [samples.c.run_id, *_columns(fields)]
    with store.engine.connect() as conn:
        for start in range(0, len(ids), RUNS_PER_QUERY):
            chunk = ids[start : start + RUNS_PER_QUERY]
            # In run order, which the primary key (run_id, item_id) gives without sorting.
            query = sa.select(*columns).where(samples.c.run_id.in_(chunk))
            yield _fetch(conn, query.order_by(samples.c.run_id))


def read_columns(
    store: Store, run_ids: Iterable[str], fields: Sequence[str], *, parse_json: bool = True
) -> dict[str, list[Any]]:
    """Every sample of the runs, column by column: ``run_id`` and then ``fields`` (as in
    :func:`read_answers`; with ``parse_json`` False the JSON maps stay their stored text),
    the runs' rows together in run id order, items in no particular order. For tables of
    many samples (a DataFrame), where building one object a sample is the cost.

    Example::

        columns = read_columns(store, [run.run_id], ["item_id", "correct"])
    """
    if "run_id" in fields:
        raise ValueError("run_id is always the first column; do not ask for it")
    out: dict[str, list[Any]] = {name: [] for name in ("run_id", *fields)}
    for rows in _rows_of_runs(store, run_ids, fields):
        out["run_id"] += [r[0] for r in rows]
        for name, values in zip(fields, _columns_of(fields, rows, 1, parse_json), strict=True):
            out[name] += values
    return out


def read_fields(
    store: Store, keys: Iterable[tuple[str, str]], fields: Sequence[str]
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The ``fields`` of a few samples named by ``(run_id, item_id)``, converted as in
    :func:`read_answers`; samples not stored are left out. For what only some items need,
    e.g. the target and extracted answers of a comparison's flips."""
    by_run: dict[str, list[str]] = {}
    for run_id, item_id in sorted(set(keys)):
        by_run.setdefault(run_id, []).append(item_id)
    columns = [samples.c.run_id, samples.c.item_id, *_columns(fields)]
    out: dict[tuple[str, str], tuple[Any, ...]] = {}
    with store.engine.connect() as conn:
        for chunk in _key_chunks(by_run):
            # run_id = ? AND item_id IN (...) per run: both databases answer each from the
            # primary key, where a (run_id, item_id) IN (...) of row values scans in SQLite.
            where = sa.or_(
                *(sa.and_(samples.c.run_id == r, samples.c.item_id.in_(i)) for r, i in chunk)
            )
            rows = _fetch(conn, sa.select(*columns).where(where))
            values = zip(*_columns_of(fields, rows, 2), strict=True)
            for row, v in zip(rows, values, strict=True):
                out[(row[0], row[1])] = v
    return out


def _key_chunks(by_run: Mapping[str, list[str]]) -> Iterable[list[tuple[str, list[str]]]]:
    """``(run_id, item_ids)`` groups, at most :data:`KEYS_PER_QUERY` parameters a statement."""
    chunk: list[tuple[str, list[str]]] = []
    size = 0
    for run_id, items in by_run.items():
        for start in range(0, len(items), KEYS_PER_QUERY):
            part = items[start : start + KEYS_PER_QUERY]
            if chunk and size + 1 + len(part) > KEYS_PER_QUERY * 2:
                yield chunk
                chunk, size = [], 0
            chunk.append((run_id, part))
            size += 1 + len(part)
    if chunk:
        yield chunk
