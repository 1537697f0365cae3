"""Hostile and sloppy JSONL imports, on real stores: identity without a stated start time,
concurrent imports of one file, values neither store can keep alike (NaN, ±Infinity, NUL,
lone surrogates, numbers out of range), validation as strict as a native run's, and no
traceback for bytes that are not UTF-8, binary files, deep nesting or huge numbers."""

from __future__ import annotations

import io
import json
import multiprocessing
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from evalpipe.cli import main
from evalpipe.errors import EvalpipeError
from evalpipe.importers import jsonl
from evalpipe.importers.jsonl import export_run, import_run, parse_jsonl
from evalpipe.importers.transfer import copy_runs
from evalpipe.records import Run, RunConfig, Sample
from evalpipe.store import Store, open_store, schema

MINIMAL_RUN = {"model": "gpt-x", "task": "gsm8k", "task_version": "1", "layout": "tp1"}
GOOD = {"item_id": 1, "output": "42", "correct": True}


def lines_of(*objects: Any) -> list[str]:
    return [json.dumps(o) + "\n" for o in objects]


def write(path: Path, *objects: Any) -> Path:
    path.write_text("".join(lines_of(*objects)), encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", "pg"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "pg":
        pg_url: str = request.getfixturevalue("pg_database")
        return pg_url
    return str(tmp_path / "evalpipe.db")


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with open_store(url) as s:
        yield s


def everything(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: what "nothing was written" is checked against."""
    out = {}
    with store.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            rows = conn.execute(sa.select(table)).all()
            out[table.name] = sorted((tuple(map(repr, r)) for r in rows), key=repr)
    return out


class Clock:
    """A stand-in for the import's clock that moves a minute per call."""

    def __init__(self) -> None:
        self.minute = 0

    def __call__(self) -> str:
        self.minute += 1
        return f"2026-11-28T03:{self.minute:02d}:00+00:00"


# --- idempotence ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_id", [True, False], ids=["run_id", "no run_id"])
def test_the_same_file_without_started_at_twice_is_one_run_and_writes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch, with_id: bool
) -> None:
    monkeypatch.setattr(jsonl, "utcnow", Clock())
    run = {**MINIMAL_RUN, **({"run_id": "r-1"} if with_id else {})}
    lines = lines_of({"run": run}, GOOD, {"item_id": 2, "output": "1", "correct": False})
    first = import_run(store, lines)
    before = everything(store)
    assert import_run(store, lines) == first
    assert everything(store) == before
    assert [r.run_id for r in store.list_runs()] == [first]
    stored = store.get_run(first)
    assert stored.started_at == "2026-11-28T03:01:00+00:00"  # the first import's time, kept
    assert stored.finished_at == stored.started_at


def test_without_run_id_the_id_is_the_contents(tmp_path: Path) -> None:
    lines = lines_of({"run": MINIMAL_RUN}, GOOD)
    other = lines_of({"run": MINIMAL_RUN}, {**GOOD, "output": "43"})
    with open_store(tmp_path / "a.db") as a, open_store(tmp_path / "b.db") as b:
        assert import_run(a, lines) == import_run(b, lines)
        assert import_run(a, other) != import_run(a, lines)
        assert len(a.list_runs()) == 2
        # A stated start time is part of the content (and of the id, as its stamp).
        timed = {"run": {**MINIMAL_RUN, "started_at": "2026-11-28T03:16:42+00:00"}}
        assert import_run(a, lines_of(timed, GOOD)).startswith("20261128-031642-")


def test_the_import_time_is_not_the_content_a_stated_one_is(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl, "utcnow", Clock())
    run = {**MINIMAL_RUN, "run_id": "r-1", "started_at": "2026-11-28T03:16:42+00:00"}
    import_run(store, lines_of({"run": run}, GOOD))
    moved = {**run, "started_at": "2026-11-28T04:00:00+00:00"}
    with pytest.raises(EvalpipeError, match=r"r-1 is already in .* with different content"):
        import_run(store, lines_of({"run": moved}, GOOD), source="moved.jsonl")


def _import_file(url: str, path: str, start: float) -> str:
    time.sleep(max(0.0, start - time.time()))
    with open_store(url) as s, open(path, encoding="utf-8") as f:
        return import_run(s, f)


@pytest.mark.parametrize("with_id", [True, False], ids=["run_id", "no run_id"])
def test_eight_concurrent_imports_of_one_file_all_succeed_with_one_run(
    url: str, tmp_path: Path, with_id: bool
) -> None:
    run = {**MINIMAL_RUN, **({"run_id": "r-1"} if with_id else {})}
    samples = [{"item_id": i, "output": str(i), "correct": i % 2 == 0} for i in range(50)]
    path = write(tmp_path / "one.jsonl", {"run": run}, *samples)
    with open_store(url):
        pass  # the schema exists before the race: the race under test is the import's
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 4
    with ctx.Pool(8) as pool:
        ids = pool.starmap(_import_file, [(url, str(path), start)] * 8, chunksize=1)
    assert len(set(ids)) == 1
    with open_store(url) as s:
        assert [r.run_id for r in s.list_runs()] == ids[:1]
        assert len(s.samples(ids[0])) == 50


# --- values neither store keeps alike -------------------------------------------------------


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        (
            [{"run": {**MINIMAL_RUN, "duration_s": float("nan")}}, GOOD],
            r"^f\.jsonl:1: run\.duration_s is NaN",
        ),
        (
            [{"run": MINIMAL_RUN}, {**GOOD, "latency_s": float("inf")}],
            r"^f\.jsonl:2: latency_s is Infinity",
        ),
        (
            [{"run": MINIMAL_RUN}, {**GOOD, "meta": {"scores": [1.0, float("-inf")]}}],
            r"^f\.jsonl:2: meta\.scores\[1\] is -Infinity",
        ),
        (
            [{"run": {**MINIMAL_RUN, "provenance": {"x": float("nan")}}}, GOOD],
            r"^f\.jsonl:1: run\.provenance\.x is NaN",
        ),
    ],
)
def test_nan_and_infinity_are_refused_with_line_and_key(
    store: Store, tmp_path: Path, objects: list[Any], message: str
) -> None:
    path = write(tmp_path / "f.jsonl", *objects)
    with pytest.raises(EvalpipeError, match=message):
        import_run(store, path.read_text().splitlines(), source="f.jsonl")
    assert store.list_runs() == []


