"""The store's tables (current shape) and the named migrations that bring old stores to it.

A new store gets the current tables straight from :data:`metadata` and is stamped with
:data:`SCHEMA_VERSION`. An older store gets, in order, every :class:`Migration` whose
``version`` is above its own; each runs in one transaction with its record in ``migrations``
and the new ``schema_version`` in ``meta``, so a crash leaves the store at a whole version.

To change the schema: edit the tables below, bump ``records.SCHEMA_VERSION``, and append a
``Migration(version=N, name="mNNN_what", apply=...)`` that turns an N-1 store into an N one.

Types are portable (TEXT, BIGINT, DOUBLE, BOOLEAN, binary for token traces); JSON is stored as
TEXT so SQLite and PostgreSQL hold the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from evalpipe import __version__
from evalpipe.errors import EvalpipeError
from evalpipe.records import (
    SCHEMA_VERSION,
    canonical_json,
    config_from_dict,
    config_to_dict,
    engine_args_from_flags,
    utcnow,
)
from evalpipe.store.connect import BEGIN_IMMEDIATE

metadata = sa.MetaData()

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

migrations = sa.Table(
    "migrations",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("applied_at", sa.Text, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    # Queryable copies of the config; the ``config`` JSON is what a Run is rebuilt from.
    sa.Column("config_hash", sa.Text, nullable=False, index=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("model_fingerprint", sa.Text, nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("task_version", sa.Text, nullable=False),
    sa.Column("prompt_hash", sa.Text, nullable=False),
    sa.Column("data_source", sa.Text, nullable=False),
    sa.Column("data_sha256", sa.Text),
    sa.Column("layout", sa.Text, nullable=False),
    sa.Column("platform", sa.Text, nullable=False),
    sa.Column("engine_kind", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("started_at", sa.Text, nullable=False, index=True),
    sa.Column("finished_at", sa.Text),
    sa.Column("n_items", sa.BigInteger, nullable=False),
    sa.Column("n_samples", sa.BigInteger, nullable=False),
    sa.Column("n_correct", sa.BigInteger, nullable=False),
    sa.Column("n_correct_flexible", sa.BigInteger, nullable=False),
    sa.Column("n_errors", sa.BigInteger, nullable=False),
    sa.Column("accuracy", sa.Double),
    sa.Column("accuracy_flexible", sa.Double),
    sa.Column("duration_s", sa.Double),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("throughput_tok_s", sa.Double),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("provenance", sa.Text, nullable=False),
    sa.Column("message", sa.Text),
)

samples = sa.Table(
    "samples",
    metadata,
    # The primary key makes a duplicate sample impossible, whatever the writers do; it also
    # serves as the index for "all samples of a run".
    sa.Column(
        "run_id",
        sa.Text,
        sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("item_id", sa.Text, primary_key=True),
    # int(item_id) when the id is a number, so samples come back in dataset order.
    sa.Column("item_order", sa.BigInteger),
    sa.Column("prompt_hash", sa.Text, nullable=False),
    sa.Column("output", sa.Text),
    sa.Column("target", sa.Text),
    sa.Column("correct", sa.Boolean(create_constraint=False)),
    sa.Column("extracted", sa.Text, nullable=False),
    sa.Column("correct_by", sa.Text, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger),
    sa.Column("output_tokens", sa.BigInteger),
    sa.Column("finish_reason", sa.Text),
    sa.Column("latency_s", sa.Double),
    sa.Column("error", sa.Text),
    sa.Column("completed_at", sa.Text),
    sa.Column("meta", sa.Text, nullable=False),
)

prompts = sa.Table(
    "prompts",
    metadata,
    # Rendered prompt (or canonical JSON of chat messages), stored once across runs.
    sa.Column("prompt_hash", sa.Text, primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
)


def _gate_decisions_v2(md: sa.MetaData) -> sa.Table:
    """The ``gate_decisions`` table as schema 2 defines it.

    A function so that :func:`_m002_gate_decisions` builds exactly this shape even after a
    later schema changes the table: a later change edits the live table and adds its own
    migration, and leaves this function as it is.
    """
    return sa.Table(
        "gate_decisions",
        md,
        # Integer (not BigInteger) so SQLite makes it the autoincrementing rowid.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decided_at", sa.Text, nullable=False),
        # sha256 of the policy name and requirements: decisions about the same releases.
        sa.Column("scope_key", sa.Text, nullable=False, index=True),
        sa.Column("policy_name", sa.Text, nullable=False),
        sa.Column("policy_hash", sa.Text, nullable=False),
        # The settings a gate can be loosened by, as columns so the next decision compares.
        sa.Column("margin", sa.Double, nullable=False),
        sa.Column("alpha", sa.Double, nullable=False),
        sa.Column("min_n", sa.BigInteger, nullable=False),
        sa.Column("max_error_rate", sa.Double, nullable=False),
        sa.Column("inconclusive_blocks", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("decision_json", sa.Text, nullable=False),
    )


gate_decisions = _gate_decisions_v2(metadata)


def _token_traces_v4(md: sa.MetaData) -> sa.Table:
    """The ``token_traces`` table as schema 4 defines it (a function for the reason given at
    :func:`_gate_decisions_v2`).

    One row per (run, item, source): ``source`` is ``""`` for the run's own generation, else
    the run whose tokens this run's engine scored (teacher forcing). ``data`` is the binary
    trace (:func:`evalpipe.traces.encode`); a row with ``error`` and no ``data`` is an item
    that could not be scored (an infrastructure error, never a score).
    """
    return sa.Table(
        "token_traces",
        md,
        sa.Column(
            "run_id",
            sa.Text,
            sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("item_id", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("start", sa.BigInteger, nullable=False),
        sa.Column("k", sa.Integer, nullable=False),
        sa.Column("n_tokens", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary),
        sa.Column("error", sa.Text),
        sa.Column("stored_at", sa.Text, nullable=False),
    )


token_traces = _token_traces_v4(metadata)
# Schema 5: the digest of the answer a decode-path trace describes (traces.answer_digest).
token_traces.append_column(sa.Column("answer_sha256", sa.Text))


def _run_holders_v5(md: sa.MetaData) -> sa.Table:
    """The ``run_holders`` table as schema 5 defines it: the one process running a run now
    (:mod:`evalpipe.store.holders`), with where it runs and when it was last seen."""
    return sa.Table(
        "run_holders",
        md,
        sa.Column(
            "run_id",
            sa.Text,
            sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("seen_at", sa.Double, nullable=False),
    )


run_holders = _run_holders_v5(metadata)


def _m002_gate_decisions(conn: Connection) -> None:
    _gate_decisions_v2(sa.MetaData()).create(conn)


def _m003_structured_engine_args(conn: Connection) -> None:
    """Each run's engine arguments, stored as a ``vllm serve`` flag list up to schema 2, become
    the mapping stored now; the config JSON and its hash (which finds a run to resume) are
    rewritten together, so a run stored before still resumes and pairs with runs after it."""
    table = sa.table("runs", sa.column("run_id"), sa.column("config"), sa.column("config_hash"))
    rows = conn.execute(sa.select(table.c.run_id, table.c.config)).all()
    for run_id, text in rows:
        data = json.loads(text)
        args = data.get("engine_args", [])
        if isinstance(args, dict):
            continue
        data["engine_args"] = engine_args_from_flags(args)
        config = config_from_dict(data)
        conn.execute(
            table.update()
            .where(table.c.run_id == run_id)
            .values(config=canonical_json(config_to_dict(config)), config_hash=config.config_hash())
        )


def _m004_token_traces(conn: Connection) -> None:
    md = sa.MetaData()
    sa.Table("runs", md, sa.Column("run_id", sa.Text, primary_key=True))  # the key's target
    _token_traces_v4(md).create(conn)


def _m005_trace_answers_and_run_holders(conn: Connection) -> None:
    """Traces stored before keep no answer digest (NULL): read as before, unchecked."""
    conn.execute(sa.text("ALTER TABLE token_traces ADD COLUMN answer_sha256 TEXT"))
    md = sa.MetaData()
    sa.Table("runs", md, sa.Column("run_id", sa.Text, primary_key=True))  # the key's target
    _run_holders_v5(md).create(conn)


@dataclass(frozen=True)
class Migration:
    """One schema step: ``apply`` turns a ``version - 1`` store into a ``version`` store."""

    version: int
    name: str
    apply: Callable[[Connection], None]


# Schema 1 is the baseline (a new store is created at the current version directly).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=2, name="m002_gate_decisions", apply=_m002_gate_decisions),
    Migration(version=3, name="m003_structured_engine_args", apply=_m003_structured_engine_args),
    Migration(version=4, name="m004_token_traces", apply=_m004_token_traces),
    Migration(
        version=5,
        name="m005_trace_answers_and_run_holders",
        apply=_m005_trace_answers_and_run_holders,
    ),
)


@dataclass(frozen=True)
class _State:
    fresh: bool
    version: int


def _state(conn: Connection, name: str) -> _State:
    tables = set(sa.inspect(conn).get_table_names())
    if not tables:
        return _State(fresh=True, version=0)
    value = None
    if {"meta", "runs", "samples"} <= tables:
        value = conn.execute(
            sa.select(meta.c.value).where(meta.c.key == "schema_version")
        ).scalar_one_or_none()
    if value is None or not value.isdigit():
        raise EvalpipeError(
            f"{name} is not an evalpipe store (or it is corrupted): move it aside, or point "
            "--store / EVALPIPE_STORE elsewhere"
        )
    return _State(fresh=False, version=int(value))


def ensure_schema(engine: Engine, name: str) -> list[str]:
    """Create or migrate the store at ``engine``; return the names of migrations applied.

    Reads :data:`MIGRATIONS` and :data:`SCHEMA_VERSION` at call time, so tests can
    substitute them.
    """
    with engine.connect() as conn, conn.begin():
        state = _state(conn, name)
    if state.version > SCHEMA_VERSION:
        raise EvalpipeError(_newer_message(name, state.version))
    if state.fresh:
        _create(engine, name)
        return []
    if state.version == SCHEMA_VERSION:
        return []
    return apply_migrations(engine, name, MIGRATIONS, SCHEMA_VERSION)


def _newer_message(name: str, version: int) -> str:
    return (
        f"store {name} was created by a newer evalpipe (schema {version}; this evalpipe "
        f"{__version__} knows schema {SCHEMA_VERSION}): upgrade evalpipe "
        "(`pip install -U evalpipe`), or point --store elsewhere"
    )


def _create(engine: Engine, name: str) -> None:
    with engine.connect() as conn:
        conn.execution_options(**{BEGIN_IMMEDIATE: True})
        with conn.begin():
            # Another process may have created the store while we waited for the lock.
            if not _state(conn, name).fresh:
                return
            metadata.create_all(conn)
            now = utcnow()
            conn.execute(
                meta.insert(),
                [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "created_at", "value": now},
                    {"key": "created_by", "value": f"evalpipe {__version__}"},
                ],
            )
            # The history says which steps a new store already includes.
            names = [f"create_schema_{SCHEMA_VERSION}", *(m.name for m in MIGRATIONS)]
            conn.execute(migrations.insert(), [{"name": n, "applied_at": now} for n in names])


def apply_migrations(
    engine: Engine, name: str, steps: Sequence[Migration], target: int
) -> list[str]:
    """Apply, one transaction each, the ``steps`` between the store's version and ``target``."""
    applied: list[str] = []
    for step in sorted(steps, key=lambda m: m.version):
        if step.version > target:
            break
        with engine.connect() as conn:
            conn.execution_options(**{BEGIN_IMMEDIATE: True})
            with conn.begin():
                # Re-read under the write lock: a concurrent opener may have migrated already.
                version = _state(conn, name).version
                if version >= step.version:
                    continue
                if version != step.version - 1:
                    break
                step.apply(conn)
                conn.execute(migrations.insert(), {"name": step.name, "applied_at": utcnow()})
                conn.execute(
                    meta.update()
                    .where(meta.c.key == "schema_version")
                    .values(value=str(step.version))
                )
                applied.append(step.name)
    with engine.connect() as conn, conn.begin():
        version = _state(conn, name).version
    if version < target:
        raise EvalpipeError(
            f"store {name} is at schema {version} and no migration leads to {version + 1}; "
            "this evalpipe cannot upgrade it"
        )
    return applied
