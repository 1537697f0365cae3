"""What PostgreSQL needs beyond the shared schema: driver choice, clear errors, a schema lock.

The tables, upserts and queries are the same on both databases (see :mod:`evalpipe.store.schema`
and :mod:`evalpipe.store.store`); this module only holds what has no SQLite counterpart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, ExceptionContext

from evalpipe.errors import EvalpipeError

DRIVER = "psycopg"
"""The one PostgreSQL driver evalpipe installs (``pip install 'evalpipe[pg]'``) and tests."""

# pg_advisory_xact_lock key for creating/migrating the schema: a fixed 63-bit number that no
# other application sharing the database is likely to pick (advisory locks are per database).
SCHEMA_LOCK_KEY = 0x2B0F_5C61_9E3A_44D7

_DEFAULT_PORT = 5432


def driver_url(url: URL) -> URL:
    """``postgresql://`` (and Heroku-style ``postgres://``) → the psycopg 3 driver.

    SQLAlchemy's default for a bare ``postgresql://`` is psycopg2, which evalpipe neither
    installs nor tests; an explicit ``postgresql+driver://`` is left as the user wrote it.
    """
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername=f"postgresql+{DRIVER}")
    return url


def is_postgres(url: URL) -> bool:
    return url.drivername == "postgres" or url.get_backend_name() == "postgresql"


def missing_driver(name: str, exc: ImportError) -> EvalpipeError:
    return EvalpipeError(
        f"store {name}: the PostgreSQL driver is not installed ({exc}); install it with "
        "`pip install 'evalpipe[pg]'` (psycopg 3)"
    )


def where(url: URL) -> str:
    """``host H, port P`` as psycopg will use them (query ``host=`` is a unix-socket dir)."""
    query_host = url.query.get("host")
    host = url.host or (query_host if isinstance(query_host, str) else None)
    query_port = url.query.get("port")
    port = url.port or (query_port if isinstance(query_port, str) else None)
    return f"host {host or 'localhost (default socket)'}, port {port or _DEFAULT_PORT}"


def explain_connect_errors(engine: Engine, url: URL, name: str) -> None:
    """Turn a failure to connect into an :class:`EvalpipeError` that says what to check.

    Registered as ``handle_error`` so every path that connects (opening, migrating, any
    later query after a restart) gets the same message without its own try/except.
    """

    def on_error(ctx: ExceptionContext) -> None:
        # Only connection failures: errors of a statement keep their usual handling.
        if ctx.connection is not None and not ctx.is_disconnect:
            return
        if not isinstance(ctx.sqlalchemy_exception, sa.exc.OperationalError):
            return
        detail = str(ctx.original_exception).strip().splitlines()
        first = detail[0] if detail else type(ctx.original_exception).__name__
        raise EvalpipeError(
            f"cannot connect to the PostgreSQL store {name} ({where(url)}): {first}. Check that "
            "the server is running and reachable there, that the database exists and that "
            "the user may log in (password, pg_hba.conf); or point --store / EVALPIPE_STORE "
            "elsewhere"
        ) from ctx.original_exception

    event.listen(engine, "handle_error", on_error)


@contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Hold PostgreSQL's schema advisory lock while the body creates or migrates tables.

    Two processes opening a fresh database at once would both see no tables and both run
    CREATE TABLE; SQLite serialises them with BEGIN IMMEDIATE, PostgreSQL with this lock.
    A transaction-level lock on its own connection is released by commit, rollback or a
    dropped connection, so a killed process can never leave it held. No-op on SQLite.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
        yield


def connect_args(url: URL) -> dict[str, Any]:
    """Driver options: fail fast (10 s) instead of psycopg's wait-forever default."""
    return {"connect_timeout": 10} if "connect_timeout" not in url.query else {}
