"""The store on real SQLite files: records round-trip, upserts, resume, corruption, crashes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from evalpipe.errors import EvalpipeError
from evalpipe.records import Run, RunConfig, Sample
from evalpipe.store import Store, describe_store, migrate, open_store, schema
from evalpipe.store.schema import Migration

REPO = Path(__file__).resolve().parents[2]


def make_config(**changes: Any) -> RunConfig:
    values: dict[str, Any] = {
        "model": "models/smollm2-135m",
        "model_fingerprint": "sha256:abc",
        "task": "gsm8k",
        "task_version": "3",
        "prompt_hash": "p" * 64,
        "data_source": "hf:openai/gsm8k@main:test",
        "data_sha256": "d" * 64,
        "layout": "tp2",
        "platform": "cpu",
        "engine_kind": "serve",
        "engine_args": {"enforce_eager": True, "max_model_len": 4096},
        "sampling": {"temperature": 0.0, "max_tokens": 256, "seed": 1234},
        "seed": 1234,
        "limit": None,
        "concurrency": 8,
        "engine_versions": {"vllm": "0.11.0", "vllm-ascend": None},
        "repeat_index": 0,
    }
    values.update(changes)
    return RunConfig(**values)


def make_run(run_id: str, **changes: Any) -> Run:
    values: dict[str, Any] = {
        "run_id": run_id,
        "config": make_config(),
        "status": "running",
        "started_at": "2026-11-28T03:00:00+00:00",
    }
    values.update(changes)
    return Run(**values)


def make_sample(run_id: str, item_id: str, **changes: Any) -> Sample:
    values: dict[str, Any] = {
        "run_id": run_id,
        "item_id": item_id,
        "prompt_hash": f"h{item_id}",
        "output": f"The answer is {item_id}.",
        "target": item_id,
        "correct": True,
        "extracted": {"strict": item_id, "flexible": item_id},
        "correct_by": {"strict": True, "flexible": True},
        "prompt_tokens": 100,
        "output_tokens": 10,
        "finish_reason": "stop",
        "latency_s": 0.25,
        "completed_at": "2026-11-28T03:00:01+00:00",
    }
    values.update(changes)
    return Sample(**values)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = open_store(tmp_path / "evalpipe.db")
    yield s
    s.close()


def count_rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        n: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    conn.close()
    return n


# --- opening ---------------------------------------------------------------------------


def test_new_store_is_sqlite_in_wal_mode_with_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    with open_store(path) as s:
        assert s.path == path
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    # WAL is a property of the file: a fresh connection that set nothing sees it.
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = str(schema.SCHEMA_VERSION)
    assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (version,)
    names = [r[0] for r in raw.execute("SELECT name FROM migrations ORDER BY name")]
    assert names == [f"create_schema_{version}", *(m.name for m in schema.MIGRATIONS)]
    raw.close()


def test_store_location_from_argument_env_or_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVALPIPE_STORE", raising=False)
    assert describe_store() == str(tmp_path / "evalpipe.db")
    monkeypatch.setenv("EVALPIPE_STORE", "sub.db")
    assert describe_store() == str(tmp_path / "sub.db")
    with open_store() as s:
        assert s.path == tmp_path / "sub.db"
    assert (tmp_path / "sub.db").exists()
    url = f"sqlite:///{tmp_path / 'url.db'}"
    with open_store(url) as s:
        assert s.path == tmp_path / "url.db"
    assert describe_store("postgresql://u:secret@db/evalpipe") == "postgresql://u:***@db/evalpipe"


def test_open_without_create_does_not_make_a_file(tmp_path: Path) -> None:
    with pytest.raises(EvalpipeError, match=r"no evalpipe store at .*missing\.db"):
        open_store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_missing_directory_and_unsupported_url_are_explained(tmp_path: Path) -> None:
    with pytest.raises(EvalpipeError, match=r"directory .*nodir does not exist"):
        open_store(tmp_path / "nodir" / "e.db")
    with pytest.raises(EvalpipeError, match="'mysql' is not supported"):
        open_store("mysql://localhost/x")


@pytest.mark.parametrize(
    "content",
    [os.urandom(8192), b'{"run": {"model": "m"}}\n', b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["random-bytes", "jsonl-file", "bad-header"],
)
def test_a_file_that_is_not_a_store_is_left_alone_and_explained(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "evalpipe.db"
    path.write_bytes(content)
    with pytest.raises(EvalpipeError) as info:
        open_store(path)
    message = str(info.value)
    assert str(path) in message
    assert "not an evalpipe store or it is corrupted" in message
    assert "move it aside" in message
    assert path.read_bytes() == content


def test_a_damaged_store_is_reported_as_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "evalpipe.db"
    open_store(path).close()
    data = bytearray(path.read_bytes())
    data[100:1024] = b"\xa5" * 924  # page 1 after the header: the schema table
    path.write_bytes(bytes(data))
    with pytest.raises(EvalpipeError, match=r"corrupted \(.*malformed.*move it aside"):
        open_store(path)


def test_another_applications_database_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.close()
    with pytest.raises(EvalpipeError, match=r"other\.db is not an evalpipe store"):
        open_store(path)
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"notes"}


def test_a_store_from_a_newer_evalpipe_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evalpipe.db"
    open_store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.close()
    with pytest.raises(EvalpipeError) as info:
        open_store(path)
    assert str(path) in str(info.value)
    assert "newer evalpipe (schema 99" in str(info.value)
    assert "upgrade evalpipe" in str(info.value)


def _add_note_column(conn: sa.Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE samples ADD COLUMN note TEXT")


def test_an_older_store_is_migrated_on_open_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evalpipe.db"
    current = schema.SCHEMA_VERSION
    with open_store(path) as s:  # a current store with data in it
        s.create_run(make_run("r1"))
        s.put_sample(make_sample("r1", "1"))
    step = Migration(current + 1, "m999_sample_note", _add_note_column)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 1)
    with open_store(path) as s:
        assert s.migrations_applied == ["m999_sample_note"]
        assert migrate(s) == ["m999_sample_note"]  # reports what opening applied
        assert [x.item_id for x in s.samples("r1")] == ["1"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(current + 1),
        )
        names = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(samples)")]
    conn.close()
    assert names == [
        f"create_schema_{current}",
        "m002_gate_decisions",
        "m003_structured_engine_args",
        "m004_token_traces",
        "m005_trace_answers_and_run_holders",
        "m999_sample_note",
    ]
    assert "note" in columns
    with open_store(path) as s:
        assert s.migrations_applied == []
        assert migrate(s) == []


def test_a_store_with_no_path_to_the_current_schema_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evalpipe.db"
    open_store(path).close()
    current = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 2)
    step = Migration(current + 2, "m999", _add_note_column)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
    match = f"at schema {current} and no migration leads to {current + 1}"
    with pytest.raises(EvalpipeError, match=match):
        open_store(path)


def test_a_new_store_records_every_migration_as_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 1)
    step = Migration(current + 1, "m999", _add_note_column)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
    with open_store(tmp_path / "new.db") as s:
        assert s.migrations_applied == []
    with sqlite3.connect(tmp_path / "new.db") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
    conn.close()
    assert names == [
        f"create_schema_{current + 1}",
        "m002_gate_decisions",
        "m003_structured_engine_args",
        "m004_token_traces",
        "m005_trace_answers_and_run_holders",
        "m999",
    ]


# --- runs ------------------------------------------------------------------------------


def test_a_run_round_trips_every_field(store: Store) -> None:
    run = make_run(
        "20261128-030000-aaaaaa",
        config=make_config(limit=50, repeat_index=2, data_sha256=None),
        status="finished",
        finished_at="2026-11-28T03:10:00+00:00",
        n_items=50,
        n_samples=50,
        n_correct=31,
        n_correct_flexible=33,
        n_errors=1,
        accuracy=31 / 49,
        accuracy_flexible=33 / 49,
        duration_s=601.125,
        output_tokens=12345,
        throughput_tok_s=20.536,
        tags=("nightly", "cp"),
        provenance={"host": "n1", "packages": {"torch": "2.8"}, "gpus": [0, 1]},
        message="note",
    )
    store.create_run(run)
    assert store.get_run(run.run_id) == run
    assert store.find_run(run.run_id) == run
    assert store.find_run("20261128") is None  # exact only


def test_get_run_by_unique_prefix_and_clear_errors(store: Store) -> None:
    for rid in ("20261128-030000-aaaaaa", "20261128-030000-aabbbb", "20261129-010000-cccccc"):
        store.create_run(make_run(rid))
    assert store.get_run("20261129").run_id == "20261129-010000-cccccc"
    assert store.get_run("20261128-030000-aab").run_id == "20261128-030000-aabbbb"
    with pytest.raises(EvalpipeError) as info:
        store.get_run("20261128-030000-aa")
    assert "ambiguous" in str(info.value)
    assert "20261128-030000-aaaaaa" in str(info.value)
    assert "20261128-030000-aabbbb" in str(info.value)
    with pytest.raises(EvalpipeError, match=r"no run 'zzz'.*`evalpipe runs list` shows the ids"):
        store.get_run("zzz")
    with pytest.raises(EvalpipeError, match="no run"):
        store.get_run("")
    with pytest.raises(EvalpipeError, match="no run '2026112_'"):
        store.get_run("2026112_")  # LIKE wildcards are taken literally


def test_create_twice_and_update_unknown_are_errors(store: Store) -> None:
    store.create_run(make_run("r1"))
    with pytest.raises(EvalpipeError, match="run r1 already exists"):
        store.create_run(make_run("r1", status="finished"))
    assert store.get_run("r1").status == "running"
    with pytest.raises(EvalpipeError, match="no run 'r2'"):
        store.update_run(make_run("r2"))


def test_update_replaces_the_whole_record(store: Store) -> None:
    store.create_run(make_run("r1", tags=("a",), provenance={"x": 1}))
    updated = make_run("r1", status="failed", tags=(), provenance={"y": 2}, message="boom")
    store.update_run(updated)
    assert store.get_run("r1") == updated


def test_list_runs_newest_first_with_filters(store: Store) -> None:
    store.create_run(make_run("a", started_at="2026-11-01T00:00:00+00:00"))
    store.create_run(
        make_run("b", started_at="2026-11-03T00:00:00+00:00", config=make_config(layout="tp1"))
    )
    store.create_run(make_run("c", started_at="2026-11-02T00:00:00+00:00", status="finished"))
    store.create_run(
        make_run("d", started_at="2026-11-04T00:00:00+00:00", config=make_config(task="arith"))
    )
    assert [r.run_id for r in store.list_runs()] == ["d", "b", "c", "a"]
    assert [r.run_id for r in store.list_runs(limit=2)] == ["d", "b"]
    assert [r.run_id for r in store.list_runs(task="gsm8k")] == ["b", "c", "a"]
    assert [r.run_id for r in store.list_runs(layout="tp1")] == ["b"]
    assert [r.run_id for r in store.list_runs(status="finished")] == ["c"]
    assert [r.run_id for r in store.list_runs(model="other")] == []


def test_find_unfinished_returns_the_newest_unfinished_run_of_a_config(store: Store) -> None:
    config = make_config()
    other = make_config(seed=1)
    store.create_run(make_run("old", started_at="2026-11-01T00:00:00+00:00", status="aborted"))
    store.create_run(make_run("new", started_at="2026-11-02T00:00:00+00:00", status="failed"))
    store.create_run(make_run("done", started_at="2026-11-03T00:00:00+00:00", status="finished"))
    found = store.find_unfinished(config.config_hash())
    assert found is not None and found.run_id == "new"
    assert store.find_unfinished(other.config_hash()) is None


def test_find_finished_returns_the_newest_finished_run_of_a_config(store: Store) -> None:
    config = make_config()
    assert store.find_finished(config.config_hash()) is None
    store.create_run(make_run("f1", started_at="2026-11-01T00:00:00+00:00", status="finished"))
    store.create_run(make_run("f2", started_at="2026-11-02T00:00:00+00:00", status="finished"))
    store.create_run(make_run("run", started_at="2026-11-03T00:00:00+00:00"))
    store.create_run(
        make_run(
            "other",
            started_at="2026-11-04T00:00:00+00:00",
            status="finished",
            config=make_config(seed=1),
        )
    )
    found = store.find_finished(config.config_hash())
    assert found is not None and found.run_id == "f2"


def test_delete_run_removes_its_samples_but_not_shared_prompts(
    store: Store, tmp_path: Path
) -> None:
    store.create_run(make_run("r1"))
    store.put_prompts({"h1": "What is 1?"})
    store.put_samples([make_sample("r1", "1"), make_sample("r1", "2")])
    store.delete_run("r1")
    assert store.find_run("r1") is None
    assert count_rows(tmp_path / "evalpipe.db", "samples") == 0
    assert store.get_prompt("h1") == "What is 1?"
    with pytest.raises(EvalpipeError, match="no run 'r1'"):
        store.delete_run("r1")


# --- samples and prompts ---------------------------------------------------------------


def test_a_sample_round_trips_every_field(store: Store) -> None:
    store.create_run(make_run("r1"))
    full = make_sample("r1", "7", meta={"attempts": 2, "raw": {"id": "x"}})
    failed = make_sample(
        "r1", "8", output=None, correct=None, extracted={}, correct_by={}, error="HTTP 500"
    )
    unscored = make_sample("r1", "9", correct=False, extracted={"strict": None})
    store.put_samples([full, failed, unscored])
    assert store.samples("r1") == [full, failed, unscored]


def test_writing_an_item_twice_never_duplicates_it(store: Store, tmp_path: Path) -> None:
    store.create_run(make_run("r1"))
    store.put_sample(make_sample("r1", "1", output="first"))
    store.put_sample(make_sample("r1", "1", output="second"))
    store.put_samples([make_sample("r1", "1", output="third"), make_sample("r1", "1")])
    assert [s.output for s in store.samples("r1")] == ["The answer is 1."]
    assert count_rows(tmp_path / "evalpipe.db", "samples") == 1


def test_an_errored_sample_is_replaced_by_a_good_one_but_never_the_reverse(store: Store) -> None:
    store.create_run(make_run("r1"))
    error = make_sample("r1", "1", output=None, correct=None, error="timeout")
    store.put_sample(error)
    assert store.done_item_ids("r1") == set()
    good = make_sample("r1", "1")
    store.put_sample(good)
    assert store.samples("r1") == [good]
    store.put_sample(error)  # a second --resume racing on the same item, and failing
    assert store.samples("r1") == [good]
    assert store.done_item_ids("r1") == {"1"}


def test_done_item_ids_and_first_errors(store: Store) -> None:
    store.create_run(make_run("r1"))
    store.put_samples(
        [
            make_sample("r1", "10", output=None, correct=None, error="reset"),
            make_sample("r1", "2"),
            make_sample("r1", "3", correct=False),
            make_sample("r1", "9", output=None, correct=None, error="HTTP 503"),
        ]
    )
    assert store.done_item_ids("r1") == {"2", "3"}
    assert store.first_errors("r1") == ["item 9: HTTP 503", "item 10: reset"]
    assert store.first_errors("r1", 1) == ["item 9: HTTP 503"]


def test_samples_come_back_numeric_ids_in_number_order_then_text(store: Store) -> None:
    store.create_run(make_run("r1"))
    ids = ["b", "10", "9", "a", "100", "2", "0", "99999999999999999999"]
    store.put_samples([make_sample("r1", i) for i in ids])
    assert [s.item_id for s in store.samples("r1")] == [
        "0",
        "2",
        "9",
        "10",
        "100",
        "99999999999999999999",  # too long for an integer column: sorts as text
        "a",
        "b",
    ]


def test_samples_of_unknown_and_empty_runs(store: Store) -> None:
    store.create_run(make_run("r1"))
    assert store.samples("r1") == []
    with pytest.raises(EvalpipeError, match="no run 'nope'"):
        store.samples("nope")
    with pytest.raises(EvalpipeError, match="no run 'nope'"):
        store.put_sample(make_sample("nope", "1"))


def test_summarize_recomputes_counts_from_samples(store: Store) -> None:
    store.create_run(make_run("r1"))
    assert store.summarize("r1")["accuracy"] is None
    store.put_samples(
        [
            make_sample("r1", "1", output_tokens=10),
            make_sample("r1", "2", correct=False, correct_by={"strict": False, "flexible": True}),
            make_sample(
                "r1",
                "3",
                correct=False,
                correct_by={"strict": False, "flexible": False},
                output_tokens=5,
            ),
            make_sample("r1", "4", output=None, correct=None, error="x", output_tokens=None),
            # Answered but not scored (no verdict): counts as answered, not as correct.
            make_sample("r1", "5", correct=None, correct_by={}, output_tokens=0),
        ]
    )
    summary = store.summarize("r1")
    assert summary == {
        "n_samples": 5,
        "n_correct": 1,
        "n_correct_flexible": 2,
        "n_errors": 1,
        "accuracy": pytest.approx(1 / 4),
        "accuracy_flexible": pytest.approx(2 / 3),
        "output_tokens": 25,
    }
    run = store.get_run("r1").with_(**summary)  # how the runner fills the summary
    assert run.n_correct == 1


def test_flexible_accuracy_is_none_without_a_flexible_extractor(store: Store) -> None:
    store.create_run(make_run("r1"))
    store.put_sample(make_sample("r1", "1", correct_by={"strict": True}))
    summary = store.summarize("r1")
    assert summary["accuracy"] == 1.0
    assert summary["accuracy_flexible"] is None
    assert summary["n_correct_flexible"] == 0


def test_prompts_are_stored_once_and_never_overwritten(store: Store, tmp_path: Path) -> None:
    store.put_prompts({"h1": "one", "h2": '[{"role":"user","content":"two"}]'})
    store.put_prompts({"h1": "changed", "h3": "three"})
    store.put_prompts({})
    assert store.get_prompt("h1") == "one"
    assert store.get_prompt("h3") == "three"
    assert store.get_prompt("h4") is None
    assert store.get_prompts(["h2", "h3", "h4"]) == {
        "h2": '[{"role":"user","content":"two"}]',
        "h3": "three",
    }
    assert count_rows(tmp_path / "evalpipe.db", "prompts") == 3


def test_create_run_with_samples_is_all_or_nothing(store: Store) -> None:
    store.create_run(make_run("r1"))
    with pytest.raises(EvalpipeError, match="already exists"):
        store.create_run(make_run("r1"), [make_sample("r1", "1")], {"h1": "p"})
    assert store.samples("r1") == []
    assert store.get_prompt("h1") is None
    store.create_run(make_run("r2"), [make_sample("r2", "1")], {"h1": "p"})
    assert [s.item_id for s in store.samples("r2")] == ["1"]
    assert store.get_prompt("h1") == "p"


# --- concurrency, crashes, speed -------------------------------------------------------


def test_threads_writing_samples_at_once_lose_nothing(store: Store) -> None:
    store.create_run(make_run("r1"))
    failures: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for i in range(start, start + 100):
                store.put_sample(make_sample("r1", str(i)))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert store.done_item_ids("r1") == {str(i) for i in range(400)}


WRITER = """
import sys
from evalpipe.records import Run, RunConfig, Sample
from evalpipe.store import open_store

