"""Turn a store back into what evalpipe at schema 2 wrote, to test the migrations from it."""

from __future__ import annotations

import json

import sqlalchemy as sa

from evalpipe.records import canonical_json, sha256_text
from evalpipe.store import Store, schema


def as_schema_2(store: Store, run_id: str, flags: list[str]) -> None:
    """Rewrite ``store`` as evalpipe at schema 2 left it: this run's engine arguments as a
    flag list, its config hash computed over that list, no m003, m004 or m005 in the history
    and neither the token traces nor the run holders table."""
    with store.engine.begin() as conn:
        text = conn.execute(
            sa.select(schema.runs.c.config).where(schema.runs.c.run_id == run_id)
        ).scalar_one()
        data = json.loads(text)
        data["engine_args"] = flags
        key = {k: v for k, v in data.items() if k not in ("model", "data_source")}
        old_hash = sha256_text(canonical_json(key))[:16]
        conn.execute(
            schema.runs.update()
            .where(schema.runs.c.run_id == run_id)
            .values(config=canonical_json(data), config_hash=old_hash)
        )
        conn.execute(
            schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="2")
        )
        conn.execute(
            schema.migrations.delete().where(
                schema.migrations.c.name.in_(
                    [
                        "m003_structured_engine_args",
                        "m004_token_traces",
                        "m005_trace_answers_and_run_holders",
                    ]
                )
            )
        )
        conn.execute(sa.text("DROP TABLE token_traces"))
        conn.execute(sa.text("DROP TABLE run_holders"))
