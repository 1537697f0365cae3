"""Stored token traces: the ``token_traces`` rows of runs, written as items finish.

A trace is keyed by ``(run_id, item_id, source)`` (see :class:`evalpipe.traces.StoredTrace`);
writing one again replaces it, so a resumed capture or a re-scored item never duplicates. An
item that could not be scored is stored as a row with ``error`` and no trace: an
infrastructure error, reported and never read as a trace. A stored trace is never replaced
by an error for the same key (as with samples, the answer wins over the failure).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evalpipe.records import utcnow
from evalpipe.store import Store
from evalpipe.store.schema import token_traces
from evalpipe.traces import DECODE, StoredTrace, decode, encode

_KEY = ("run_id", "item_id", "source")
_IDS_PER_QUERY = 400  # SQLite caps the bound parameters of one statement


def put_traces(store: Store, traces: Iterable[StoredTrace]) -> None:
    """Store traces in one transaction, replacing any stored under the same key."""
    now = utcnow()
    rows = [
        {
            "run_id": t.run_id,
            "item_id": t.item_id,
            "source": t.source,
            "start": t.start,
            "k": t.trace.k,
            "n_tokens": t.trace.n,
            "data": encode(t.trace),
            "error": None,
            "stored_at": now,
        }
        for t in traces
    ]
    _upsert(store, rows, replace_traces=True)


def put_trace_errors(store: Store, run_id: str, source: str, errors: Mapping[str, str]) -> None:
    """Record items of ``run_id`` that could not be scored for ``source``, with the reason;
    an item that already has a trace keeps it."""
    now = utcnow()
    rows = [
        {
            "run_id": run_id,
            "item_id": item_id,
            "source": source,
            "start": 0,
            "k": 0,
            "n_tokens": 0,
            "data": None,
            "error": reason,
            "stored_at": now,
        }
        for item_id, reason in errors.items()
    ]
    _upsert(store, rows, replace_traces=False)


def _upsert(store: Store, rows: list[dict[str, Any]], *, replace_traces: bool) -> None:
    if not rows:
        return
    # Key order, as for samples: PostgreSQL writers taking rows in different orders deadlock.
    rows.sort(key=lambda r: (r["run_id"], r["item_id"], r["source"]))
    with store.transaction(write=True) as conn:
        conn.execute(_upsert_statement(conn, replace_traces), rows)


def _upsert_statement(conn: Connection, replace_traces: bool) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(token_traces)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(token_traces)
    updated = {c.name: stmt.excluded[c.name] for c in token_traces.c if c.name not in _KEY}
    # An error row replaces only another error row; a trace replaces anything.
    where = None if replace_traces else token_traces.c.data.is_(None)
    return stmt.on_conflict_do_update(index_elements=list(_KEY), set_=updated, where=where)


def read_traces(
    store: Store,
    run_id: str,
    source: str = DECODE,
    item_ids: Iterable[str] | None = None,
) -> dict[str, StoredTrace]:
    """The stored traces of ``run_id`` for ``source``, by item id (error rows left out)."""
    base = sa.select(token_traces.c.item_id, token_traces.c.start, token_traces.c.data).where(
        token_traces.c.run_id == run_id,
        token_traces.c.source == source,
        token_traces.c.data.is_not(None),
    )
    out: dict[str, StoredTrace] = {}
    with store.transaction(write=False) as conn:
        for query in _by_items(base, item_ids):
            for item_id, start, data in conn.execute(query):
                out[item_id] = StoredTrace(run_id, item_id, source, int(start), decode(data))
    return out


def _by_items(base: sa.Select[Any], item_ids: Iterable[str] | None) -> list[sa.Select[Any]]:
    if item_ids is None:
        return [base]
    wanted = sorted(set(item_ids))
    return [
        base.where(token_traces.c.item_id.in_(wanted[i : i + _IDS_PER_QUERY]))
        for i in range(0, len(wanted), _IDS_PER_QUERY)
    ]


def read_trace_errors(store: Store, run_id: str, source: str = DECODE) -> dict[str, str]:
    """Items of ``run_id`` that could not be scored for ``source``, with the reason."""
    query = sa.select(token_traces.c.item_id, token_traces.c.error).where(
        token_traces.c.run_id == run_id,
        token_traces.c.source == source,
        token_traces.c.data.is_(None),
    )
    with store.transaction(write=False) as conn:
        return {item_id: error for item_id, error in conn.execute(query)}


def trace_sources(store: Store, run_id: str) -> dict[str, int]:
    """``source`` → how many items of ``run_id`` have a trace for it."""
    query = (
        sa.select(token_traces.c.source, sa.func.count())
        .where(token_traces.c.run_id == run_id, token_traces.c.data.is_not(None))
        .group_by(token_traces.c.source)
    )
    with store.transaction(write=False) as conn:
        return {source: int(n) for source, n in conn.execute(query)}


def traced_items(store: Store, run_id: str, source: str = DECODE) -> set[str]:
    """Item ids of ``run_id`` with a trace for ``source`` (what a capture need not redo)."""
    query = sa.select(token_traces.c.item_id).where(
        token_traces.c.run_id == run_id,
        token_traces.c.source == source,
        token_traces.c.data.is_not(None),
    )
    with store.transaction(write=False) as conn:
        return set(conn.execute(query).scalars())


def trace_stamp(store: Store, run_ids: Iterable[str]) -> dict[str, list[Any]]:
    """Per run id with traces, a small JSON value that changes whenever its traces change
    (rows per source and the newest write): what a cached comparison is keyed on. One
    query for all runs; runs without traces are absent."""
    ids = sorted(set(run_ids))
    out: dict[str, list[Any]] = {}
    with store.transaction(write=False) as conn:
        for i in range(0, len(ids), _IDS_PER_QUERY):
            query = (
                sa.select(
                    token_traces.c.run_id,
                    token_traces.c.source,
                    sa.func.count(),
                    sa.func.max(token_traces.c.stored_at),
                )
                .where(token_traces.c.run_id.in_(ids[i : i + _IDS_PER_QUERY]))
                .group_by(token_traces.c.run_id, token_traces.c.source)
                .order_by(token_traces.c.run_id, token_traces.c.source)
            )
            for run_id, source, n, newest in conn.execute(query):
                out.setdefault(run_id, []).append([source, int(n), newest])
    return out


def trace_rows(store: Store, run_id: str) -> list[tuple[str, str, int, bytes | None, str | None]]:
    """Every ``token_traces`` row of ``run_id`` as stored — ``(item_id, source, start, data,
    error)``, data not decoded, errors included — in no particular order: what an export
    copies as it is."""
    t = token_traces.c
    query = sa.select(t.item_id, t.source, t.start, t.data, t.error).where(t.run_id == run_id)
    with store.transaction(write=False) as conn:
        return [
            (item, source, int(start), None if data is None else bytes(data), error)
            for item, source, start, data, error in conn.execute(query)
        ]
