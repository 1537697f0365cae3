"""JSONL export/import on real SQLite stores: round trip, minimal input, bad input, idempotence."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.importers.endline import end_line
from evalpipe.importers.jsonl import export_run, import_run, parse_jsonl, run_to_dict
from evalpipe.records import EXCHANGE_VERSION, Run, RunConfig, Sample, config_to_dict
from evalpipe.store import Store, open_store
from evalpipe.tasks.prompts import Prompt, prompts_hash

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "20261128-031642-ab12cd"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]


def full_run() -> Run:
    config = RunConfig(
        model="models/smollm2-135m",
        model_fingerprint="sha256:0123",
        task="gsm8k",
        task_version="3",
        prompt_hash="p" * 64,
        data_source="hf:openai/gsm8k@main:test",
        data_sha256="d" * 64,
        layout="dp2tp2",
        platform="cpu",
        engine_kind="serve",
        engine_args={"enforce_eager": True},
        sampling={"temperature": 0.0, "max_tokens": 256},
        seed=1234,
        limit=3,
        concurrency=4,
        engine_versions={"vllm": "0.11.0"},
        repeat_index=1,
    )
    return Run(
        run_id=RUN_ID,
        config=config,
        status="finished",
        started_at="2026-11-28T03:16:42+00:00",
        finished_at="2026-11-28T03:20:00+00:00",
        n_items=3,
        n_samples=3,
        n_correct=1,
        n_correct_flexible=2,
        n_errors=1,
        accuracy=0.5,
        accuracy_flexible=1.0,
        duration_s=198.25,
        output_tokens=70,
        throughput_tok_s=0.353,
        tags=("nightly",),
        provenance={"host": "n1", "packages": {"vllm": "0.11.0"}, "gpus": [0, 1]},
        message=None,
    )


def full_samples() -> list[Sample]:
    base: dict[str, Any] = {"run_id": RUN_ID, "prompt_tokens": 50, "finish_reason": "stop"}
    return [
        Sample(
            item_id="0",
            prompt_hash="h0",
            output="The answer is 2.",
            target="2",
            correct=True,
            extracted={"strict": "2", "flexible": "2"},
            correct_by={"strict": True, "flexible": True},
            output_tokens=40,
            latency_s=1.5,
            completed_at="2026-11-28T03:17:00+00:00",
            meta={"attempt": 1},
            **base,
        ),
        Sample(
            item_id="1",
            prompt_hash="h1",
            output="so 4",
            target="4",
            correct=False,
            extracted={"strict": None, "flexible": "4"},
            correct_by={"strict": False, "flexible": True},
            output_tokens=30,
            latency_s=0.75,
            **base,
        ),
        Sample(
            item_id="2",
            prompt_hash="h-unknown-text",
            output=None,
            target="9",
            correct=None,
            error="HTTP 500: engine died",
            **base,
        ),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = open_store(tmp_path / "src.db")
    s.create_run(full_run(), full_samples(), {"h0": "What is 1+1?", "h1": json.dumps(CHAT)})
    yield s
    s.close()


def sealed(lines: list[str]) -> list[str]:
    """``lines`` (a run line, samples, trace lines; no end line) with the end line a version 4
    writer adds: what a test that edits an export gives back to the import."""
    traces = sum(line.startswith('{"trace"') for line in lines)
    digest = hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()
    return [*lines, end_line(len(lines) - 1 - traces, traces, digest).rstrip("\n")]


def export_text(store: Store, run_id: str = RUN_ID) -> str:
    out = io.StringIO()
    export_run(store, run_id, out)
    return out.getvalue()


def lines_of(*objects: Any) -> list[str]:
    return [json.dumps(o) + "\n" for o in objects]


MINIMAL_RUN = {"model": "gpt-x", "task": "gsm8k", "task_version": "1", "layout": "tp1"}


def test_export_writes_everything_known(store: Store) -> None:
    text = export_text(store)
    first, *rest = [json.loads(line) for line in text.splitlines()]
    run = first["run"]
    assert set(first) == {"run"}
    assert run["run_id"] == RUN_ID
    assert run["schema_version"] == EXCHANGE_VERSION
    assert run["evalpipe_version"]
    assert run["config_hash"] == full_run().config.config_hash()
    for key, value in config_to_dict(full_run().config).items():
        assert run[key] == value, key
    assert run["provenance"] == {"host": "n1", "packages": {"vllm": "0.11.0"}, "gpus": [0, 1]}
    assert run["tags"] == ["nightly"] and run["duration_s"] == 198.25
    *rest, end = rest
    assert end == {"end": {"samples": 3, "traces": 0, "sha256": end["end"]["sha256"]}}
    assert [s["item_id"] for s in rest] == ["0", "1", "2"]
    assert rest[0]["prompt"] == "What is 1+1?"
    assert json.loads(rest[1]["prompt"]) == CHAT
    assert rest[2]["prompt"] is None  # the text of h-unknown-text was never stored
    assert rest[2]["error"] == "HTTP 500: engine died" and rest[2]["correct"] is None
    assert rest[0]["meta"] == {"attempt": 1} and rest[0]["latency_s"] == 1.5
    assert "run_id" not in rest[0]


def test_export_then_import_then_export_is_identical(store: Store, tmp_path: Path) -> None:
    text = export_text(store)
    with open_store(tmp_path / "dst.db") as dst:
        assert import_run(dst, io.StringIO(text)) == RUN_ID
        assert dst.get_run(RUN_ID) == full_run()
        assert dst.samples(RUN_ID) == full_samples()
        assert dst.get_prompt("h0") == "What is 1+1?"
        assert export_text(dst) == text


def test_export_accepts_a_unique_prefix(store: Store) -> None:
    assert export_text(store, RUN_ID[:10]) == export_text(store)


def test_importing_the_same_file_twice_creates_one_run(store: Store, tmp_path: Path) -> None:
    text = export_text(store)
    with open_store(tmp_path / "dst.db") as dst:
        assert import_run(dst, text.splitlines()) == RUN_ID
        assert import_run(dst, text.splitlines()) == RUN_ID
        assert [r.run_id for r in dst.list_runs()] == [RUN_ID]
    assert import_run(store, text.splitlines()) == RUN_ID  # back into its own store
    assert len(store.list_runs()) == 1


def test_same_id_with_different_content_needs_a_new_id(store: Store) -> None:
    lines = export_text(store).splitlines()[:-1]
    sample = json.loads(lines[1])
    sample["output"] = "edited"
    lines[1] = json.dumps(sample)
    lines = sealed(lines)
    with pytest.raises(EvalpipeError, match=f"run {RUN_ID} is already in .* different content"):
        import_run(store, lines)
    assert store.samples(RUN_ID)[0].output == "The answer is 2."
    new = import_run(store, lines, new_id=True)
    assert new != RUN_ID
    assert store.samples(new)[0].output == "edited"
    assert store.samples(new)[0].run_id == new
    assert {r.run_id for r in store.list_runs()} == {RUN_ID, new}


def test_minimal_import_gets_documented_defaults(tmp_path: Path) -> None:
    lines = lines_of(
        {"run": MINIMAL_RUN},
        {"item_id": 1, "output": "42", "correct": True},
        {"item_id": 2, "output": "41", "correct": False, "target": 40},
        {"item_id": 3, "output": None, "correct": None, "error": "timeout"},
    )
    with open_store(tmp_path / "dst.db") as dst:
        run_id = import_run(dst, lines)
        run = dst.get_run(run_id)
        samples = dst.samples(run_id)
    c = run.config
    assert (c.model, c.task, c.task_version, c.layout) == ("gpt-x", "gsm8k", "1", "tp1")
    assert c.model_fingerprint == "name:gpt-x"
    assert c.engine_kind == "import" and c.data_source == "import" and c.platform == "unknown"
    assert c.prompt_hash == "unknown"
    assert (c.seed, c.concurrency, c.limit, c.engine_args, dict(c.sampling)) == (0, 1, None, {}, {})
    assert run.status == "finished" and run.finished_at == run.started_at
    assert (run.n_items, run.n_samples, run.n_correct, run.n_errors) == (3, 3, 1, 1)
    assert run.accuracy == 0.5 and run.accuracy_flexible is None
    assert [s.item_id for s in samples] == ["1", "2", "3"]
    assert samples[1].target == "40"
    assert samples[0].prompt_hash == "unknown"


def test_imported_prompts_are_stored_and_hashed_like_the_runner(tmp_path: Path) -> None:
    lines = lines_of(
        {"run": MINIMAL_RUN},
        {"item_id": "a", "prompt": "Q: 1+1?", "output": "2", "correct": True},
        {"item_id": "b", "prompt": CHAT, "output": "2", "correct": True},
    )
    expected = [Prompt("a", "Q: 1+1?"), Prompt("b", None, tuple(CHAT))]
    parsed = parse_jsonl(lines)
    assert [s.prompt_hash for s in parsed.samples] == [p.prompt_hash for p in expected]
    assert parsed.run.config.prompt_hash == prompts_hash(expected)
    with open_store(tmp_path / "dst.db") as dst:
        run_id = import_run(dst, lines)
        hashes = [s.prompt_hash for s in dst.samples(run_id)]
        assert dst.get_prompt(hashes[0]) == "Q: 1+1?"
        assert dst.get_prompt(hashes[1]) == expected[1].canonical_text()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "input: empty"),
        (["", "  "], "input: empty"),
        (['{"run": {"model": "m"'], r"input:1: not valid JSON"),
        (lines_of({"model": "m"}), r'input:1: the first line must be \{"run"'),
        (lines_of({"run": {**MINIMAL_RUN}, "x": 1}), r"input:1: the first line must be"),
        (lines_of({"run": []}), "input:1: a run must be a JSON object"),
        (lines_of({"run": {"model": "m", "task": "t"}}), "run is missing 'task_version', 'layout'"),
        (lines_of({"run": {**MINIMAL_RUN, "seed": "7"}}), "input:1: run 'seed' must be an integer"),
        (lines_of({"run": {**MINIMAL_RUN, "status": "done"}}), "'status' must be one of running"),
        (lines_of({"run": {**MINIMAL_RUN, "acc": 1}}), "input:1: unknown run key 'acc'"),
        (
            lines_of({"run": {**MINIMAL_RUN, "schema_version": EXCHANGE_VERSION + 1}}),
            "newer evalpipe",
        ),
        (
            lines_of({"run": MINIMAL_RUN}, {"item_id": "1", "output": "x"}),
            "input:2: sample is missing 'correct'",
        ),
        (
            [*lines_of({"run": MINIMAL_RUN}), "\n", *lines_of({"output": "x", "correct": True})],
            "input:3: sample is missing 'item_id'",
        ),
        (
            lines_of({"run": MINIMAL_RUN}, {"item_id": "1", "output": "x", "correct": "yes"}),
            "input:2: sample 'correct' must be true/false or null, not 'yes'",
        ),
        (
            lines_of({"run": MINIMAL_RUN}, {"item_id": "1", "output": "x", "correct": 1, "f": 0}),
            "input:2: unknown sample key 'f'.*put extra data under 'meta'",
        ),
        (
            lines_of(
                {"run": MINIMAL_RUN},
                {"item_id": "1", "output": "x", "correct": True},
                {"item_id": 1, "output": "y", "correct": True},
            ),
            r"input:3: item_id '1' again \(first on line 2\)",
        ),
        (
            lines_of({"run": MINIMAL_RUN}, ["item_id"]),
            "input:2: a sample must be a JSON object",
        ),
        (
            lines_of(
                {"run": {**MINIMAL_RUN, "n_correct": 2}},
                {"item_id": "1", "output": "x", "correct": True},
            ),
            "input:1: run n_correct is 2 but the samples give 1",
        ),
        (
            lines_of(
                {"run": {**MINIMAL_RUN, "accuracy": 0.9}},
                {"item_id": "1", "output": "x", "correct": False},
            ),
            "input:1: run accuracy is 0.9 but the samples give 0.0",
        ),
    ],
)
def test_bad_input_is_rejected_with_line_and_key(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    with open_store(tmp_path / "dst.db") as dst:
        with pytest.raises(EvalpipeError, match=message):
            import_run(dst, lines)
        assert dst.list_runs() == []  # nothing half-imported


def test_error_messages_name_the_source(tmp_path: Path) -> None:
    with (
        open_store(tmp_path / "dst.db") as dst,
        pytest.raises(EvalpipeError, match=r"^h\.jsonl:1:"),
    ):
        import_run(dst, ["nope\n"], source="h.jsonl")


def test_run_to_dict_is_flat_json(store: Store) -> None:
    d = run_to_dict(store.get_run(RUN_ID))
    assert json.loads(json.dumps(d)) == d
    assert d["engine_args"] == {"enforce_eager": True} and d["tags"] == ["nightly"]
    assert "config" not in d


def test_exchange_does_not_import_sqlalchemy() -> None:
    code = "import sys, evalpipe.importers.jsonl; print('sqlalchemy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert result.stdout.strip() == "False"
