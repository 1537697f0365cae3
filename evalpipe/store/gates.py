"""Stored release-gate decisions: the ``gate_decisions`` rows behind :class:`Store`'s methods.

Kept apart from the run and sample code so each concept stays small; the store's public
methods (``put_gate_decision``, ``last_gate_decision``) open the transaction and call here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evalpipe.records import GateRecord
from evalpipe.store.schema import gate_decisions

_COLUMNS = (
    "decided_at",
    "scope_key",
    "policy_name",
    "policy_hash",
    "margin",
    "alpha",
    "min_n",
    "max_error_rate",
    "inconclusive_blocks",
    "status",
)


def to_row(record: GateRecord) -> dict[str, Any]:
    """The ``gate_decisions`` row of ``record`` (without ``id``: the database assigns it)."""
    row = {name: getattr(record, name) for name in _COLUMNS}
    row["decision_json"] = json.dumps(dict(record.decision), ensure_ascii=False)
    return row


def from_row(row: Mapping[Any, Any]) -> GateRecord:
    return GateRecord(
        **{name: row[name] for name in _COLUMNS},
        decision=json.loads(row["decision_json"]),
        decision_id=row["id"],
    )


def insert(conn: Connection, record: GateRecord) -> GateRecord:
    """Insert ``record``; return it with the ``decision_id`` the database gave it."""
    key = conn.execute(gate_decisions.insert(), to_row(record)).inserted_primary_key
    assert key is not None  # a single-row insert always reports its key
    return replace(record, decision_id=int(key[0]))


def last(conn: Connection, scope_key: str) -> GateRecord | None:
    """The most recently stored decision with this ``scope_key``, or ``None``."""
    query = (
        sa.select(gate_decisions)
        .where(gate_decisions.c.scope_key == scope_key)
        .order_by(gate_decisions.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else from_row(row)
