"""``evalpipe store migrate``: bring a store at a path or URL to the current schema."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from evalpipe.errors import EvalpipeError
from evalpipe.store import schema
from evalpipe.store.connect import create_engine, resolve
from evalpipe.store.store import migrate, open_store


@dataclass(frozen=True)
class MigrateReport:
    """What :func:`migrate_store` did: the store, its schema now, what was applied."""

    store: str
    version: int
    created: bool
    applied: tuple[str, ...]

    def summary(self) -> str:
        if self.created:
            return f"created an evalpipe store at schema {self.version} in {self.store}"
        if self.applied:
            return f"migrated {self.store} to schema {self.version}: applied " + ", ".join(
                self.applied
            )
        return f"{self.store} is already at schema {self.version}"


def migrate_store(url_or_path: str | None = None) -> MigrateReport:
    """Bring the store at a path or URL to the current schema (``evalpipe store migrate``).

    A missing SQLite file is an error (nothing to migrate); an empty PostgreSQL database gets
    the current tables. Safe to run while other processes use the store.
    """
    fresh = _is_empty(url_or_path)
    with open_store(url_or_path, create=False) as store:
        applied = migrate(store)
        with store.engine.connect() as conn:
            version = conn.execute(
                sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            ).scalar_one()
    return MigrateReport(store.name, int(version), fresh, tuple(applied))


def _is_empty(url_or_path: str | None) -> bool:
    loc = resolve(url_or_path)
    engine = create_engine(loc, create=False)
    try:
        with engine.connect() as conn:
            return not sa.inspect(conn).get_table_names()
    except sa.exc.DBAPIError as exc:
        raise EvalpipeError(f"cannot open store {loc.name}: {exc.orig}") from exc
    finally:
        engine.dispose()
