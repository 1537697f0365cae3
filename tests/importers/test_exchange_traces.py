"""Token traces in the run exchange format (version 3, and 4 with its end line) and in
`store copy`, on real stores: round trip byte for byte, idempotence, the re-import rule, bad
trace lines, older versions, SQLite → PostgreSQL, and other harnesses' imports carrying none.

The samples here have 6 output tokens, the length of their decode-path traces: an import
checks that a trace has one position per generated token."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_exchange import CHAT, RUN_ID, full_run, full_samples, sealed

from evalpipe.errors import EvalpipeError
from evalpipe.importers.aisbench.build import import_aisbench
from evalpipe.importers.jsonl import export_run, import_run, parse_jsonl
from evalpipe.importers.lmeval.build import import_lmeval
from evalpipe.importers.transfer import CopyReport, copy_runs
from evalpipe.records import EXCHANGE_VERSION, Sample
from evalpipe.store import Store, open_store
from evalpipe.store.traces import (
    put_trace_errors,
    put_traces,
    read_trace_errors,
    read_traces,
    trace_sources,
)
from evalpipe.traces import DECODE, StoredTrace, TokenTrace, encode, trace_of

FIXTURES = Path(__file__).parents[1] / "fixtures"
# A run that is not in any store of these tests: a forced source is kept as written.
ELSEWHERE = "20261101-000000-eeeeee"


def trace(seed: int, n: int = 6, k: int = 3) -> TokenTrace:
    """A small trace whose numbers depend on ``seed`` (so two seeds never compare equal)."""
    ids = [(seed * 31 + i * 7) % 1000 for i in range(n)]
    lps = [-0.01 * (seed + i + 1) for i in range(n)]
    alternatives = [
        [(t, lp), (t + 1, lp - 1.5), (t + 2, lp - 2.25)] for t, lp in zip(ids, lps, strict=True)
    ]
    tops = [a[: k - 1] for a in alternatives]
    return trace_of(ids, lps, tops, k)  # k - 1 alternatives: the last column is padding


def fill_traces(store: Store, run_id: str = RUN_ID) -> None:
    put_traces(
        store,
        [
            StoredTrace(run_id, "1", DECODE, 50, trace(1)),
            StoredTrace(run_id, "0", DECODE, 40, trace(0)),
            StoredTrace(run_id, "0", ELSEWHERE, 40, trace(9, n=4)),
        ],
    )
    put_trace_errors(store, run_id, ELSEWHERE, {"1": "HTTP 400: too long"})
    put_trace_errors(store, run_id, DECODE, {"2": "HTTP 500: engine died"})


def traced_samples() -> list[Sample]:
    """The exchange tests' samples, each answer 6 tokens long like its trace."""
    return [s if s.error else dataclasses.replace(s, output_tokens=6) for s in full_samples()]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "src.db")
    run = full_run().with_(output_tokens=12)  # its samples' sum
    s.create_run(run, traced_samples(), {"h0": "What is 1+1?", "h1": json.dumps(CHAT)})
    fill_traces(s)
    yield s
    s.close()


def export_text(store: Store, run_id: str = RUN_ID) -> str:
    out = io.StringIO()
    export_run(store, run_id, out)
    return out.getvalue()


def trace_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line)["trace"] for line in text.splitlines() if line.startswith('{"trace"')]


def without_traces(text: str, version: int = 2) -> list[str]:
    """The file as an exchange-version-``version`` writer would have written it, without its
    end line (:func:`sealed` adds one)."""
    head, *rest = text.splitlines()
    run = json.loads(head)
    run["run"]["schema_version"] = version
    kept = (line for line in rest if not line.startswith(('{"trace"', '{"end"')))
    return [json.dumps(run), *kept]


@contextmanager
def counting_writes(store: Store) -> Iterator[list[int]]:
    """Count the store's write transactions inside the block."""
    count = [0]
    real = store.transaction

    @contextmanager
    def spy(*, write: bool) -> Iterator[Any]:
        count[0] += write
        with real(write=write) as conn:
            yield conn

    store.transaction = spy  # type: ignore[method-assign]
    try:
        yield count
    finally:
        del store.transaction


