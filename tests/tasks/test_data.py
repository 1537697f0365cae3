"""Data loading (files, data directory, hf:, generators) and the arith generator."""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.tasks import generators
from evalpipe.tasks.data import DATA_DIR_ENV, jsonl_sha256, load_dataset, read_rows
from evalpipe.tasks.generators.arith import arith
from evalpipe.tasks.generators.registry import GENERATORS
from evalpipe.tasks.load import load_task
from evalpipe.tasks.scoring import normalize_number
from evalpipe.tasks.spec import TaskSpec

GSM8K_SHA256 = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
GSM8K_ITEMS = 1319


@pytest.fixture(autouse=True)
def _no_ambient_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A developer's EVALPIPE_DATA_DIR or fetched cache must not change which source a test
    # exercises.
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("EVALPIPE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def gsm8k() -> TaskSpec:
    return load_task("gsm8k")


# --- files and the data directory -----------------------------------------------------------


def test_data_dir_loads_gsm8k_with_the_published_sha(gsm8k: TaskSpec, shared_data: Path) -> None:
    ds = load_dataset(gsm8k, data_dir=str(shared_data))
    assert ds.sha256 == GSM8K_SHA256
    assert ds.n_total == GSM8K_ITEMS
    assert len(ds.items) == GSM8K_ITEMS
    assert ds.source == f"file:{(shared_data / 'gsm8k' / 'test.jsonl').resolve()}"
    first = ds.items[0]
    assert first.item_id == "0"
    assert first.target == "18"
    assert first.fields["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert "target" not in first.fields and "answer" not in first.fields
    assert [it.item_id for it in ds.items] == [str(i) for i in range(GSM8K_ITEMS)]


def test_gsm8k_targets_are_all_numbers(gsm8k: TaskSpec, shared_data: Path) -> None:
    ds = load_dataset(gsm8k, data_dir=str(shared_data))
    raw = (shared_data / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(raw) == len(ds.items)
    for item, line in zip(ds.items, raw, strict=True):
        assert normalize_number(item.target) is not None, (item.item_id, item.target)
        # the target is exactly what follows the final '####' of the answer
        assert json.loads(line)["answer"].endswith("#### " + item.target)
    commas = [it.target for it in ds.items if "," in it.target]
    assert commas, "GSM8K has targets with thousands separators; normalisation must see them"
    assert all(normalize_number(t) == t.replace(",", "") for t in commas)


def test_env_data_dir_and_explicit_path(
    gsm8k: TaskSpec, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(shared_data))
    via_env = load_dataset(gsm8k, limit=3)
    assert via_env.sha256 == GSM8K_SHA256
    path = shared_data / "gsm8k" / "test.jsonl"
    via_path = load_dataset(gsm8k, data_path=str(path), limit=3)
    assert via_path.items == via_env.items
    assert via_path.source == f"file:{path.resolve()}"


def test_explicit_path_wins_over_data_dir(
    gsm8k: TaskSpec, shared_data: Path, tmp_path: Path
) -> None:
    own = tmp_path / "mine.jsonl"
    own.write_text(json.dumps({"question": "q?", "answer": "x\n#### 7"}) + "\n")
    ds = load_dataset(gsm8k, data_path=str(own), data_dir=str(shared_data))
    assert [it.target for it in ds.items] == ["7"]
    assert ds.sha256 == hashlib.sha256(own.read_bytes()).hexdigest()


def test_limit_takes_the_first_items_with_stable_ids(gsm8k: TaskSpec, shared_data: Path) -> None:
    full = load_dataset(gsm8k, data_dir=str(shared_data))
    ds = load_dataset(gsm8k, data_dir=str(shared_data), limit=5)
    assert ds.items == full.items[:5]
    assert [it.item_id for it in ds.items] == ["0", "1", "2", "3", "4"]
    assert ds.n_total == GSM8K_ITEMS
    assert ds.sha256 == GSM8K_SHA256  # the hash is of the whole file, the limit is recorded apart
    assert len(load_dataset(gsm8k, data_dir=str(shared_data), limit=10_000).items) == GSM8K_ITEMS


@pytest.mark.parametrize("limit", [0, -1])
def test_bad_limit(gsm8k: TaskSpec, shared_data: Path, limit: int) -> None:
    with pytest.raises(EvalpipeError, match="--limit"):
        load_dataset(gsm8k, data_dir=str(shared_data), limit=limit)


def test_json_list_file(gsm8k: TaskSpec, tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"w\n#### {i}"} for i in range(3)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    ds = load_dataset(gsm8k, data_path=str(path))
    assert [(it.item_id, it.target, it.fields["question"]) for it in ds.items] == [
        ("0", "0", "q0"),
        ("1", "1", "q1"),
        ("2", "2", "q2"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.jsonl",
            '{"question": "a", "answer": "#### 1"}\n{"question": \n',
            r"bad\.jsonl:2: bad JSON",
        ),
        ("miss.jsonl", '{"question": "a"}\n', r"miss\.jsonl:1: no field 'answer'"),
        ("nomark.jsonl", '{"question": "a", "answer": "5"}\n', r"nomark\.jsonl:1: bad target"),
        ("nan.jsonl", '{"question": "a", "answer": "#### five"}\n', r"nan\.jsonl:1: target 'five'"),
        ("list.jsonl", "[1, 2]\n", r"list\.jsonl:1: a record must be a JSON object"),
        ("notlist.json", '{"question": "a"}', r"must hold a list"),
        ("broken.json", '[{"question": }]', r"broken\.json:1: bad JSON"),
        ("data.csv", "question,answer\n", r"unsupported data file type"),
        ("empty.jsonl", "\n", r"has no records"),
    ],
)
def test_bad_files(gsm8k: TaskSpec, tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(EvalpipeError, match=message):
        load_dataset(gsm8k, data_path=str(path))


def test_missing_file_and_missing_data_dir_file(gsm8k: TaskSpec, tmp_path: Path) -> None:
    with pytest.raises(EvalpipeError, match="does not exist"):
        load_dataset(gsm8k, data_path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(EvalpipeError, match=r"gsm8k/test\.jsonl is not in the data directory"):
        load_dataset(gsm8k, data_dir=str(tmp_path))


def test_read_rows_locations(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    rows, digest = read_rows(path)
    assert rows == [(f"{path}:1", {"a": 1}), (f"{path}:3", {"a": 2})]
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


# --- hf: sources ---------------------------------------------------------------------------


def test_hf_without_datasets_says_what_to_do(
    gsm8k: TaskSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(EvalpipeError) as info:
        load_dataset(gsm8k)
    assert "--data" in info.value.message and DATA_DIR_ENV in info.value.message
    assert "datasets" in info.value.message


def _fake_datasets(rows: list[dict[str, Any]] | Exception) -> types.ModuleType:
    module = types.ModuleType("datasets")
    calls: list[tuple[Any, ...]] = []

    def load(path: str, name: str | None, split: str, revision: str | None) -> Iterator[Any]:
        calls.append((path, name, split, revision))
        if isinstance(rows, Exception):
            raise rows
        return iter(rows)

    module.load_dataset = load  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


def test_hf_rows_hash_like_the_file(
    gsm8k: TaskSpec, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = shared_data / "gsm8k" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    fake = _fake_datasets(rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    ds = load_dataset(gsm8k, limit=2)
    assert fake.calls == [("openai/gsm8k", "main", "test", None)]
    assert ds.source == "hf:openai/gsm8k@main/test"
    assert ds.sha256 == GSM8K_SHA256
    assert ds.items == load_dataset(gsm8k, data_path=str(path), limit=2).items


def test_hf_failure_is_a_user_error(gsm8k: TaskSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(ConnectionError("offline")))
    with pytest.raises(EvalpipeError, match=r"ConnectionError: offline.*--data PATH"):
        load_dataset(gsm8k)


def test_jsonl_sha256_matches_bytes() -> None:
    records = [{"b": 1, "a": "\u2019"}, {"x": [1, 2]}]
    expected = hashlib.sha256(b'{"b": 1, "a": "\\u2019"}\n{"x": [1, 2]}\n').hexdigest()
    assert jsonl_sha256(records) == expected


# --- generated data ------------------------------------------------------------------------


def _apply(start: int, steps: list[list[Any]]) -> int:
    value = start
    for op, x in steps:
        value = {"+": value + x, "-": value - x, "*": value * x}[op]
    return value


_EQUATION = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


@pytest.mark.parametrize(
    "params",
    [
        {"n": 300, "seed": 1},
        {"n": 200, "seed": 7, "min_digits": 1, "max_digits": 4, "n_ops": 4, "ops": "+-*"},
        {"n": 100, "seed": 3, "min_digits": 3, "max_digits": 3, "n_ops": 1, "ops": "-"},
    ],
)
def test_arith_answers_are_right(params: dict[str, Any]) -> None:
    rows = arith(**params)
    assert len(rows) == params["n"]
    ops_seen = set()
    for row in rows:
        answer = _apply(row["start"], row["steps"])
        assert row["answer"] == str(answer)
        assert answer >= 1
        assert len(row["steps"]) == params.get("n_ops", 2)
        ops_seen |= {op for op, _ in row["steps"]}
        # Every number in the question is, in order, the start and then each operand.
        numbers = [int(n) for n in re.findall(r"\d+", row["question"])]
        assert numbers == [row["start"], *(x for _, x in row["steps"])]
        # Each worked step in the rationale is true arithmetic and they chain to the answer.
        equations = _EQUATION.findall(row["rationale"])
        assert len(equations) == len(row["steps"])
        for a, op, b, c in equations:
            assert _apply(int(a), [[op, int(b)]]) == int(c)
        assert row["rationale"].endswith(f"The answer is {answer}.")
        lo, hi = 10 ** (params.get("min_digits", 2) - 1), 10 ** params.get("max_digits", 3)
        assert lo <= row["start"] < hi
    assert ops_seen <= set(params.get("ops", "+-"))


def test_arith_is_deterministic_and_seeded() -> None:
    state = random.getstate()
    a = arith(n=50, seed=11)
    assert random.getstate() == state  # never touches the global generator
    random.seed(0)
    assert arith(n=50, seed=11) == a
    assert arith(n=50, seed=12) != a
    assert arith(n=10, seed=11) == a[:10]  # item i does not depend on n
    assert len({r["question"] for r in a}) > 45


def test_arith_output_is_pinned() -> None:
    # Locks generator "arith" version 1: if this changes, bump the version in generators.py.
    assert GENERATORS["arith"].version == "1"
    rows = arith(n=20, seed=2024, min_digits=2, max_digits=3, n_ops=3, ops="+-*")
    assert rows[0] == ARITH_PINNED_FIRST
    assert jsonl_sha256(rows) == ARITH_PINNED_SHA256


ARITH_PINNED_FIRST: dict[str, Any] = {
    "question": "A garden has 84 flowers. Someone brings 62 more flowers. Someone brings 91 "
    "more flowers. Someone brings 525 more flowers. How many flowers does the garden have now?",
    "answer": "762",
    "rationale": "The garden starts with 84 flowers. 84 + 62 = 146. 146 + 91 = 237. "
    "237 + 525 = 762. The answer is 762.",
    "start": 84,
    "steps": [["+", 62], ["+", 91], ["+", 525]],
}
ARITH_PINNED_SHA256 = "a26deecfadcb540285681ed5288774ce92cad570429d3d68f9ebe18dcac5909c"


@pytest.mark.parametrize(
    "params",
    [
        {"n": 0, "seed": 1},
        {"n": 5, "seed": 1, "min_digits": 4, "max_digits": 2},
        {"n": 5, "seed": 1, "ops": "/"},
        {"n": 5, "seed": 1, "ops": ""},
        {"n": 5, "seed": 1.5},
        {"n": 5, "seed": 1, "n_ops": True},
    ],
)
def test_arith_rejects_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        arith(**params)


def test_arith_task_dataset() -> None:
    task = load_task("arith")
    ds = load_dataset(task, limit=5)
    params = dict(task.data.generator_params)
    assert ds.source.startswith("generator:arith@1?")
    assert f"seed={params['seed']}" in ds.source and f"n={params['n']}" in ds.source
    assert ds.sha256 == jsonl_sha256(arith(**params))
    assert ds.n_total == params["n"]
    assert [it.target for it in ds.items] == [r["answer"] for r in arith(**params)[:5]]
    # Exemplars come from another seed: no exemplar question is a test question.
    questions = {r["question"] for r in arith(**params)}
    assert task.fewshot and not {ex["question"] for ex in task.fewshot} & questions


def test_generator_registry_errors(gsm8k: TaskSpec) -> None:
    with pytest.raises(EvalpipeError, match="unknown generator 'nope'; available: arith"):
        generators.get("nope")
    with pytest.raises(ValueError, match="unexpected keyword argument 'digits'"):
        generators.check_params("arith", {"n": 1, "seed": 1, "digits": 3})
    with pytest.raises(ValueError, match="missing a required argument: 'seed'"):
        generators.check_params("arith", {"n": 1})


def test_generators_with_run_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # The shape a tokenizer-dependent generator (passkey) takes: only a new function.
    def echo(n: int, seed: int, tokenizer: Any) -> list[dict[str, Any]]:
        return [{"question": tokenizer(f"{seed}-{i}"), "answer": str(i)} for i in range(n)]

    monkeypatch.setitem(GENERATORS, "echo", generators.Generator("echo", "1", echo, ("tokenizer",)))
    task = load_task("arith")
    task = replace(
        task, data=replace(task.data, generator="echo", generator_params={"n": 2, "seed": 5})
    )
    with pytest.raises(EvalpipeError, match="needs tokenizer"):
        load_dataset(task)
    ds = load_dataset(task, generator_context={"tokenizer": str.upper})
    assert [it.fields["question"] for it in ds.items] == ["5-0", "5-1"]
    assert ds.source == "generator:echo@1?n=2&seed=5"
    with pytest.raises(ValueError, match="comes from the run"):
        generators.check_params("echo", {"n": 1, "seed": 1, "tokenizer": "x"})


def test_fetched_cache_is_used_before_the_hub(
    gsm8k: TaskSpec, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "cache" / "data" / "gsm8k"
    cached.mkdir(parents=True)
    (cached / "test.jsonl").write_bytes((shared_data / "gsm8k" / "test.jsonl").read_bytes())
    monkeypatch.setitem(sys.modules, "datasets", None)  # the hub path would fail
    ds = load_dataset(gsm8k, limit=2)
    assert ds.source == f"file:{(cached / 'test.jsonl').resolve()}"
    assert ds.sha256 == GSM8K_SHA256
