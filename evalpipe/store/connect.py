"""Where a store lives and how to connect to it: path/URL resolution, engine, SQLite pragmas.

Only SQLite and PostgreSQL are accepted, because the upserts in :mod:`evalpipe.store.store`
use the ``ON CONFLICT`` form both share. Every SQLite-only statement evalpipe runs is in
:func:`_sqlite_on_connect` (pragmas) and :func:`_sqlite_on_begin`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine

from evalpipe.errors import EvalpipeError
from evalpipe.store import pg

DEFAULT_STORE = "./evalpipe.db"
ENV_VAR = "EVALPIPE_STORE"
BUSY_TIMEOUT_MS = 30_000
SUPPORTED_DIALECTS = ("sqlite", "postgresql")

# Execution option that makes a transaction take SQLite's write lock at BEGIN. A deferred
# transaction that reads first and writes later fails at once with "database is locked" if
# another writer committed in between; BEGIN IMMEDIATE instead waits (busy_timeout) up front.
BEGIN_IMMEDIATE = "evalpipe_begin_immediate"


@dataclass(frozen=True)
class Location:
    """A resolved store: the SQLAlchemy URL, the SQLite file if any, and a name for messages."""

    url: URL
    path: Path | None
    name: str


def resolve(url_or_path: str | os.PathLike[str] | None) -> Location:
    """``None`` → ``$EVALPIPE_STORE`` → ``./evalpipe.db``; a path → SQLite; ``…://…`` → URL."""
    raw = os.fspath(url_or_path) if url_or_path is not None else ""
    raw = raw or os.environ.get(ENV_VAR, "") or DEFAULT_STORE
    if raw == ":memory:":
        return Location(URL.create("sqlite"), None, ":memory:")
    if "://" not in raw:
        path = Path(raw).expanduser().resolve()
        # URL.create rather than an f-string: a path may hold '?', '#' or '%'.
        return Location(URL.create("sqlite", database=str(path)), path, str(path))
    try:
        url = sa.make_url(raw)
    except sa.exc.ArgumentError as exc:
        raise EvalpipeError(
            f"{raw!r} is not a store path or URL (e.g. ./evalpipe.db, "
            "sqlite:////abs/evalpipe.db, postgresql://user@host/db)"
        ) from exc
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database or "").expanduser().resolve()
        return Location(url.set(database=str(path)), path, str(path))
    return Location(url, None, url.render_as_string(hide_password=True))


def create_engine(loc: Location, *, create: bool) -> Engine:
    """An engine for ``loc``; with ``create=False`` a missing SQLite file is an error."""
    backend = "postgresql" if pg.is_postgres(loc.url) else loc.url.get_backend_name()
    if backend not in SUPPORTED_DIALECTS:
        raise EvalpipeError(
            f"store {loc.name}: {backend!r} is not supported; use a file path (SQLite) "
            "or a postgresql:// URL"
        )
    if loc.path is not None:
        _check_sqlite_path(loc.path, create=create)
    kwargs: dict[str, Any] = {}
    if backend == "sqlite" and loc.path is None:
        # One shared connection, or every pooled connection would see its own empty database.
        kwargs = {"poolclass": sa.StaticPool, "connect_args": {"check_same_thread": False}}
    url = loc.url
    if backend == "postgresql":
        url = pg.driver_url(url)
        # pre_ping: a team server restarts between a long run's writes; reconnect, not fail.
        kwargs = {"pool_pre_ping": True, "connect_args": pg.connect_args(url)}
    try:
        engine = sa.create_engine(url, **kwargs)
    except ImportError as exc:
        if backend == "postgresql":
            raise pg.missing_driver(loc.name, exc) from exc
        raise EvalpipeError(
            f"store {loc.name}: the database driver is not installed ({exc})"
        ) from exc
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        pg.explain_connect_errors(engine, url, loc.name)
    return engine


def _check_sqlite_path(path: Path, *, create: bool) -> None:
    if path.is_dir():
        raise EvalpipeError(
            f"store {path} is a directory; give a file path such as {path}/evalpipe.db"
        )
    if not path.exists():
        if not create:
            raise EvalpipeError(
                f"no evalpipe store at {path}; `evalpipe run` creates one, or point "
                f"--store / {ENV_VAR} at an existing store"
            )
        if not path.parent.is_dir():
            raise EvalpipeError(
                f"cannot create store {path}: directory {path.parent} does not exist "
                "(create it, or point --store elsewhere)"
            )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level so that _sqlite_on_begin decides when transactions start;
    # the sqlite3 module's own implicit BEGIN skips DDL and cannot take the write lock early.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # WAL: readers never block the writer, and a commit is one append (>500 samples/s).
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode keeps every commit across a killed process (kill -9); only a
        # power loss can drop the last commits, and never corrupts the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(BEGIN_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