def test_export_writes_one_trace_line_per_row_in_a_fixed_order(store: Store) -> None:
    text = export_text(store)
    assert json.loads(text.splitlines()[0])["run"]["schema_version"] == EXCHANGE_VERSION == 4
    lines = trace_lines(text)
    # Decode path ("") first, then by source; within a source, the sample lines' order.
    assert [(t["source"], t["item_id"]) for t in lines] == [
        ("", "0"),
        ("", "1"),
        ("", "2"),
        (ELSEWHERE, "0"),
        (ELSEWHERE, "1"),
    ]
    assert lines[0] == {
        "item_id": "0",
        "source": "",
        "start": 40,
        "k": 3,
        "n_tokens": 6,
        "data": base64.b64encode(encode(trace(0))).decode("ascii"),
        "answer_sha256": hashlib.sha256(b"The answer is 2.").hexdigest(),
    }
    assert lines[2] == {"item_id": "2", "source": "", "error": "HTTP 500: engine died"}
    assert (lines[3]["n_tokens"], lines[4]) == (
        4,
        {"item_id": "1", "source": ELSEWHERE, "error": "HTTP 400: too long"},
    )
    assert text.splitlines()[4].startswith('{"trace"')  # after the three sample lines
    assert json.loads(text.splitlines()[-1])["end"]["traces"] == 5  # the end line, last


def test_export_then_import_then_export_is_identical(store: Store, tmp_path: Path) -> None:
    text = export_text(store)
    with open_store(tmp_path / "dst.db") as dst:
        assert import_run(dst, io.StringIO(text)) == RUN_ID
        assert export_text(dst) == text
        assert dst.samples(RUN_ID) == traced_samples()
        assert read_traces(dst, RUN_ID) == read_traces(store, RUN_ID)
        assert read_traces(dst, RUN_ID, ELSEWHERE)["0"].trace == trace(9, n=4)
        assert read_traces(dst, RUN_ID)["1"].start == 50
        assert read_trace_errors(dst, RUN_ID, ELSEWHERE) == {"1": "HTTP 400: too long"}
        assert trace_sources(dst, RUN_ID) == {"": 2, ELSEWHERE: 1}


def test_reimporting_identical_content_writes_nothing(store: Store, tmp_path: Path) -> None:
    text = export_text(store)
    with open_store(tmp_path / "dst.db") as dst:
        import_run(dst, text.splitlines())
        with counting_writes(dst) as writes:
            assert import_run(dst, text.splitlines()) == RUN_ID
        assert writes == [0]
    with counting_writes(store) as writes:
        assert import_run(store, text.splitlines()) == RUN_ID  # back into its own store
    assert writes == [0]


def test_reimport_adds_the_traces_the_store_lacks(store: Store, tmp_path: Path) -> None:
    text = export_text(store)
    with open_store(tmp_path / "dst.db") as dst:
        import_run(dst, without_traces(text))
        assert trace_sources(dst, RUN_ID) == {}
        import_run(dst, text.splitlines())
        assert export_text(dst) == text
        # Traces scored in the destination since are kept when the older file comes again.
        put_traces(dst, [StoredTrace(RUN_ID, "1", "other-run", 50, trace(5))])
        assert import_run(dst, text.splitlines()) == RUN_ID
        assert trace_sources(dst, RUN_ID) == {"": 2, ELSEWHERE: 1, "other-run": 1}


def test_a_stored_trace_is_not_replaced_by_an_error_line(store: Store, tmp_path: Path) -> None:
    with open_store(tmp_path / "dst.db") as dst:
        import_run(dst, export_text(store).splitlines())
        put_traces(dst, [StoredTrace(RUN_ID, "1", ELSEWHERE, 50, trace(7))])
        assert import_run(dst, export_text(store).splitlines()) == RUN_ID
        assert read_traces(dst, RUN_ID, ELSEWHERE)["1"].trace == trace(7)
        assert read_trace_errors(dst, RUN_ID, ELSEWHERE) == {}


