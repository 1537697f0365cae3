"""The store itself: bring it to the current schema, copy runs between stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Both modules import SQLAlchemy, which `evalpipe --help` must not pay for.
    from evalpipe.importers.transfer import CopyReport
    from evalpipe.store.maintenance import MigrateReport


def migrate_store(store: str | None) -> MigrateReport:
    """``evalpipe store migrate``: the store at a path or URL brought to the current schema;
    a missing SQLite file is an error, an empty PostgreSQL database gets the tables."""
    from evalpipe.store.maintenance import migrate_store as _migrate

    return _migrate(store)


def copy_store(src: str, dst: str, run_ids: Sequence[str] | None = None) -> CopyReport:
    """``evalpipe store copy``: runs (ids or unique prefixes; all when ``None``) from the
    existing store ``src`` into ``dst`` (created or migrated as needed). Copying again
    writes nothing new; conflicts are reported, not raised, and the other runs are copied."""
    from evalpipe.errors import EvalpipeError
    from evalpipe.importers.transfer import copy_runs
    from evalpipe.paths import check_outputs, store_files
    from evalpipe.store import open_store
    from evalpipe.store.connect import resolve

    source_at, target_at = resolve(src), resolve(dst)
    if target_at.path is not None:
        inputs = [("the source store", p) for p in store_files(source_at.path)]
        check_outputs([("the destination", target_at.path)], inputs)
    elif source_at.path is None and source_at.url == target_at.url:
        raise EvalpipeError(f"the source and the destination are one store ({source_at.name})")

    with open_store(src, create=False, empty_ok=False) as source, open_store(dst) as target:
        return copy_runs(source, target, run_ids)
