"""Where runs and samples are kept: one schema on SQLite (default) or PostgreSQL.

Importing this package imports SQLAlchemy; modules that must stay light (the CLI,
:mod:`evalpipe.importers.jsonl`) import it inside functions.
"""

from evalpipe.records import SUMMARY_FIELDS, summary_of
from evalpipe.store.store import Store, describe_store, migrate, open_store

__all__ = ["SUMMARY_FIELDS", "Store", "describe_store", "migrate", "open_store", "summary_of"]