def test_a_number_json_reads_as_infinity_is_refused(store: Store) -> None:
    lines = [*lines_of({"run": MINIMAL_RUN}), '{"item_id": 1, "output": "4", "correct": true, '
             '"latency_s": 1e400}\n']  # fmt: skip
    with pytest.raises(EvalpipeError, match=r"^f\.jsonl:2: latency_s is 1e400, .*finite"):
        import_run(store, lines, source="f.jsonl")


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ([{"run": MINIMAL_RUN}, {**GOOD, "output": "4\x002"}], r"^f\.jsonl:2: output holds a NUL"),
        (
            [{"run": MINIMAL_RUN}, {**GOOD, "meta": {"a\x00b": 1}}],
            r"^f\.jsonl:2: meta holds a NUL character in a key",
        ),
        (
            [{"run": {**MINIMAL_RUN, "model": "m\x00"}}, GOOD],
            r"^f\.jsonl:1: run\.model holds a NUL",
        ),
        (
            [{"run": MINIMAL_RUN}, {**GOOD, "output": "\ud800"}],
            r"^f\.jsonl:2: output holds a lone surrogate",
        ),
    ],
)
def test_nul_and_lone_surrogates_are_refused_alike_on_both_stores(
    store: Store, objects: list[Any], message: str
) -> None:
    with pytest.raises(EvalpipeError, match=message):
        import_run(store, lines_of(*objects), source="f.jsonl")
    assert store.list_runs() == []


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ([{"run": {**MINIMAL_RUN, "n_items": 10**20}}, GOOD], r"^f\.jsonl:1: run 'n_items' must"),
        ([{"run": {**MINIMAL_RUN, "seed": -(2**64)}}, GOOD], r"^f\.jsonl:1: run 'seed' must be"),
        ([{"run": MINIMAL_RUN}, {**GOOD, "output_tokens": -1}], r"^f\.jsonl:2: sample 'output_t"),
    ],
)
def test_integers_out_of_a_columns_range_are_refused(
    store: Store, objects: list[Any], message: str
) -> None:
    with pytest.raises(EvalpipeError, match=message):
        import_run(store, lines_of(*objects), source="f.jsonl")
    assert store.list_runs() == []


