"""Token traces in the store, on an SQLite file and on PostgreSQL: round trip, replacement,
errors that never replace a trace, stamps, and deletion with the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_store import make_run

from evalpipe.store import Store, open_store
from evalpipe.store.traces import (
    put_trace_errors,
    put_traces,
    read_trace_errors,
    read_traces,
    trace_sources,
    trace_stamp,
    traced_items,
)
from evalpipe.traces import DECODE, StoredTrace, decode, encode, trace_of


@pytest.fixture(params=["sqlite", "pg"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = request.getfixturevalue("pg_database") if request.param == "pg" else tmp_path / "t.db"
    with open_store(url) as s:
        yield s


def _trace(seed: int, n: int = 7, k: int = 3) -> StoredTrace:
    rng = np.random.default_rng(seed)
    tops = [
        [(int(t), float(-rng.exponential())) for t in rng.choice(1000, size=k, replace=False)]
        for _ in range(n)
    ]
    ids = [max(p, key=lambda x: x[1])[0] for p in tops]
    lps = [max(p, key=lambda x: x[1])[1] for p in tops]
    return StoredTrace("r", f"{seed}", DECODE, 40 + seed, trace_of(ids, lps, tops, k))


def test_traces_round_trip_and_replace(store: Store) -> None:
    run = make_run("r")
    store.create_run(run)
    first = [_trace(1), _trace(2)]
    put_traces(store, first)
    got = read_traces(store, "r")
    assert set(got) == {"1", "2"}
    assert got["1"] == first[0] and got["1"].start == 41
    assert got["2"].trace.top_ids.shape == (7, 3)
    # A forced trace of the same item is a different key; writing again replaces.
    forced = StoredTrace("r", "1", "base", 41, _trace(5).trace)
    put_traces(store, [forced, _trace(1)])
    assert read_traces(store, "r", "base") == {"1": forced}
    assert trace_sources(store, "r") == {DECODE: 2, "base": 1}
    assert traced_items(store, "r") == {"1", "2"}
    assert read_traces(store, "r", item_ids=["2", "9"]).keys() == {"2"}


def test_an_error_never_replaces_a_trace(store: Store) -> None:
    store.create_run(make_run("r"))
    put_traces(store, [_trace(1)])
    put_trace_errors(store, "r", DECODE, {"1": "too long", "3": "HTTP 400: too long"})
    assert read_trace_errors(store, "r") == {"3": "HTTP 400: too long"}
    assert read_traces(store, "r")["1"] == _trace(1)
    # A trace replaces an error.
    fixed = StoredTrace("r", "3", DECODE, 0, _trace(3).trace)
    put_traces(store, [fixed])
    assert read_trace_errors(store, "r") == {}
    assert trace_sources(store, "r") == {DECODE: 2}


def test_stamp_changes_with_the_traces_and_deleting_the_run_deletes_them(store: Store) -> None:
    store.create_run(make_run("r"))
    store.create_run(make_run("s"))
    assert trace_stamp(store, ["r", "s"]) == {}
    put_traces(store, [_trace(1)])
    before = trace_stamp(store, ["r", "s"])
    assert set(before) == {"r"}
    put_traces(store, [_trace(2)])
    assert trace_stamp(store, ["r"]) != before
    store.delete_run("r")
    assert read_traces(store, "r") == {}
    assert trace_stamp(store, ["r"]) == {}


def test_codec_rejects_what_is_not_a_trace() -> None:
    blob = encode(_trace(1).trace)
    assert decode(blob) == _trace(1).trace
    import zlib

    raw = zlib.decompress(blob)
    for bad in (b"nope", zlib.compress(b"EPT2" + raw[4:]), zlib.compress(raw[:-3])):
        with pytest.raises(ValueError, match="token trace"):
            decode(bad)