def test_a_different_stored_trace_is_a_conflict(store: Store, tmp_path: Path) -> None:
    text = export_text(store)
    with open_store(tmp_path / "dst.db") as dst:
        import_run(dst, without_traces(text))
        put_traces(dst, [StoredTrace(RUN_ID, "0", DECODE, 40, trace(3))])
        with (
            counting_writes(dst) as writes,
            pytest.raises(
                EvalpipeError, match=r"different content \(a different token trace for item '0'\)"
            ),
        ):
            import_run(dst, text.splitlines())
        assert writes == [0]  # not even the traces that did not conflict
        assert trace_sources(dst, RUN_ID) == {"": 1}
        new = import_run(dst, text.splitlines(), new_id=True)
        # A new id for the run; the forced source still names the run that was scored.
        assert read_traces(dst, new) == {
            i: StoredTrace(new, i, DECODE, t.start, t.trace)
            for i, t in read_traces(store, RUN_ID).items()
        }
        assert read_traces(dst, new, ELSEWHERE)["0"].source == ELSEWHERE


def test_older_versions_import_without_traces(store: Store, tmp_path: Path) -> None:
    with open_store(tmp_path / "dst.db") as dst:
        run_id = import_run(dst, (FIXTURES / "exchange-v1.jsonl").read_text().splitlines())
        assert trace_sources(dst, run_id) == {}
        assert dst.samples(run_id)
        assert import_run(dst, without_traces(export_text(store), 2)) == RUN_ID
        assert trace_sources(dst, RUN_ID) == {}


def _line(**trace_body: Any) -> str:
    return json.dumps({"trace": trace_body})


GOOD = {"item_id": "0", "source": "", "start": 40, "k": 3, "n_tokens": 6}
DATA = base64.b64encode(encode(trace(0))).decode("ascii")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (_line(**GOOD, data=DATA, extra=1), r":5: unknown trace key 'extra'"),
        (_line(**GOOD), r":5: trace is missing 'data'"),
        (_line(item_id="0", source="", error="x", start=1), r":5: unknown trace key 'start'"),
        (_line(**GOOD, data=DATA, error="x"), r":5: .*either 'data' or 'error', not both"),
        (_line(**{**GOOD, "start": -1}, data=DATA), r":5: trace 'start' must be a non-negative"),
        (_line(**{**GOOD, "source": None}, data=DATA), r":5: trace 'source' must be a string"),
        (json.dumps({"trace": [1]}), r":5: a trace must be a JSON object"),
        (_line(**GOOD, data="not base64!"), r":5: trace 'data' is not valid base64"),
        (
            _line(**GOOD, data=base64.b64encode(b"garbage").decode()),
            r":5: trace 'data' cannot be read: not a stored token trace",
        ),
        (
            _line(**GOOD, data=base64.b64encode(zlib.compress(b"EPT2" + bytes(6))).decode()),
            r":5: trace 'data' cannot be read: not a stored token trace \(magic",
        ),
        (
            _line(**{**GOOD, "k": 5}, data=DATA),
            r":5: trace says k=5, n_tokens=6 but its data holds k=3, n_tokens=6",
        ),
        (
            _line(**{**GOOD, "item_id": "9"}, data=DATA),
            r":5: trace for item '9', which has no sample line",
        ),
    ],
)
def test_bad_trace_lines_are_rejected_with_the_line(
    store: Store, tmp_path: Path, line: str, message: str
) -> None:
    lines = sealed([*without_traces(export_text(store), EXCHANGE_VERSION), line])
    with open_store(tmp_path / "dst.db") as dst:
        with pytest.raises(EvalpipeError, match="^f.jsonl" + message):
            import_run(dst, lines, source="f.jsonl")
        assert dst.list_runs() == []  # nothing half-imported


def test_a_second_trace_for_one_key_is_rejected(store: Store) -> None:
    lines = sealed([*export_text(store).splitlines()[:-1], _line(**GOOD, data=DATA)])
    with pytest.raises(EvalpipeError, match=r"input:10: a second trace for item '0', source ''"):
        parse_jsonl(lines)


