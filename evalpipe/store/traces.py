"""Stored token traces: the ``token_traces`` rows of runs, written as items finish.

A trace is keyed by ``(run_id, item_id, source)`` (see :class:`evalpipe.traces.StoredTrace`);
writing one again replaces it, so a resumed capture or a re-scored item never duplicates. An
item that could not be scored is stored as a row with ``error`` and no trace: an
infrastructure error, reported and never read as a trace. A stored trace is never replaced
by an error for the same key (as with samples, the answer wins over the failure).

A run's own answer and its trace are written together (:func:`put_answer`, one transaction)
and the trace keeps the digest of that answer (``answer_sha256``). Readers check it against
the stored sample: a trace whose answer is no longer the stored one is not read (nor counted
as captured, so a capture redoes it). Traces stored before schema 5 have no digest and are
read as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evalpipe.errors import EvalpipeError
from evalpipe.records import Sample, utcnow
from evalpipe.store import Store
from evalpipe.store.rows import sample_to_row
from evalpipe.store.schema import samples, token_traces
from evalpipe.traces import DECODE, StoredTrace, answer_digest, decode, encode

_KEY = ("run_id", "item_id", "source")
_IDS_PER_QUERY = 400  # SQLite caps the bound parameters of one statement


def _row(t: StoredTrace, now: str) -> dict[str, Any]:
    return {
        "run_id": t.run_id,
        "item_id": t.item_id,
        "source": t.source,
        "start": t.start,
        "k": t.trace.k,
        "n_tokens": t.trace.n,
        "data": encode(t.trace),
        "error": None,
        "stored_at": now,
        "answer_sha256": t.answer,
    }


def put_traces(store: Store, traces: Iterable[StoredTrace]) -> None:
    """Store traces in one transaction, replacing any stored under the same key."""
    now = utcnow()
    _upsert(store, [_row(t, now) for t in traces], replace_traces=True)


def put_encoded(store: Store, rows: Iterable[dict[str, Any]]) -> None:
    """Store trace rows whose ``data`` is already encoded (an import: the blob as the file
    holds it, checked, never decoded all at once), replacing any under the same key."""
    now = utcnow()
    _upsert(store, [{**r, "error": None, "stored_at": now} for r in rows], replace_traces=True)


def put_answer(store: Store, sample: Sample, trace: StoredTrace | None) -> None:
    """Store a run's answer and, for a good one, its decode-path trace, in ONE transaction:
    two processes answering one item leave one's answer with that same one's trace, never
    one's answer with the other's trace. The trace keeps the answer's digest."""
    row = sample_to_row(sample)
    try:
        with store.transaction(write=True) as conn:
            # A stored good answer is never replaced by an error (the statement's rule).
            conn.execute(store.upsert_samples, [row])
            if trace is not None and row["error"] is None:
                bound = replace(trace, answer=answer_digest(row["output"] or ""))
                conn.execute(_upsert_statement(conn, True), [_row(bound, utcnow())])
    except sa.exc.IntegrityError as exc:
        store.get_run(sample.run_id)  # a missing run says so
        raise EvalpipeError(f"store {store.name}: cannot store a sample ({exc.orig})") from exc


def put_trace_for_answer(store: Store, trace: StoredTrace, output: str) -> bool:
    """Store ``trace`` (a regenerated one, completing a capture) only if the stored answer of
    its item is still ``output``, checked and written in one transaction; whether it was."""
    query = sa.select(samples.c.output).where(
        samples.c.run_id == trace.run_id, samples.c.item_id == trace.item_id
    )
    with store.transaction(write=True) as conn:
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()  # SQLite's BEGIN IMMEDIATE already holds the lock
        if conn.execute(query).scalar_one_or_none() != output:
            return False
        bound = replace(trace, answer=answer_digest(output))
        conn.execute(_upsert_statement(conn, True), [_row(bound, utcnow())])
    return True


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
            "answer_sha256": None,
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


def _traces_with_answers(columns: Sequence[Any], run_id: str, source: str) -> sa.Select[Any]:
    """``columns`` of the run's traces for ``source``, with each one's answer digest and its
    item's stored answer (for :func:`_bound`)."""
    t = token_traces.c
    joined = token_traces.outerjoin(
        samples, sa.and_(samples.c.run_id == t.run_id, samples.c.item_id == t.item_id)
    )
    return (
        sa.select(*columns, t.answer_sha256, samples.c.output)
        .select_from(joined)
        .where(t.run_id == run_id, t.source == source, t.data.is_not(None))
    )


def _bound(digest: str | None, output: str | None) -> bool:
    """Whether a trace describes the stored answer (a trace without a digest: unchecked)."""
    return digest is None or (output is not None and answer_digest(output) == digest)


def read_traces(
    store: Store,
    run_id: str,
    source: str = DECODE,
    item_ids: Iterable[str] | None = None,
) -> dict[str, StoredTrace]:
    """The stored traces of ``run_id`` for ``source``, by item id (error rows left out, and a
    trace whose answer is not the stored answer left out). A stored blob that cannot be read
    (damaged, or beyond the bounds of :func:`evalpipe.traces.decode`) is an error naming it."""
    t = token_traces.c
    base = _traces_with_answers([t.item_id, t.start, t.data], run_id, source)
    out: dict[str, StoredTrace] = {}
    with store.transaction(write=False) as conn:
        for query in _by_items(base, item_ids):
            for item_id, start, data, digest, output in conn.execute(query):
                if not _bound(digest, output):
                    continue
                try:
                    trace = decode(data)
                except ValueError as exc:
                    raise EvalpipeError(
                        f"the stored token trace of item {item_id!r} of run {run_id} cannot be "
                        f"read ({exc}): the store was changed outside evalpipe; copy the run's "
                        f"other data to a new store (`evalpipe store copy`) or delete the run"
                    ) from exc
                out[item_id] = StoredTrace(run_id, item_id, source, int(start), trace, digest)
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
    """Item ids of ``run_id`` with a trace for ``source`` that describes the stored answer
    (what a capture need not redo)."""
    query = _traces_with_answers([token_traces.c.item_id], run_id, source)
    with store.transaction(write=False) as conn:
        return {item for item, digest, output in conn.execute(query) if _bound(digest, output)}


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


TraceRow = tuple[str, str, int, "bytes | None", "str | None", "str | None"]
"""A stored trace row: ``(item_id, source, start, data, error, answer_sha256)``."""


def trace_rows(store: Store, run_id: str) -> list[TraceRow]:
    """Every ``token_traces`` row of ``run_id`` as stored — ``(item_id, source, start, data,
    error, answer_sha256)``, data not decoded, errors included — in no particular order: what
    an export copies as it is."""
    t = token_traces.c
    query = sa.select(t.item_id, t.source, t.start, t.data, t.error, t.answer_sha256).where(
        t.run_id == run_id
    )
    with store.transaction(write=False) as conn:
        return [
            (item, source, int(start), None if data is None else bytes(data), error, digest)
            for item, source, start, data, error, digest in conn.execute(query)
        ]
