"""A stored answer and its token trace always agree, and one process at a time runs a run.

On SQLite and PostgreSQL: the answer and its trace are written in one transaction and the
trace keeps the digest of its answer, which readers check; two `evalpipe run` processes of
one configuration (both resume the same run) against the fake OpenAI server: the second is
refused, naming the first, and sends nothing; a holder killed with SIGKILL is taken over at
once, one on another host once it has not been seen for a minute.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fake_openai import FakeOpenAI

from evalpipe.errors import EvalpipeError
from evalpipe.records import Run, RunConfig, Sample
from evalpipe.store import Store, open_store
from evalpipe.store import holders as holders_module
from evalpipe.store.holders import hold
from evalpipe.store.schema import run_holders, samples, token_traces
from evalpipe.store.traces import put_answer, read_traces, traced_items
from evalpipe.traces import DECODE, StoredTrace, TokenTrace, answer_digest, trace_of

CONFIG = RunConfig("m", "f", "t", "1", "p", "d", None, "tp1", "cpu", "serve", (), {}, 0, None, 1)


def _run(run_id: str = "r") -> Run:
    return Run(run_id, CONFIG, "running", "2026-11-28T00:00:00+00:00")


def _answer(item: str, text: str, run_id: str = "r") -> tuple[Sample, StoredTrace]:
    """A sample and its trace as the fake server gives them: one token per character."""
    ids = [ord(c) for c in text]
    trace = trace_of(ids, [-0.1] * len(ids), [[(i, -0.1)] for i in ids], 2)
    sample = Sample(
        run_id=run_id,
        item_id=item,
        prompt_hash="h",
        output=text,
        target="0",
        correct=False,
        output_tokens=len(ids),
    )
    return sample, StoredTrace(run_id, item, DECODE, 5, trace)


def _text(trace: TokenTrace) -> str:
    return "".join(chr(i) for i in trace.token_ids.tolist())


@pytest.fixture(params=["sqlite", "pg"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "pg":
        return str(request.getfixturevalue("pg_database"))
    return str(tmp_path / "s.db")


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with open_store(url) as s:
        s.create_run(_run())
        yield s


def test_the_answer_and_its_trace_are_one_transaction(store: Store) -> None:
    writes: list[int] = []
    real = store.transaction

    def spy(*, write: bool) -> Any:
        writes.append(write)
        return real(write=write)

    store.transaction = spy  # type: ignore[method-assign]
    put_answer(store, *_answer("0", "22"))
    del store.transaction
    assert writes == [True], "one write transaction for the sample and its trace"
    got = read_traces(store, "r")["0"]
    assert _text(got.trace) == store.samples("r")[0].output == "22"
    assert got.answer == answer_digest("22")


def test_a_trace_of_another_answer_is_never_read(store: Store) -> None:
    put_answer(store, *_answer("0", "22"))
    put_answer(store, *_answer("1", "7"))
    # Another writer replaces item 0's answer alone (as a process writing sample and trace
    # in two transactions did, last writer winning each): the stored trace is not its.
    other, _ = _answer("0", "19")
    store.put_samples([other])
    assert set(read_traces(store, "r")) == {"1"}
    assert traced_items(store, "r") == {"1"}  # a capture redoes item 0


def _race(url: str, who: str, start: float) -> None:
    """One process answering every item with its own text, sample and trace together."""
    with open_store(url) as s:
        time.sleep(max(0.0, start - time.time()))
        for i in range(60):
            put_answer(s, *_answer(str(i), f"{who}{i}"))


def test_two_writers_racing_on_every_item_leave_matching_pairs(store: Store, url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 3
    procs = [ctx.Process(target=_race, args=(url, who, start)) for who in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    outputs = {s.item_id: s.output for s in store.samples("r")}
    traces = read_traces(store, "r")
    assert len(outputs) == len(traces) == 60
    assert all(_text(t.trace) == outputs[i] for i, t in traces.items())


# --- one process per run -----------------------------------------------------------------


def _holder_row(store: Store) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(run_holders)).mappings().first()
    return None if row is None else dict(row)


def test_a_live_holder_on_another_host_refuses_a_second_and_a_silent_one_is_taken_over(
    store: Store,
) -> None:
    row = {"run_id": "r", "token": "x", "host": "gpu-7", "pid": 4242, "started_at": "then"}
    with store.engine.begin() as conn:
        conn.execute(run_holders.insert(), [{**row, "seen_at": time.time() - 5}])
    refused = r"being run by process 4242 on gpu-7 .*last seen 5 s"
    with pytest.raises(EvalpipeError, match=refused), hold(store, "r"):
        pass
    with store.engine.begin() as conn:
        stale = time.time() - holders_module.STALE_S - 1
        conn.execute(run_holders.update().values(seen_at=stale))
    with hold(store, "r") as claim:
        assert _holder_row(store)["token"] == claim.me.token  # type: ignore[index]
    assert _holder_row(store) is None  # released


def test_a_holder_whose_row_was_taken_stops_before_its_next_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(holders_module, "HEARTBEAT_S", 0.05)
    with hold(store, "r") as claim:
        with store.engine.begin() as conn:
            conn.execute(run_holders.update().values(token="other", host="gpu-7", pid=1))
        deadline = time.monotonic() + 10
        while claim.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(EvalpipeError, match="taken over by process 1 on gpu-7"):
            claim.check()


def _cli(url: str, srv: FakeOpenAI, limit: int) -> list[str]:
    return [
        sys.executable, "-m", "evalpipe", "run", "arith", "--endpoint", srv.url, "--model", "m",
        "--limit", str(limit), "--concurrency", "1", "--store", url, "--quiet",
    ]  # fmt: skip


def _wait_for_holder(url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open_store(url, create=False) as s:
                row = _holder_row(s)
            if row is not None:
                return row
        except EvalpipeError:
            pass  # not created yet
        time.sleep(0.1)
    raise AssertionError("the first run never held its run")


def _stored(url: str) -> tuple[int, int]:
    with open_store(url) as s, s.engine.connect() as conn:
        n_samples = conn.execute(sa.select(sa.func.count()).select_from(samples)).scalar()
        n_traces = conn.execute(sa.select(sa.func.count()).select_from(token_traces)).scalar()
    return int(n_samples or 0), int(n_traces or 0)


def test_a_second_process_on_a_running_run_is_refused_naming_the_first(url: str) -> None:
    with FakeOpenAI(model="m", answer=" The answer is 3.", delay_s=0.15) as srv:
        first = subprocess.Popen(_cli(url, srv, 24), stderr=subprocess.PIPE, text=True)
        try:
            row = _wait_for_holder(url)
            second = subprocess.run(_cli(url, srv, 24), capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stderr
            assert f"being run by process {first.pid} on {socket.gethostname()}" in second.stderr
            assert row["pid"] == first.pid
        finally:
            _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert _stored(url) == (24, 24)
    assert srv.completions == 24, "no item generated twice: the second sent nothing"


def test_a_killed_holder_is_taken_over_at_once_and_nothing_is_generated_twice(url: str) -> None:
    with FakeOpenAI(model="m", answer=" The answer is 3.", delay_s=0.1) as srv:
        first = subprocess.Popen(_cli(url, srv, 20), stderr=subprocess.DEVNULL)
        _wait_for_holder(url)
        while _stored(url)[0] < 3:
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        done = _stored(url)[0]
        again = subprocess.run(_cli(url, srv, 20), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
    assert _stored(url) == (20, 20)
    assert srv.completions <= 20 + 1, (done, srv.completions)  # at most the one in flight
