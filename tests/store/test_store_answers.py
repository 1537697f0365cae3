"""Bulk reads for comparison (evalpipe.store.answers) on an SQLite file and on PostgreSQL:
the answers equal those built from full samples, for many runs at once, in chunks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from builders import run_config

from evalpipe.compare.core import Answer
from evalpipe.records import Run, Sample
from evalpipe.store import Store, answers, open_store
from evalpipe.store.answers import ANSWER_FIELDS, LIGHT_FIELDS, read_answers, read_fields


@pytest.fixture(params=["sqlite", "pg"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (
        str(request.getfixturevalue("pg_database"))
        if request.param == "pg"
        else str(tmp_path / "evalpipe.db")
    )
    with open_store(url) as s:
        yield s


def _samples(run_id: str, n: int, shift: int) -> list[Sample]:
    """Right, wrong, errored (no verdict, no output), unscored and text-id samples."""
    out = []
    for i in range(n):
        kind = (i + shift) % 4
        out.append(
            Sample(
                run_id=run_id,
                item_id=str(i) if i % 5 else f"q-{i}",
                prompt_hash=f"h{i}",
                output=None if kind == 2 else f"answer {i} ünïcode {shift}",
                target=str(i) if i % 3 else None,
                correct={0: True, 1: False, 2: None, 3: None}[kind],
                extracted={} if kind == 2 else {"strict": str(i), "flexible": None},
                correct_by={} if kind == 2 else {"strict": kind == 0, "flexible": kind != 1},
                prompt_tokens=None if i % 7 == 0 else 100 + i,
                error="HTTP 500" if kind == 2 else None,
            )
        )
    return out


def _add(store: Store, k: int, n: int = 23) -> list[Sample]:
    run = Run(
        run_id=f"20261201-0000{k:02d}-abcdef",
        config=run_config("tp1", seed=k),
        status="finished",
        started_at=f"2026-12-01T00:00:{k:02d}+00:00",
    )
    samples = _samples(run.run_id, n, k)
    store.create_run(run, samples)
    return samples


def test_answers_of_many_runs_equal_those_of_full_samples(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(answers, "RUNS_PER_QUERY", 2)  # five runs: three statements
    stored = {s[0].run_id: s for s in (_add(store, k) for k in range(5))}
    got = read_answers(store, [*stored, "no-such-run"], Answer, ANSWER_FIELDS)
    assert got == {
        **{
            run_id: {s.item_id: Answer.of(s) for s in samples} for run_id, samples in stored.items()
        },
        "no-such-run": {},
    }
    # Exact types: booleans are bools (not 0/1) and a missing output is "".
    one = next(iter(stored))
    for a in got[one].values():
        assert type(a.ok) is bool and type(a.correct) is bool and isinstance(a.output, str)


def test_light_answers_read_only_what_figures_need(store: Store) -> None:
    samples = _add(store, 1)
    empty: MappingProxyType[str, object] = MappingProxyType({})
    got = read_answers(store, [samples[0].run_id], Answer, LIGHT_FIELDS, (None, empty, empty))
    want = {s.item_id: Answer.of(s) for s in samples}
    assert got[samples[0].run_id].keys() == want.keys()
    for item, a in got[samples[0].run_id].items():
        w = want[item]
        assert (a.ok, a.correct, a.output, a.prompt_tokens) == (
            w.ok,
            w.correct,
            w.output,
            w.prompt_tokens,
        )
        assert a.target is None and a.extracted is empty and a.correct_by is empty


def test_fields_of_a_few_samples(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "KEYS_PER_QUERY", 3)  # several statements
    runs = [_add(store, k) for k in range(3)]
    wanted = [(s.run_id, s.item_id) for samples in runs for s in samples[::4]]
    got = read_fields(
        store,
        [*wanted, ("no-such-run", "1"), (runs[0][0].run_id, "nope")],
        ("target", "extracted", "correct"),
    )
    by_key = {(s.run_id, s.item_id): s for samples in runs for s in samples}
    assert got == {
        k: (by_key[k].target, dict(by_key[k].extracted), by_key[k].correct is True) for k in wanted
    }


def test_unknown_or_keyless_fields_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown sample fields"):
        read_answers(store, ["r"], Answer, ("item_id", "verdict"))
    with pytest.raises(ValueError, match="item_id"):
        read_answers(store, ["r"], Answer, ("ok", "correct"))
