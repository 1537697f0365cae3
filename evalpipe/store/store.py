"""The store: runs, samples and prompts in one SQL database (SQLite file or PostgreSQL).

Every method is one short transaction, committed before it returns, so a process killed at
any point (``kill -9``) loses nothing that a call returned for. Samples are keyed by
``(run_id, item_id)``: writing one twice replaces it (a resumed run retrying an errored item)
and can never duplicate it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from evalpipe.errors import EvalpipeError, StoreError
from evalpipe.records import GateRecord, Run, Sample, summary_of
from evalpipe.store import gates, schema
from evalpipe.store.connect import BEGIN_IMMEDIATE, Location, create_engine, resolve
from evalpipe.store.pg import schema_lock
from evalpipe.store.rows import (
    run_from_row,
    run_to_row,
    sample_to_row,
    samples_from_rows,
)
from evalpipe.store.schema import prompts, runs, samples, token_traces

_SAMPLE_KEY = ("run_id", "item_id")
_AMBIGUOUS_SHOWN = 10
_EMPTY = "{} is empty, not an evalpipe store: point --store at one (`evalpipe run` makes one)"


def open_store(
    url_or_path: str | os.PathLike[str] | None = None, *, create: bool = True, empty_ok: bool = True
) -> Store:
    """Open (creating or migrating as needed) the store at a path or SQLAlchemy URL.

    ``None`` means ``$EVALPIPE_STORE``, else ``./evalpipe.db``. A plain path is an SQLite
    file; anything with ``://`` is a URL (``sqlite:///…``, ``postgresql://…``). With
    ``create=False`` a missing SQLite file is an error instead of a new store; with ``empty_ok``
    False so is an empty file or database, instead of being given the tables (``StoreError``).

    Example::

        with open_store("runs/evalpipe.db") as store:
            print([r.run_id for r in store.list_runs(limit=5)])
    """
    loc = resolve(url_or_path)
    if not empty_ok and loc.path is not None and loc.path.is_file() and not loc.path.stat().st_size:
        raise StoreError(_EMPTY.format(loc.name))  # checked first: connecting writes a header
    engine = create_engine(loc, create=create)
    try:
        if not empty_ok and not sa.inspect(engine).get_table_names():
            raise StoreError(_EMPTY.format(loc.name))  # or opening would make it a store
        with schema_lock(engine):
            applied = schema.ensure_schema(engine, loc.name)
    except EvalpipeError:
        engine.dispose()
        raise
    except (sa.exc.DBAPIError, sqlite3.Error) as exc:
        engine.dispose()
        raise StoreError(_open_failure(loc.name, exc)) from exc
    return Store(engine, loc, applied)


def describe_store(url_or_path: str | os.PathLike[str] | None = None) -> str:
    """Where :func:`open_store` would look, for messages (SQLite path, or URL sans password)."""
    return resolve(url_or_path).name


def migrate(store: Store) -> list[str]:
    """Bring ``store`` to the current schema; return the migrations applied since it opened.

    :func:`open_store` already migrates, so this mostly reports what opening did.
    """
    with schema_lock(store.engine):
        store.migrations_applied += schema.ensure_schema(store.engine, store.name)
    return list(store.migrations_applied)


def _open_failure(name: str, exc: BaseException) -> str:
    detail = str(getattr(exc, "orig", None) or exc)
    if any(s in detail for s in ("not a database", "malformed", "encrypted")):
        return (
            f"{name} is not an evalpipe store or it is corrupted ({detail}): move it aside, "
            "or point --store / EVALPIPE_STORE elsewhere"
        )
    return f"cannot open store {name}: {detail}"


class Store:
    """Runs, samples and prompts; see :func:`open_store`. Safe to share between threads."""

    def __init__(self, engine: Engine, location: Location, applied: list[str]) -> None:
        self.engine = engine
        self.name = location.name
        """The SQLite file path, or the URL with its password hidden: for messages."""
        self.path: Path | None = location.path
        self.location = location
        self.migrations_applied = applied
        # Same pool; transactions from here take SQLite's write lock at BEGIN.
        self._writer = engine.execution_options(**{BEGIN_IMMEDIATE: True})
        self.upsert_samples = _upsert_samples(engine.dialect.name)

    def __repr__(self) -> str:
        return f"Store({self.name!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    # --- transactions ------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Connection]:
        """One transaction, committed on exit; ``write`` takes SQLite's write lock at BEGIN.
        For the modules beside this one that keep a concept's rows (token traces)."""
        try:
            with (self._writer if write else self.engine).begin() as conn:
                yield conn
        except sa.exc.IntegrityError:
            raise  # callers turn these into specific messages
        except sa.exc.DBAPIError as exc:
            raise StoreError(f"store {self.name}: {exc.orig}") from exc

    # --- runs --------------------------------------------------------------------------

    def create_run(
        self,
        run: Run,
        samples: Iterable[Sample] = (),
        prompts: Mapping[str, str] | None = None,
    ) -> None:
        """Store a new run, with its samples and prompts if given, in one transaction."""
        rows = [sample_to_row(s) for s in samples]
        if any(r["run_id"] != run.run_id for r in rows):
            raise ValueError(f"create_run({run.run_id}): every sample must belong to the run")
        try:
            with self.transaction(write=True) as conn:
                conn.execute(runs.insert(), run_to_row(run))
                if rows:
                    conn.execute(self.upsert_samples, rows)
                if prompts:
                    _insert_prompts(conn, prompts)
        except sa.exc.IntegrityError as exc:
            raise EvalpipeError(f"run {run.run_id} already exists in {self.name}") from exc

    def update_run(self, run: Run) -> None:
        """Replace the stored record of ``run.run_id`` (every field) with ``run``."""
        with self.transaction(write=True) as conn:
            result = conn.execute(
                runs.update().where(runs.c.run_id == run.run_id).values(run_to_row(run))
            )
            if result.rowcount == 0:
                raise self._no_run(run.run_id)

    def get_run(self, run_id: str) -> Run:
        """The run with this id, or the only one whose id starts with it."""
        with self.transaction(write=False) as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
            if row is not None:
                return run_from_row(row)
            matches = (
                conn.execute(
                    sa.select(runs)
                    .where(runs.c.run_id.startswith(run_id, autoescape=True))
                    .order_by(runs.c.run_id)
                    .limit(_AMBIGUOUS_SHOWN + 1)
                )
                .mappings()
                .all()
            )
        if run_id and len(matches) == 1:
            return run_from_row(matches[0])
        if not run_id or not matches:
            raise self._no_run(run_id)
        ids = [m["run_id"] for m in matches[:_AMBIGUOUS_SHOWN]]
        more = ", …" if len(matches) > _AMBIGUOUS_SHOWN else ""
        raise EvalpipeError(
            f"run id {run_id!r} is ambiguous: it starts {', '.join(ids)}{more}; give more of the id"
        )

    def find_run(self, run_id: str) -> Run | None:
        """The run with exactly this id, or ``None``."""
        with self.transaction(write=False) as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return None if row is None else run_from_row(row)

    def list_runs(
        self,
        *,
        task: str | None = None,
        model: str | None = None,
        layout: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs matching every filter given, newest first."""
        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
        for column, value in (
            (runs.c.task, task),
            (runs.c.model, model),
            (runs.c.layout, layout),
            (runs.c.status, status),
        ):
            if value is not None:
                query = query.where(column == value)
        if limit is not None:
            query = query.limit(limit)
        with self.transaction(write=False) as conn:
            return [run_from_row(r) for r in conn.execute(query).mappings()]

    def find_unfinished(self, config_hash: str) -> Run | None:
        """The newest run with this config that did not finish (running, failed, aborted)."""
        return self._newest(runs.c.config_hash == config_hash, runs.c.status != "finished")

    def find_finished(self, config_hash: str) -> Run | None:
        """The newest finished run with this config (a repeat that need not run again)."""
        return self._newest(runs.c.config_hash == config_hash, runs.c.status == "finished")

    def _newest(self, *conditions: sa.ColumnElement[bool]) -> Run | None:
        query = (
            sa.select(runs)
            .where(*conditions)
            .order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
            .limit(1)
        )
        with self.transaction(write=False) as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else run_from_row(row)

    def delete_run(self, run_id: str) -> None:
        """Delete a run, its samples and token traces (prompts stay: other runs may share them)."""
        with self.transaction(write=True) as conn:
            # Explicit rather than only ON DELETE CASCADE, which SQLite applies only on
            # connections that enabled foreign keys.
            conn.execute(samples.delete().where(samples.c.run_id == run_id))
            conn.execute(token_traces.delete().where(token_traces.c.run_id == run_id))
            if conn.execute(runs.delete().where(runs.c.run_id == run_id)).rowcount == 0:
                raise self._no_run(run_id)

    def _no_run(self, run_id: str) -> EvalpipeError:
        return EvalpipeError(
            f"no run {run_id!r} in {self.name}; `evalpipe runs list` shows the ids"
        )

    def _check_exists(self, conn: Connection, run_id: str) -> None:
        found = conn.execute(sa.select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
        if found is None:
            raise self._no_run(run_id)

    # --- prompts -----------------------------------------------------------------------

    def put_prompts(self, texts: Mapping[str, str]) -> None:
        """Store prompt texts by hash; hashes already stored are left as they are."""
        if texts:
            with self.transaction(write=True) as conn:
                _insert_prompts(conn, texts)

    def get_prompt(self, prompt_hash: str) -> str | None:
        return self.get_prompts([prompt_hash]).get(prompt_hash)

    def get_prompts(self, hashes: Iterable[str]) -> dict[str, str]:
        """The stored texts of these hashes (unknown hashes are left out)."""
        wanted = sorted(set(hashes))
        found: dict[str, str] = {}
        with self.transaction(write=False) as conn:
            # Chunked: SQLite caps the number of bound parameters per statement.
            for i in range(0, len(wanted), 500):
                query = sa.select(prompts).where(prompts.c.prompt_hash.in_(wanted[i : i + 500]))
                found.update((r.prompt_hash, r.text) for r in conn.execute(query))
        return found

    # --- samples -----------------------------------------------------------------------

    def put_sample(self, sample: Sample) -> None:
        """Store one sample now (upsert; see :meth:`put_samples`)."""
        self.put_samples([sample])

    def put_samples(self, batch: Iterable[Sample]) -> None:
        """Store samples in one transaction, replacing any stored with the same item id.

        A stored good sample (no ``error``) is never replaced by an errored one, so two
        attempts racing on one item keep the answer, not the failure.
        """
        # In key order: PostgreSQL locks rows as it upserts them, and two writers taking
        # overlapping items in different orders would deadlock (one of them then fails).
        rows = sorted((sample_to_row(s) for s in batch), key=lambda r: (r["run_id"], r["item_id"]))
        if not rows:
            return
        try:
            with self.transaction(write=True) as conn:
                conn.execute(self.upsert_samples, rows)
        except sa.exc.IntegrityError as exc:
            with self.transaction(write=False) as conn:
                for run_id in sorted({r["run_id"] for r in rows}):
                    self._check_exists(conn, run_id)
            raise EvalpipeError(f"store {self.name}: cannot store samples ({exc.orig})") from exc

    def samples(self, run_id: str) -> list[Sample]:
        """The run's samples, numeric item ids in numeric order, then the others as text."""
        query = sa.select(samples).where(samples.c.run_id == run_id).order_by(*_ITEM_ORDER)
        with self.transaction(write=False) as conn:
            found = samples_from_rows(conn.execute(query).mappings().all())
            if not found:
                self._check_exists(conn, run_id)
        return found

    def done_item_ids(self, run_id: str) -> set[str]:
        """Item ids with a good sample (no error): what a resumed run does not send again."""
        query = sa.select(samples.c.item_id).where(
            samples.c.run_id == run_id, samples.c.error.is_(None)
        )
        with self.transaction(write=False) as conn:
            return set(conn.execute(query).scalars())

    def first_errors(self, run_id: str, n: int = 3) -> list[str]:
        """Up to ``n`` errored samples as ``"item ID: error"``, in item order."""
        query = (
            sa.select(samples.c.item_id, samples.c.error)
            .where(samples.c.run_id == run_id, samples.c.error.is_not(None))
            .order_by(*_ITEM_ORDER)
            .limit(n)
        )
        with self.transaction(write=False) as conn:
            return [f"item {r.item_id}: {r.error}" for r in conn.execute(query)]

    def summarize(self, run_id: str) -> dict[str, Any]:
        """Counts and accuracies recomputed from the stored samples (``Run`` field names).

        ``run.with_(**store.summarize(run.run_id))`` refreshes a run's summary.
        """
        return summary_of(self.samples(run_id))

    # --- gate decisions ----------------------------------------------------------------

    def put_gate_decision(self, record: GateRecord) -> GateRecord:
        """Store a gate decision; return it with the ``decision_id`` it was given."""
        with self.transaction(write=True) as conn:
            return gates.insert(conn, record)

    def last_gate_decision(self, scope_key: str) -> GateRecord | None:
        """The most recently stored decision with this ``scope_key``, or ``None``."""
        with self.transaction(write=False) as conn:
            return gates.last(conn, scope_key)


_ITEM_ORDER = (
    sa.case((samples.c.item_order.is_(None), 1), else_=0),
    samples.c.item_order,
    samples.c.item_id,
)


def _upsert_samples(dialect: str) -> Any:
    """``INSERT … ON CONFLICT (run_id, item_id) DO UPDATE`` for SQLite and PostgreSQL."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(samples)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(samples)
    return stmt.on_conflict_do_update(
        index_elements=list(_SAMPLE_KEY),
        set_={c.name: stmt.excluded[c.name] for c in samples.c if c.name not in _SAMPLE_KEY},
        # Replace an errored sample, or a good one with a good one; never good with errored.
        where=sa.or_(samples.c.error.is_not(None), stmt.excluded.error.is_(None)),
    )


def _insert_prompts(conn: Connection, texts: Mapping[str, str]) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(prompts)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(prompts)
    rows = [{"prompt_hash": h, "text": t} for h, t in texts.items()]
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["prompt_hash"]), rows)
