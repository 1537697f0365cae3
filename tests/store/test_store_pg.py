"""The Store contract on both databases: the same tests on an SQLite file and on PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from legacy_store import as_schema_2
from test_store import make_config, make_run, make_sample

from evalpipe.errors import EvalpipeError
from evalpipe.importers.jsonl import export_run, import_run
from evalpipe.records import SCHEMA_VERSION
from evalpipe.store import Store, migrate, open_store, schema, summary_of
from evalpipe.store.maintenance import migrate_store
from evalpipe.store.pg import driver_url


@pytest.fixture(params=["sqlite", "pg"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "pg":
        url: str = request.getfixturevalue("pg_database")
        return url
    return str(tmp_path / "evalpipe.db")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as s:
        yield s


def test_a_new_store_has_the_schema_and_history(store: Store) -> None:
    with store.engine.connect() as conn:
        version = conn.execute(
            sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
        ).scalar_one()
        names = set(conn.execute(sa.select(schema.migrations.c.name)).scalars())
    assert version == str(SCHEMA_VERSION)
    assert f"create_schema_{SCHEMA_VERSION}" in names
    assert store.migrations_applied == []


def test_create_get_list_prefix_update_delete(store: Store) -> None:
    run = make_run("20261128-030000-aaaaaa", tags=("pr-1",), provenance={"host": "h"})
    store.create_run(run, [make_sample(run.run_id, "1")], {"h1": "prompt one"})
    store.create_run(make_run("20261128-040000-bbbbbb", started_at="2026-11-28T04:00:00+00:00"))
    assert store.get_run(run.run_id) == run
    assert store.get_run("20261128-03").run_id == run.run_id
    with pytest.raises(EvalpipeError, match="ambiguous"):
        store.get_run("20261128")
    with pytest.raises(EvalpipeError, match="no run"):
        store.get_run("nope")
    with pytest.raises(EvalpipeError, match="already exists"):
        store.create_run(run)
    assert [r.run_id for r in store.list_runs()] == [
        "20261128-040000-bbbbbb",
        "20261128-030000-aaaaaa",
    ]
    assert [r.run_id for r in store.list_runs(layout="tp2", limit=1)] == ["20261128-040000-bbbbbb"]
    done = run.with_(status="finished", **store.summarize(run.run_id))
    store.update_run(done)
    assert store.find_finished(run.config.config_hash()) == done
    assert store.find_unfinished(run.config.config_hash()).run_id == "20261128-040000-bbbbbb"  # type: ignore[union-attr]
    store.delete_run(run.run_id)
    assert store.find_run(run.run_id) is None
    assert store.get_prompt("h1") == "prompt one"


def test_a_sample_round_trips_and_never_duplicates(store: Store) -> None:
    store.create_run(make_run("r1"))
    sample = make_sample("r1", "7", meta={"k": [1, "ü"]}, latency_s=1.5, correct=False)
    store.put_sample(sample)
    store.put_sample(sample)
    assert store.samples("r1") == [sample]


def test_upsert_rules_good_replaces_error_never_the_reverse(store: Store) -> None:
    store.create_run(make_run("r1"))
    bad = make_sample("r1", "1", output=None, correct=None, error="timeout")
    good = make_sample("r1", "1")
    store.put_sample(bad)
    assert store.done_item_ids("r1") == set()
    assert store.first_errors("r1") == ["item 1: timeout"]
    store.put_sample(good)
    store.put_samples([bad, make_sample("r1", "2", error="500", correct=None)])
    assert store.samples("r1")[0] == good
    assert store.done_item_ids("r1") == {"1"}
    assert store.first_errors("r1") == ["item 2: 500"]


def test_samples_in_numeric_then_text_order_and_summary(store: Store) -> None:
    store.create_run(make_run("r1"))
    ids = ["10", "9", "b", "100", "a", "1"]
    store.put_samples(
        make_sample("r1", i, correct=i != "9", correct_by={"strict": i != "9"}) for i in ids
    )
    assert [s.item_id for s in store.samples("r1")] == ["1", "9", "10", "100", "a", "b"]
    summary = store.summarize("r1")
    assert summary["n_samples"] == 6
    assert summary["n_correct"] == 5
    assert summary["accuracy"] == pytest.approx(5 / 6)
    assert summary["accuracy_flexible"] is None


def test_samples_for_an_unknown_run_are_refused(store: Store) -> None:
    with pytest.raises(EvalpipeError, match="no run 'ghost'"):
        store.put_sample(make_sample("ghost", "1"))
    with pytest.raises(EvalpipeError, match="no run 'ghost'"):
        store.samples("ghost")


def test_prompts_are_stored_once_and_never_overwritten(store: Store) -> None:
    store.put_prompts({"a": "first", "b": "bee"})
    store.put_prompts({"a": "second"})
    assert store.get_prompts(["a", "b", "zzz"]) == {"a": "first", "b": "bee"}


def test_migrate_reports_already_current(store_url: str) -> None:
    open_store(store_url).close()
    with open_store(store_url) as s:
        assert migrate(s) == []
    report = migrate_store(store_url)
    assert (report.version, report.created, report.applied) == (SCHEMA_VERSION, False, ())
    assert report.summary().endswith(f"is already at schema {SCHEMA_VERSION}")


def test_migrate_creates_an_empty_postgres_database(pg_database: str) -> None:
    report = migrate_store(pg_database)
    assert report.created
    assert "created an evalpipe store" in report.summary()
    assert migrate_store(pg_database).summary().endswith(f"already at schema {SCHEMA_VERSION}")


def test_migrate_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(EvalpipeError, match="no evalpipe store at"):
        migrate_store(str(tmp_path / "missing.db"))
    assert not (tmp_path / "missing.db").exists()


def _add_probe_table(conn: sa.Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE m_probe (x TEXT)")


def test_an_older_postgres_store_is_migrated_once(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(pg_database) as s:
        s.create_run(make_run("r1"))
    step = schema.Migration(SCHEMA_VERSION + 1, "m999_probe", _add_probe_table)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    report = migrate_store(pg_database)
    assert report.applied == ("m999_probe",)
    assert report.version == SCHEMA_VERSION + 1
    assert migrate_store(pg_database).applied == ()
    with open_store(pg_database) as s:
        assert s.get_run("r1").run_id == "r1"


def test_flag_lists_stored_at_schema_2_become_the_mapping_once(store_url: str) -> None:
    with open_store(store_url) as s:
        s.create_run(make_run("r1"))
        s.create_run(make_run("r2", config=make_config(engine_args={})))
        as_schema_2(s, "r1", ["--enforce-eager", "--max-model-len", "4096"])
    with open_store(store_url) as s:
        assert s.migrations_applied == [
            "m003_structured_engine_args",
            "m004_token_traces",
            "m005_trace_answers_and_run_holders",
        ]
        run = s.get_run("r1")
        assert run.config.engine_args == {"enforce_eager": True, "max_model_len": 4096}
        assert run == make_run("r1")
        found = s.find_unfinished(make_run("r1").config.config_hash())
        assert found is not None and found.run_id == "r1"
        assert s.get_run("r2").config.engine_args == {}
    with open_store(store_url) as s:
        assert s.migrations_applied == []


def test_export_import_round_trip_pg_sqlite_pg(
    pg_database: str, postgres_url: str, tmp_path: Path
) -> None:
    from pg import fresh_database

    run = make_run("r1", status="finished", finished_at="2026-11-28T03:10:00+00:00")
    with open_store(pg_database) as s:
        samples = [make_sample("r1", str(i), latency_s=0.1 * i) for i in range(50)]
        s.create_run(run.with_(**summary_of(samples), n_items=50), samples, {"h1": "p"})
        first = io.StringIO()
        export_run(s, "r1", first)
    with open_store(tmp_path / "copy.db") as lite:
        import_run(lite, first.getvalue().splitlines())
        middle = io.StringIO()
        export_run(lite, "r1", middle)
    with fresh_database(postgres_url) as other, open_store(other) as back:
        import_run(back, middle.getvalue().splitlines())
        import_run(back, middle.getvalue().splitlines())  # again: nothing changes
        last = io.StringIO()
        export_run(back, "r1", last)
        assert len(back.list_runs()) == 1
    assert first.getvalue() == middle.getvalue() == last.getvalue()


def test_postgresql_urls_use_psycopg_3() -> None:
    assert driver_url(sa.make_url("postgresql://u@h/db")).drivername == "postgresql+psycopg"
    assert driver_url(sa.make_url("postgres://u@h/db")).drivername == "postgresql+psycopg"
    kept = sa.make_url("postgresql+psycopg2://u@h/db")
    assert driver_url(kept) == kept


def test_an_unreachable_server_is_explained_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://evalpipe:s3cret@/db?host={tmp_path}&port=1"
    with pytest.raises(EvalpipeError) as info:
        open_store(url)
    message = str(info.value)
    assert f"host {tmp_path}, port 1" in message
    assert "server is running" in message
    assert "s3cret" not in message


def test_a_plain_postgresql_url_works(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with open_store(plain) as s:
        assert s.engine.dialect.driver == "psycopg"
        assert s.list_runs() == []
