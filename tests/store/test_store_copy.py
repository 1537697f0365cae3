"""`copy_runs` between real stores: SQLite → PostgreSQL twice, PostgreSQL → SQLite, merges."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_store import make_config, make_run, make_sample

from evalpipe.errors import EvalpipeError
from evalpipe.importers.transfer import CopyReport, copy_runs
from evalpipe.records import Run, Sample
from evalpipe.store import Store, open_store, summary_of


def finished(
    run_id: str, n: int, started: str = "2026-11-28T03:00:00+00:00"
) -> tuple[Run, list[Sample]]:
    samples = [make_sample(run_id, str(i), correct=i % 3 != 0) for i in range(n)]
    run = make_run(run_id, started_at=started, status="finished", finished_at=started, n_items=n)
    return run.with_(**summary_of(samples)), samples


def fill(store: Store) -> list[str]:
    ids = []
    for k, n in enumerate((5, 40, 0)):
        run, samples = finished(f"2026112{k}-run", n, f"2026-11-2{k}T03:00:00+00:00")
        store.create_run(run, samples, {f"h{i}": f"prompt {i}" for i in range(n)})
        ids.append(run.run_id)
    return ids


def same_content(a: Store, b: Store, run_id: str) -> bool:
    return a.get_run(run_id) == b.get_run(run_id) and a.samples(run_id) == b.samples(run_id)


def test_copy_sqlite_to_postgres_twice_creates_nothing_new(
    tmp_path: Path, pg_database: str
) -> None:
    with open_store(tmp_path / "laptop.db") as src, open_store(pg_database) as dst:
        ids = fill(src)
        first = copy_runs(src, dst)
        assert first == CopyReport(copied=tuple(ids))
        assert all(same_content(src, dst, r) for r in ids)
        assert dst.get_prompt("h3") == "prompt 3"
        second = copy_runs(src, dst)
        assert second == CopyReport(skipped_identical=tuple(ids))
        assert second.summary() == "copied 0, merged 0, already there 3, conflicts 0"
        assert len(dst.list_runs()) == 3


def test_copy_postgres_to_sqlite_selected_runs_by_prefix(tmp_path: Path, pg_database: str) -> None:
    with open_store(pg_database) as src, open_store(tmp_path / "local.db") as dst:
        ids = fill(src)
        report = copy_runs(src, dst, ["20261121", ids[0], ids[0]])
        assert report.copied == (ids[1], ids[0])
        assert [r.run_id for r in dst.list_runs()] == [ids[1], ids[0]]
        assert same_content(src, dst, ids[1])
        with pytest.raises(EvalpipeError, match="no run"):
            copy_runs(src, dst, ["nope"])


def test_a_run_in_progress_is_copied_then_merged_as_it_grows(
    tmp_path: Path, pg_database: str
) -> None:
    with open_store(tmp_path / "laptop.db") as src, open_store(pg_database) as dst:
        src.create_run(make_run("r1"))
        src.put_samples(make_sample("r1", str(i)) for i in range(10))
        src.put_sample(make_sample("r1", "10", correct=None, output=None, error="timeout"))
        assert copy_runs(src, dst).copied == ("r1",)
        assert dst.get_run("r1").status == "running"
        # The run goes on at the source: the errored item is retried, more items, it finishes.
        src.put_samples(make_sample("r1", str(i)) for i in range(10, 20))
        src.update_run(src.get_run("r1").with_(status="finished", **src.summarize("r1")))
        assert copy_runs(src, dst) == CopyReport(merged=("r1",))
        assert same_content(src, dst, "r1")
        assert copy_runs(src, dst) == CopyReport(skipped_identical=("r1",))


def test_a_merge_never_replaces_a_good_sample_with_an_error(
    tmp_path: Path, pg_database: str
) -> None:
    with open_store(tmp_path / "laptop.db") as src, open_store(pg_database) as dst:
        src.create_run(make_run("r1"))
        dst.create_run(make_run("r1"), [make_sample("r1", "1")])
        src.put_samples(
            [make_sample("r1", "1", correct=None, output=None, error="500"), make_sample("r1", "2")]
        )
        assert copy_runs(src, dst).merged == ("r1",)
        assert dst.done_item_ids("r1") == {"1", "2"}
        assert dst.get_run("r1").n_errors == 0  # recomputed from what the destination holds


def test_a_finished_run_that_differs_is_a_conflict_and_left_alone(
    tmp_path: Path, pg_database: str
) -> None:
    with open_store(tmp_path / "a.db") as src, open_store(pg_database) as dst:
        run, samples = finished("r1", 5)
        src.create_run(run, samples)
        other, other_samples = finished("r1", 6)
        dst.create_run(other, other_samples)
        src.create_run(make_run("r2"))
        report = copy_runs(src, dst)
        assert report.copied == ("r2",)
        assert [c.run_id for c in report.conflicts] == ["r1"]
        assert "finished" in report.conflicts[0].reason
        assert len(dst.samples("r1")) == 6


def test_an_unfinished_run_with_another_config_is_a_conflict(
    tmp_path: Path, pg_database: str
) -> None:
    with open_store(tmp_path / "a.db") as src, open_store(pg_database) as dst:
        src.create_run(make_run("r1"))
        dst.create_run(make_run("r1", config=make_config(layout="tp8")))
        report = copy_runs(src, dst)
        assert "another config" in report.conflicts[0].reason