def test_a_trace_line_in_a_version_2_file_is_rejected(store: Store) -> None:
    lines = [*without_traces(export_text(store), 2), _line(**GOOD, data=DATA)]
    with pytest.raises(EvalpipeError, match=r"input:5: a trace line in a version 2 file"):
        parse_jsonl(lines)


def test_store_copy_carries_traces_to_postgres_idempotently(
    store: Store, tmp_path: Path, pg_database: str
) -> None:
    with open_store(pg_database) as pg:
        assert copy_runs(store, pg) == CopyReport(copied=(RUN_ID,))
        assert export_text(pg) == export_text(store)
        assert trace_sources(pg, RUN_ID) == {"": 2, ELSEWHERE: 1}
        with counting_writes(pg) as writes:
            assert copy_runs(store, pg) == CopyReport(skipped_identical=(RUN_ID,))
        assert writes == [0]
        # The baseline is scored at the source after the copy: the next copy brings that in.
        put_traces(store, [StoredTrace(RUN_ID, "1", "later-run", 50, trace(4))])
        assert copy_runs(store, pg) == CopyReport(merged=(RUN_ID,))
        assert read_traces(pg, RUN_ID, "later-run")["1"].trace == trace(4)
        assert copy_runs(store, pg) == CopyReport(skipped_identical=(RUN_ID,))
        # And back to SQLite, byte for byte.
        with open_store(tmp_path / "back.db") as back:
            assert copy_runs(pg, back) == CopyReport(copied=(RUN_ID,))
            assert export_text(back) == export_text(store)


def test_store_copy_reports_a_conflicting_trace(store: Store, tmp_path: Path) -> None:
    with open_store(tmp_path / "dst.db") as dst:
        copy_runs(store, dst)
        put_traces(dst, [StoredTrace(RUN_ID, "0", DECODE, 40, trace(8))])
        (conflict,) = copy_runs(store, dst).conflicts
        assert conflict.run_id == RUN_ID
        assert "finished" in conflict.reason and "token trace for item '0'" in conflict.reason
        assert read_traces(dst, RUN_ID)["0"].trace == trace(8)


def test_store_copy_merges_the_traces_of_a_run_in_progress(tmp_path: Path) -> None:
    running = full_run().with_(status="running", finished_at=None)
    with open_store(tmp_path / "a.db") as src, open_store(tmp_path / "b.db") as dst:
        src.create_run(running, traced_samples()[:1], {"h0": "What is 1+1?"})
        put_traces(src, [StoredTrace(RUN_ID, "0", DECODE, 40, trace(0))])
        assert copy_runs(src, dst).copied == (RUN_ID,)
        src.put_samples(traced_samples()[1:])
        src.update_run(src.get_run(RUN_ID).with_(**src.summarize(RUN_ID)))
        put_traces(src, [StoredTrace(RUN_ID, "0", DECODE, 40, trace(2))])  # re-captured
        put_traces(src, [StoredTrace(RUN_ID, "1", DECODE, 50, trace(1))])
        assert copy_runs(src, dst) == CopyReport(merged=(RUN_ID,))
        assert read_traces(dst, RUN_ID) == read_traces(src, RUN_ID)
        assert copy_runs(src, dst) == CopyReport(skipped_identical=(RUN_ID,))


def test_other_harnesses_imports_store_no_traces(tmp_path: Path) -> None:
    with open_store(tmp_path / "h.db") as s:
        ((lmeval, _),) = import_lmeval(s, FIXTURES / "lmeval" / "gsm8k-smollm2-tp1")
        (folder,) = (FIXTURES / "aisbench" / "details").iterdir()
        ais = import_aisbench(s, folder, layout="tp1")
        for run_id in (lmeval.run.run_id, *(r.run_id for r in ais)):
            assert s.samples(run_id)
            assert trace_sources(s, run_id) == {}
            assert not trace_lines(export_text(s, run_id))
