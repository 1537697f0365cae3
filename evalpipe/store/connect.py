"""Where a store lives and how to connect to it: path/URL resolution, engine, SQLite pragmas.

Only SQLite and PostgreSQL are accepted, because the upserts in :mod:`evalpipe.store.store`
use the ``ON CONFLICT`` form both share. Every SQLite-only statement evalpipe runs is in
:func:`_sqlite_on_connect` (pragmas) and :func:`_sqlite_on_begin`.

An SQLite store this process may not write (a read-only mount, another user's files) is opened
read-only, so that everything that only reads works; a write then fails with a message that
says why (:func:`_explain_read_only`).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext

from evalpipe.errors import EvalpipeError, StoreError
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
    """A resolved store: the SQLAlchemy URL, the SQLite file if any, a name for messages, and
    ``flag``: what a suggested command adds to find this store again (`` --store NAME`` when
    one was given; empty for the default or ``$EVALPIPE_STORE``, which the next command finds
    the same way; a password stays hidden)."""

    url: URL
    path: Path | None
    name: str
    flag: str = ""


def resolve(url_or_path: str | os.PathLike[str] | None) -> Location:
    """``None`` → ``$EVALPIPE_STORE`` → ``./evalpipe.db``; a path → SQLite; ``…://…`` → URL."""
    raw = os.fspath(url_or_path) if url_or_path is not None else ""
    if not raw:
        return _resolve(os.environ.get(ENV_VAR, "") or DEFAULT_STORE)
    found = _resolve(raw)
    return dataclasses.replace(found, flag=f" --store {shlex.quote(found.name)}")


def _resolve(raw: str) -> Location:
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
            f"{_hide_password(raw)!r} is not a store path or URL (e.g. ./evalpipe.db, "
            "sqlite:////abs/evalpipe.db, postgresql://user@host/db)"
        ) from exc
    except ValueError as exc:  # SQLAlchemy's int() of the port: "host:notaport", "[::1"
        raise EvalpipeError(_bad_port(_hide_password(raw))) from exc
    if url.port is not None and not 1 <= url.port <= 65535:
        raise EvalpipeError(_bad_port(url.render_as_string(hide_password=True)))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database or "").expanduser().resolve()
        return Location(url.set(database=str(path)), path, str(path))
    return Location(url, None, url.render_as_string(hide_password=True))


def _hide_password(raw: str) -> str:
    """``scheme://user:secret@host/…`` → ``scheme://user:***@host/…``, for a URL SQLAlchemy
    could not parse (a parsed one has ``render_as_string(hide_password=True)``)."""
    scheme, sep, rest = raw.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return raw
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}{slash}{path}"


def _bad_port(shown: str) -> str:
    return (
        f"store URL {shown}: the port must be a number from 1 to 65535 "
        "(e.g. postgresql://user@host:5432/db, or leave it out for 5432)"
    )


def create_engine(loc: Location, *, create: bool) -> Engine:
    """An engine for ``loc``; with ``create=False`` a missing SQLite file is an error."""
    backend = "postgresql" if pg.is_postgres(loc.url) else loc.url.get_backend_name()
    if backend not in SUPPORTED_DIALECTS:
        raise EvalpipeError(
            f"store {loc.name}: {backend!r} is not supported; use a file path (SQLite) "
            "or a postgresql:// URL"
        )
    read_only: str | None = None
    if loc.path is not None:
        check_sqlite_path(loc.path, create=create)
        read_only = _why_read_only(loc.path)
    kwargs: dict[str, Any] = {}
    if read_only is not None and loc.path is not None:
        kwargs = {"creator": _read_only_connector(loc.path)}
    elif backend == "sqlite" and loc.path is None:
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
    if read_only is not None:
        event.listen(engine, "connect", _sqlite_on_connect_read_only)
        event.listen(engine, "begin", _sqlite_on_begin)
        _explain_read_only(engine, loc.name, read_only)
    elif backend == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        pg.explain_connect_errors(engine, url, loc.name)
    return engine


def check_sqlite_path(path: Path, *, create: bool) -> None:
    """Refuse an SQLite store path that is a folder, or (``create``) whose folder is missing
    or not writable, or (not ``create``) that does not exist."""
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
        if not os.access(path.parent, os.W_OK):
            raise EvalpipeError(
                f"cannot create store {path}: directory {path.parent} is not writable "
                "(point --store elsewhere)"
            )


def _why_read_only(path: Path) -> str | None:
    """Why this process cannot write the SQLite store at ``path`` (None: it can).

    SQLite writes beside the file too (the ``-wal`` and ``-shm`` files), so a read-only
    directory is enough to make the store read-only. ``os.access`` answers for this process:
    root may write a chmod-ed file, nobody may write on a read-only mount (EROFS).
    """
    if not path.exists():
        return None
    if not os.access(path, os.W_OK):
        return f"{path} is not writable"
    if not os.access(path.parent, os.W_OK):
        return f"its directory {path.parent} is not writable"
    return None


def _read_only_connector(path: Path) -> Any:
    """Connections that cannot write, whatever the statement.

    With a ``-wal`` file beside the store, ``mode=ro`` reads it too (recent commits live
    there until a checkpoint). Without one, the WAL store was closed cleanly and the main
    file holds everything; ``mode=ro`` alone would then fail to create the ``-shm`` index it
    needs, and ``immutable=1`` tells SQLite to read the file without it. The price: a writer
    elsewhere (another host writing the share this one mounts read-only) goes unseen until
    the next command opens the store again.
    """
    wal = path.with_name(path.name + "-wal").exists()
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro" + ("" if wal else "&immutable=1")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    return connect


def _explain_read_only(engine: Engine, name: str, why: str) -> None:
    """A write to a store opened read-only: say so, instead of SQLite's "attempt to write a
    readonly database" (a migration on open is a write too). A :class:`StoreError`: the
    store cannot be written, which says nothing about the runs in it (``gate`` exits 4)."""

    def on_error(ctx: ExceptionContext) -> None:
        if isinstance(ctx.original_exception, sqlite3.OperationalError) and "readonly" in str(
            ctx.original_exception
        ):
            raise StoreError(
                f"store {name} is opened read-only ({why}), and this command needs to write "
                "to it (an older store is also migrated when opened): run it where the store "
                "is writable, or copy the store somewhere writable and point --store there"
            ) from ctx.original_exception

    event.listen(engine, "handle_error", on_error)


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


def _sqlite_on_connect_read_only(dbapi_connection: Any, _record: Any) -> None:
    # The pragmas of _sqlite_on_connect that do not write: journal_mode=WAL would.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(BEGIN_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
