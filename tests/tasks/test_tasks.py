"""Task discovery and validation: shipped tasks load, bad task files fail with a clear message."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import yaml

from evalpipe.errors import EvalpipeError
from evalpipe.tasks.load import TASKS_PATH_ENV, builtin_task_dirs, list_tasks, load_task
from evalpipe.tasks.scoring import extract

REPO_TASKS = Path(__file__).resolve().parents[2] / "tasks"
SHIPPED = ["arith", "gsm8k", "gsm8k-chat", "needle-multi", "passkey"]
MATH = ["arith", "gsm8k", "gsm8k-chat"]


@pytest.fixture(autouse=True)
def _no_ambient_tasks_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TASKS_PATH_ENV, raising=False)


def _write_task(directory: Path, file_name: str = "mini", /, **changes: object) -> Path:
    """A valid small task file (plus its template), with top-level keys changed or removed."""
    doc: dict[str, object] = {
        "name": file_name,
        "version": "1.0",
        "data": {"fields": {"question": "q", "target": "a"}},
        "request": "completion",
        "template": "mini.jinja",
        "sampling": {"temperature": 0, "max_tokens": 16},
        "stop": ["Q:"],
        "extractors": [{"name": "flexible", "kind": "last_number"}],
        "primary": "flexible",
        "metric": "exact_match",
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    (directory / "mini.jinja").write_text("Q: {{ question }}\nA:")
    path = directory / f"{file_name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_shipped_tasks_are_listed_and_load() -> None:
    assert builtin_task_dirs() == [REPO_TASKS]
    assert list_tasks() == SHIPPED
    for name in SHIPPED:
        task = load_task(name)
        assert task.name == name
        assert task.version == "1.0"
        assert task.path == REPO_TASKS / f"{name}.yaml"
        assert len(task.template_hash) == 64
        assert task.extractors[0].name == task.primary
        assert name not in MATH or "flexible" in {e.name for e in task.extractors}
    assert len({load_task(n).template_hash for n in SHIPPED}) == len(SHIPPED)


def test_gsm8k_settings() -> None:
    task = load_task("gsm8k")
    assert task.request == "completion"
    assert dict(task.sampling) == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256}
    assert "Q:" in task.stop
    assert [(e.name, e.kind) for e in task.extractors] == [
        ("strict", "regex"),
        ("flexible", "last_number"),
    ]
    assert task.primary == "strict" and task.metric == "exact_match"
    assert task.data.source == "hf:openai/gsm8k" and task.data.data_dir_file == "gsm8k/test.jsonl"
    assert len(task.fewshot) == 8
    # The strict extractor reads every exemplar's own final answer (the format it teaches).
    answers = [extract(task.extractors[0], ex["rationale"]) for ex in task.fewshot]
    assert answers == ["6", "5", "39", "8", "9", "29", "33", "8"]
    assert all(re.search(r"The answer is \d+\.$", ex["rationale"]) for ex in task.fewshot)


def test_shipped_exemplars_are_the_published_ones(shared_data: Path) -> None:
    shipped = REPO_TASKS / "data" / "gsm8k_cot_8shot.jsonl"
    published = shared_data / "gsm8k" / "cot_8shot.jsonl"
    assert shipped.read_bytes() == published.read_bytes()
    expected = "e50696c3072aa17e5545ae20fb56e73f8e2c576c105ab941519db02001c198db"
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == expected
    assert load_task("gsm8k").fewshot_source == f"file:data/gsm8k_cot_8shot.jsonl#sha256={expected}"


def test_chat_and_arith_settings() -> None:
    chat = load_task("gsm8k-chat")
    assert chat.request == "chat" and chat.fewshot == ()
    assert [e.kind for e in chat.extractors] == ["last_line_number", "last_number"]
    arith = load_task("arith")
    assert arith.data.generator == "arith"
    assert arith.fewshot_source is not None and arith.fewshot_source.startswith(
        "generator:arith@1?"
    )
    assert f"seed={arith.data.generator_params['seed']}" not in arith.fewshot_source
    assert len(arith.fewshot) == 8
    assert all(ex["rationale"].endswith(f"The answer is {ex['answer']}.") for ex in arith.fewshot)


def test_unknown_task_lists_the_available_ones() -> None:
    with pytest.raises(EvalpipeError) as info:
        load_task("gsm9k")
    assert "unknown task 'gsm9k'" in info.value.message
    assert "available: arith, gsm8k, gsm8k-chat" in info.value.message
    assert info.value.exit_code == 1


def test_tasks_path_is_searched_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_task(tmp_path, "gsm8k")
    monkeypatch.setenv(TASKS_PATH_ENV, str(tmp_path))
    assert load_task("gsm8k").path == tmp_path / "gsm8k.yaml"
    assert list_tasks() == SHIPPED  # same names, shadowed


def test_explicit_search_path_and_file_path(tmp_path: Path) -> None:
    path = _write_task(tmp_path)
    assert list_tasks([tmp_path]) == ["mini"]
    assert load_task("mini", [tmp_path]).path == path
    assert load_task(str(path)).name == "mini"
    with pytest.raises(EvalpipeError, match="available: mini"):
        load_task("gsm8k", [tmp_path])
    with pytest.raises(EvalpipeError, match="does not exist"):
        load_task(str(tmp_path / "none.yaml"))


def test_template_hash_moves_with_what_shapes_requests(tmp_path: Path) -> None:
    base = load_task(str(_write_task(tmp_path))).template_hash
    assert load_task(str(_write_task(tmp_path))).template_hash == base
    as_float = {"temperature": 0.0, "max_tokens": 16}
    assert load_task(str(_write_task(tmp_path, sampling=as_float))).template_hash == base
    for change in (
        {"sampling": {"temperature": 0.5, "max_tokens": 16}},
        {"stop": ["Q:", "\n\n"]},
        {"request": "chat"},
    ):
        assert load_task(str(_write_task(tmp_path, **change))).template_hash != base, change
    path = _write_task(tmp_path)
    (tmp_path / "mini.jinja").write_text("Q: {{ question }}\nA: ")
    assert load_task(str(path)).template_hash != base


def test_fewshot_changes_the_template_hash(tmp_path: Path) -> None:
    base = load_task(str(_write_task(tmp_path))).template_hash
    (tmp_path / "shots.jsonl").write_text('{"q": "1+1", "r": "2"}\n{"q": "2+2", "r": "4"}\n')
    one = load_task(str(_write_task(tmp_path, fewshot={"file": "shots.jsonl", "n": 1})))
    two = load_task(str(_write_task(tmp_path, fewshot={"file": "shots.jsonl", "n": 2})))
    assert one.fewshot == ({"q": "1+1", "r": "2"},)
    assert len({base, one.template_hash, two.template_hash}) == 3
    with pytest.raises(EvalpipeError, match="needs 3 exemplars"):
        load_task(str(_write_task(tmp_path, fewshot={"file": "shots.jsonl", "n": 3})))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bogus": 1}, r"mini\.yaml: unknown key 'bogus'"),
        (
            {"data": {"fields": {"question": "q", "target": "a"}, "sorce": "hf:x"}},
            r"mini\.yaml: data: unknown key 'sorce'",
        ),
        ({"sampling": {"max_tokens": 16, "temprature": 0}}, r"sampling: unknown key 'temprature'"),
        (
            {"extractors": [{"name": "f", "kind": "last_number", "pattern": "x"}]},
            r"extractors\[0\]: unknown key 'pattern'",
        ),
        (
            {"fewshot": {"n": 1, "file": "s.jsonl", "shuffle": True}},
            r"fewshot: unknown key 'shuffle'",
        ),
        ({"metric": None}, r"missing required key 'metric'"),
        ({"version": 1.0}, r'version must be a quoted string such as "1.0"'),
        ({"name": "other"}, r"name 'other' must equal the file name 'mini'"),
        ({"request": "embedding"}, r"request must be one of"),
        ({"sampling": {"max_tokens": "16"}}, r"max_tokens must be an integer"),
        ({"sampling": {"max_tokens": 16, "temperature": True}}, r"temperature must be a number"),
        ({"sampling": {"max_tokens": 0}}, r"max_tokens must be at least 1"),
        ({"stop": "Q:"}, r"stop: must be a list of non-empty strings"),
        ({"extractors": []}, r"extractors: must be a non-empty list"),
        ({"extractors": [{"name": "s", "kind": "regex", "pattern": "(x"}]}, r"bad regex"),
        ({"extractors": [{"name": "s", "kind": "oracle"}]}, r"unknown extractor kind"),
        ({"extractors": [{"name": "f", "kind": "last_number"}] * 2}, r"duplicate extractor"),
        ({"primary": "strict"}, r"primary 'strict' is not one of the extractors"),
        ({"metric": "bleu"}, r"metric must be one of"),
        ({"data": {"fields": {"question": "q"}}}, r"needs a 'target' entry"),
        ({"data": {"fields": {"fewshot": "q", "target": "a"}}}, r"not 'fewshot'"),
        ({"data": {"fields": {"target": "a"}, "target_transform": "eval"}}, r"target_transform"),
        ({"data": {"fields": {"target": "a"}, "source": "s3://x"}}, r"only 'hf:ORG/NAME'"),
        (
            {"data": {"fields": {"target": "a"}, "generator": "arith", "params": {"n": 1}}},
            r"missing a required argument: 'seed'",
        ),
        ({"data": {"fields": {"target": "a"}, "generator": "ruler-niah"}}, r"unknown generator"),
        (
            {"data": {"fields": {"target": "a"}, "params": {"n": 1}}},
            r"params: only for a generator",
        ),
        ({"fewshot": {"n": 1, "generator_seed": 3}}, r"the task's data has no generator"),
        ({"fewshot": {"n": 1}}, r"exactly one of file, generator_seed"),
        ({"fewshot": {"n": 1, "file": "missing.jsonl"}}, r"missing\.jsonl does not exist"),
        ({"template": "nope.jinja"}, r"template .*nope\.jinja does not exist"),
        ({"system": "hi"}, r"system is only for request: chat"),
        ({"data": ["fields"]}, r"data: must be a mapping, not list"),
    ],
)
def test_bad_task_files(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    path = _write_task(tmp_path, **changes)
    with pytest.raises(EvalpipeError, match=message):
        load_task(str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: mini\nname: mini\n", r"duplicate key 'name'"),
        ("name: !!python/object:os.system 'echo hi'\n", r"not a valid task file"),
        ("!function utils.process_docs\n", r"not a valid task file"),
        ("- a list\n", r"must be a mapping, not list"),
        ("name: [unclosed\n", r"not a valid task file"),
    ],
)
def test_yaml_is_data_only(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mini.yaml"
    path.write_text(text)
    with pytest.raises(EvalpipeError, match=message):
        load_task(str(path))


def test_template_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = _write_task(tmp_path)
    (tmp_path / "mini.jinja").write_text("Q: {{ question }\nA:")
    with pytest.raises(EvalpipeError, match=r"mini\.jinja:1: template syntax error"):
        load_task(str(path))


def test_generated_fewshot_needs_its_own_seed(tmp_path: Path) -> None:
    data = {
        "fields": {"question": "question", "target": "answer"},
        "generator": "arith",
        "params": {"n": 10, "seed": 5},
    }
    ok = load_task(str(_write_task(tmp_path, data=data, fewshot={"n": 2, "generator_seed": 6})))
    assert len(ok.fewshot) == 2 and ok.data.generator_params == {"n": 10, "seed": 5}
    with pytest.raises(EvalpipeError, match="must differ from the data seed"):
        load_task(str(_write_task(tmp_path, data=data, fewshot={"n": 2, "generator_seed": 5})))


def test_copied_task_directory_works_anywhere(tmp_path: Path) -> None:
    # What a wheel install sees: the tasks directory copied elsewhere, loaded by path.
    copy = tmp_path / "tasks"
    shutil.copytree(REPO_TASKS, copy)
    assert load_task("gsm8k", [copy]).template_hash == load_task("gsm8k").template_hash