# --- validated as native runs are -----------------------------------------------------------


def _run_line(**changes: Any) -> list[str]:
    return lines_of({"run": {**MINIMAL_RUN, **changes}}, GOOD, {**GOOD, "item_id": 2})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (_run_line(layout="tp2x"), r"^f\.jsonl:1: run 'layout': invalid layout 'tp2x'"),
        (_run_line(layout="tp2dcp3"), r"^f\.jsonl:1: run 'layout' tp2dcp3: dcp3 must divide tp2"),
        (_run_line(started_at="yesterday"), r"^f\.jsonl:1: run 'started_at' must be an ISO 8601"),
        (
            _run_line(finished_at="2026-13-01T00:00:00"),
            r"^f\.jsonl:1: run 'finished_at' must be an ISO 8601",
        ),
        (
            lines_of({"run": MINIMAL_RUN}, {**GOOD, "completed_at": "noon"}),
            r"^f\.jsonl:2: sample 'completed_at' must be an ISO 8601",
        ),
        (
            _run_line(status="running", n_correct=0),
            r"^f\.jsonl:1: run n_correct is 0 but the samples give 2",
        ),
        (
            _run_line(status="failed", accuracy=0.5),
            r"^f\.jsonl:1: run accuracy is 0\.5 but the samples give 1\.0",
        ),
        (
            _run_line(status="aborted", n_errors=1),
            r"^f\.jsonl:1: run n_errors is 1 but the samples give 0",
        ),
    ],
)
def test_imported_values_are_validated_as_native_ones(
    store: Store, lines: list[str], message: str
) -> None:
    with pytest.raises(EvalpipeError, match=message):
        import_run(store, lines, source="f.jsonl")
    assert store.list_runs() == []


def test_a_layout_is_stored_in_its_canonical_form(store: Store) -> None:
    run_id = import_run(store, _run_line(layout="DCP2tp2dp2"))
    assert store.get_run(run_id).config.layout == "dp2tp2dcp2"


def test_timestamps_in_iso_8601_or_unknown_are_accepted(store: Store) -> None:
    # "unknown" is what the lm-eval and AISBench importers store when a folder has no date.
    lines = _run_line(started_at="unknown", finished_at="2026-11-28T03:16:42Z")
    run = store.get_run(import_run(store, lines))
    assert (run.started_at, run.finished_at) == ("unknown", "2026-11-28T03:16:42Z")


def test_a_running_run_stored_mid_way_exports_and_imports(tmp_path: Path) -> None:
    # The runner refreshes a run's counts only when it stops: a running run's record is stale.
    config = RunConfig(
        "m", "f", "t", "1", "p", "d", None, "tp1", "cpu", "serve", {}, {}, 0, None, 1
    )
    with open_store(tmp_path / "src.db") as src, open_store(tmp_path / "dst.db") as dst:
        src.create_run(Run("live", config, "running", "2026-11-28T00:00:00+00:00", n_items=3))
        src.put_sample(Sample("live", "0", "h", "4", "4", True))
        out = io.StringIO()
        export_run(src, "live", out)
        assert import_run(dst, out.getvalue().splitlines()) == "live"
        run = dst.get_run("live")
        assert (run.status, run.n_items, run.n_correct, run.accuracy) == ("running", 3, 1, 1.0)
        again = io.StringIO()
        export_run(dst, "live", again)
        assert again.getvalue() == out.getvalue()


def test_store_copy_keeps_line_separators_inside_outputs(tmp_path: Path) -> None:
    odd = "a\u2028b\x85c\u2029d\x0ce"  # str.splitlines() would break a line at each
    lines = lines_of({"run": {**MINIMAL_RUN, "run_id": "odd"}}, {**GOOD, "output": odd})
    with open_store(tmp_path / "src.db") as src, open_store(tmp_path / "dst.db") as dst:
        import_run(src, lines)
        report = copy_runs(src, dst)
        assert report.copied == ("odd",), report.conflicts
        assert dst.samples("odd")[0].output == odd