path, run_id, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = open_store(path)
for i in range(start, start + count):
    store.put_sample(Sample(run_id=run_id, item_id=str(i), prompt_hash="h", output="x" * 200,
                            target="1", correct=i % 2 == 0))
    print(i, flush=True)
"""


def _writer(path: Path, run_id: str, start: int, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), run_id, str(start), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_kill_9_mid_stream_keeps_exactly_the_committed_samples(tmp_path: Path) -> None:
    path = tmp_path / "evalpipe.db"
    with open_store(path) as s:
        s.create_run(make_run("r1"))
    proc = _writer(path, "r1", 0, 1_000_000)
    assert proc.stdout is not None
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == 300:
            os.kill(proc.pid, signal.SIGKILL)
            break
    acknowledged += [int(x) for x in proc.stdout.read().split()]
    assert proc.wait() == -signal.SIGKILL
    with open_store(path) as s:
        stored = sorted(int(x.item_id) for x in s.samples("r1"))
        # Each acknowledged sample is there; at most one more was committed but not printed.
        assert stored[: len(acknowledged)] == acknowledged == list(range(len(acknowledged)))
        assert len(stored) - len(acknowledged) in (0, 1)
        assert all(x.output == "x" * 200 for x in s.samples("r1"))
        # Resuming writes the rest; nothing is duplicated. (On a loaded machine the writer
        # may get well past the 300th sample before the kill lands: the rest is what is left.)
        total = max(400, len(stored) + 100)
        done = s.done_item_ids("r1")
        s.put_samples(
            [
                make_sample("r1", str(i))
                for i in range(len(acknowledged) - 5, total)
                if str(i) not in done
            ]
        )
        assert sorted(int(x.item_id) for x in s.samples("r1")) == list(range(total))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_processes_writing_different_runs_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "evalpipe.db"
    with open_store(path) as s:
        for rid in ("a", "b", "c"):
            s.create_run(make_run(rid))
    procs = [_writer(path, rid, 0, 300) for rid in ("a", "b", "c")]
    for p in procs:
        p.communicate()
        assert p.returncode == 0
    with open_store(path) as s:
        for rid in ("a", "b", "c"):
            assert s.done_item_ids(rid) == {str(i) for i in range(300)}
            assert s.summarize(rid)["n_correct"] == 150


OPENER = """
import sys, time
from evalpipe.records import Run, RunConfig
from evalpipe.store import open_store

time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # all open at the same moment
config = RunConfig("m", "f", "t", "1", "p", "d", None, "tp1", "cpu", "serve", (), {}, 0, None, 1)
with open_store(sys.argv[1]) as store:
    store.create_run(Run(sys.argv[2], config, "running", "2026-11-28T00:00:00+00:00"))
"""


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = str(time.time() + 3)
    procs = [
        subprocess.Popen([sys.executable, "-c", OPENER, str(path), f"r{i}", start], env=env)
        for i in range(4)
    ]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    with open_store(path) as s:
        assert sorted(r.run_id for r in s.list_runs()) == ["r0", "r1", "r2", "r3"]
    assert count_rows(path, "migrations") == 1 + len(schema.MIGRATIONS)
    assert count_rows(path, "meta") == 3
