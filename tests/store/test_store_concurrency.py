"""Many processes on one store, SQLite file and PostgreSQL: nothing lost, nothing duplicated.

Workers are separate interpreters (multiprocessing, spawn), as real runs are: each opens its
own store, so SQLite's file locks and PostgreSQL's row locks are what keep them apart.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from evalpipe.records import Run, RunConfig, Sample
from evalpipe.store import open_store, schema

N_WRITERS = 4
PER_RUN = 300
CONFIG = RunConfig("m", "f", "t", "1", "p", "d", None, "tp1", "cpu", "serve", (), {}, 0, None, 1)


def _run(run_id: str) -> Run:
    return Run(run_id, CONFIG, "running", "2026-11-28T00:00:00+00:00")


def _sample(run_id: str, i: int, *, good: bool, by: str) -> Sample:
    return Sample(
        run_id=run_id,
        item_id=str(i),
        prompt_hash="h",
        output=f"{by}:{i}" if good else None,
        target=str(i),
        correct=(i % 2 == 0) if good else None,
        error=None if good else f"{by}: HTTP 500",
    )


def _wait_until(start: float) -> None:
    # Spawned interpreters take a second or two to import; start them all at one moment.
    time.sleep(max(0.0, start - time.time()))


def write_run(url: str, run_id: str, start: float) -> None:
    """One process: 300 samples of its own run, one transaction each (like the runner)."""
    with open_store(url) as store:
        _wait_until(start)
        for i in range(PER_RUN):
            store.put_sample(_sample(run_id, i, good=True, by=run_id))


def resume(url: str, who: str, items: list[int], start: float) -> None:
    """A ``--resume`` attempt: skip what is done, write the rest in shuffled batches.

    ``a`` fails the odd items and ``b`` the even ones, so on every item both wrote, one
    attempt's answer must survive the other's error.
    """
    fails = 1 if who == "a" else 0
    rng = random.Random(who)
    with open_store(url) as store:
        _wait_until(start)
        todo = [i for i in items if str(i) not in store.done_item_ids("r")]
        rng.shuffle(todo)
        for k in range(0, len(todo), 10):
            batch = [_sample("r", i, good=i % 2 != fails, by=who) for i in todo[k : k + 10]]
            store.put_samples(batch)


def open_fresh(url: str, run_id: str, start: float) -> None:
    _wait_until(start)
    with open_store(url) as store:
        store.create_run(_run(run_id))


def _in_processes(target: Callable[..., None], arg_lists: list[tuple[Any, ...]]) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 4
    with ctx.Pool(len(arg_lists)) as pool:
        # starmap re-raises a worker's exception here, with its message.
        pool.starmap(target, [(*args, start) for args in arg_lists], chunksize=1)


@pytest.fixture(params=["sqlite", "pg"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "pg":
        pg_url: str = request.getfixturevalue("pg_database")
        return pg_url
    return str(tmp_path / "evalpipe.db")


def test_processes_writing_samples_of_different_runs_lose_nothing(url: str) -> None:
    run_ids = [f"run{k}" for k in range(N_WRITERS)]
    with open_store(url) as store:
        for rid in run_ids:
            store.create_run(_run(rid))
    _in_processes(write_run, [(url, rid) for rid in run_ids])
    with open_store(url) as store:
        for rid in run_ids:
            found = store.samples(rid)
            assert [s.item_id for s in found] == [str(i) for i in range(PER_RUN)]
            assert all(s.output == f"{rid}:{s.item_id}" for s in found)
            assert store.summarize(rid)["n_correct"] == PER_RUN // 2
        with store.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(schema.samples))
            assert total.scalar_one() == N_WRITERS * PER_RUN


def test_two_resumes_of_one_run_keep_every_answer_once(url: str) -> None:
    with open_store(url) as store:
        store.create_run(_run("r"))
        # What the first, interrupted attempt stored: some answers, some failures.
        store.put_samples(_sample("r", i, good=i % 3 != 0, by="first") for i in range(0, 60))
    a_items, b_items = list(range(0, 200)), list(range(100, 300))
    _in_processes(resume, [(url, "a", a_items), (url, "b", b_items)])
    with open_store(url) as store:
        by_item = {s.item_id: s for s in store.samples("r")}
    assert sorted(map(int, by_item)) == list(range(300))  # no loss; the key forbids duplicates
    for i in range(300):
        s = by_item[str(i)]
        if i < 60 and i % 3 != 0:
            assert s.output == f"first:{i}"  # already done: neither resume touched it
        elif 100 <= i < 200:
            assert s.error is None, f"item {i}: an error replaced a good answer"
        else:
            only = "a" if i < 100 else "b"
            good = i % 2 != (1 if only == "a" else 0)
            assert (s.error is None) == good
            assert (s.output or s.error or "").startswith(only)


def test_processes_opening_one_fresh_postgres_database_at_once_all_succeed(
    pg_database: str,
) -> None:
    _in_processes(open_fresh, [(pg_database, f"r{k}") for k in range(6)])
    with open_store(pg_database) as store:
        assert sorted(r.run_id for r in store.list_runs()) == [f"r{k}" for k in range(6)]
        with store.engine.connect() as conn:
            meta = conn.execute(sa.select(sa.func.count()).select_from(schema.meta))
            created = conn.execute(
                sa.select(sa.func.count())
                .select_from(schema.migrations)
                .where(schema.migrations.c.name.startswith("create_schema_"))
            )
            assert (meta.scalar_one(), created.scalar_one()) == (3, 1)