# --- no traceback reaches a user --------------------------------------------------------------


def _cli_import(path: Path, store: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["runs", "import", str(path), "--store", str(store)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"run": {"model": "m\xff"}}\n', r"bad\.jsonl:1: not valid UTF-8"),
        (
            json.dumps({"run": MINIMAL_RUN}).encode() + b"\n" + b"\x89PNG\r\n\x1a\n\x00\x00\xff",
            r"bad\.jsonl:2: not valid UTF-8",
        ),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", r"bad\.jsonl:1: not valid UTF-8"),
        (b"\x00\x01\x02\x03\n\x04", r"bad\.jsonl:1: not valid JSON"),
        (
            json.dumps({"run": MINIMAL_RUN}).encode()
            + b'\n{"item_id": 1, "output": "x", "correct": true, "meta": '
            + b'{"a": ' * 100_000
            + b"1"
            + b"}" * 100_001
            + b"\n",
            r"bad\.jsonl:2: nested deeper than 64 levels",
        ),
        (
            json.dumps({"run": MINIMAL_RUN}).encode()
            + b'\n{"item_id": 1, "output": "x", "correct": true, "meta": '
            + b'{"a": ' * 70
            + b"1"
            + b"}" * 71
            + b"\n",
            r"bad\.jsonl:2: meta is nested deeper than 64 levels",
        ),
        (
            b'{"run": {"model": "m", "seed": ' + b"9" * 5000 + b"}}\n",
            r"bad\.jsonl:1: run\.seed is a number of 5000 digits",
        ),
        (
            json.dumps({"run": {**MINIMAL_RUN, "n_items": 10**30}}).encode() + b"\n",
            r"bad\.jsonl:1: run 'n_items' must be",
        ),
    ],
    ids=["utf-8", "binary", "gzip", "control bytes", "deep", "deeper than 64", "huge int", "int64"],
)
def test_bad_bytes_give_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    code, err = _cli_import(path, tmp_path / "s.db", capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("evalpipe: error: ")
    assert re.search(message, err), err


def test_errors_name_the_file_not_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "run.jsonl", {"run": MINIMAL_RUN}, GOOD, {"item_id": 2, "output": "x"})
    code, err = _cli_import(path, tmp_path / "s.db", capsys)
    assert code == 1
    assert f"{path}:3: sample is missing 'correct'" in err


def test_parse_takes_bytes_lines_and_names_the_bad_one() -> None:
    lines = [json.dumps({"run": MINIMAL_RUN}).encode() + b"\n", b'{"item_id": "\xc3"}\n']
    with pytest.raises(EvalpipeError, match=r"^x\.jsonl:2: not valid UTF-8 \(byte 14\)"):
        parse_jsonl(lines, source="x.jsonl")


def test_the_api_reads_bytes_and_names_the_line_of_a_bad_byte(tmp_path: Path) -> None:
    from evalpipe.api.importing import import_jsonl

    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"run": MINIMAL_RUN}) + "\n" + json.dumps(GOOD) + "\n"
    path.write_bytes(good.encode() * 1 + b'{"item_id": 2, "output": "\xe9", "correct": true}\n')
    with pytest.raises(EvalpipeError, match=rf"^{re.escape(str(path))}:3: not valid UTF-8"):
        import_jsonl(str(tmp_path / "s.db"), str(path))
    path.write_text(good, encoding="utf-8")
    assert import_jsonl(str(tmp_path / "s.db"), str(path)).startswith("import-")


def test_a_missing_file_creates_no_store(tmp_path: Path) -> None:
    from evalpipe.api.importing import import_jsonl

    with pytest.raises(EvalpipeError, match=r"cannot read .*nope\.jsonl: No such file"):
        import_jsonl(str(tmp_path / "s.db"), str(tmp_path / "nope.jsonl"))
    with pytest.raises(EvalpipeError, match=r"cannot read .*: Is a directory"):
        import_jsonl(str(tmp_path / "s.db"), str(tmp_path))
    assert not (tmp_path / "s.db").exists()
