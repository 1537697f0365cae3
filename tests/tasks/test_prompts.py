"""Prompt rendering: exact prompt shape, hashing, and loud template failures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.records import canonical_json, sha256_text
from evalpipe.tasks.data import load_dataset
from evalpipe.tasks.load import load_task
from evalpipe.tasks.prompts import Prompt, compile_template, prompts_hash, render
from evalpipe.tasks.spec import Item, TaskSpec


@pytest.fixture(scope="module")
def gsm8k() -> TaskSpec:
    return load_task("gsm8k")


@pytest.fixture(scope="module")
def exemplars(shared_data: Path) -> list[dict[str, str]]:
    lines = (shared_data / "gsm8k" / "cot_8shot.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _item(question: str, item_id: str = "0") -> Item:
    return Item(item_id=item_id, fields={"question": question}, target="1")


def test_gsm8k_prompt_is_the_8shot_cot_format(
    gsm8k: TaskSpec, exemplars: list[dict[str, str]]
) -> None:
    [prompt] = render(gsm8k, [_item("How many eggs?")])
    assert prompt.messages is None and prompt.text is not None
    expected = "".join(f"Q: {ex['question']}\nA: {ex['rationale']}\n\n" for ex in exemplars)
    expected += "Q: How many eggs?\nA:"
    assert len(exemplars) == 8
    assert prompt.text == expected
    assert prompt.text.count("\nA: ") == 8 and prompt.text.count("Q: ") == 9
    assert prompt.text.startswith("Q: There are 15 trees in the grove.")
    assert prompt.text.endswith("\n\nQ: How many eggs?\nA:")


def test_gsm8k_prompt_on_real_items(gsm8k: TaskSpec, shared_data: Path) -> None:
    ds = load_dataset(gsm8k, data_dir=str(shared_data), limit=3)
    prompts = render(gsm8k, ds.items)
    assert [p.item_id for p in prompts] == ["0", "1", "2"]
    for p, item in zip(prompts, ds.items, strict=True):
        assert p.text is not None
        assert p.text.endswith(f"Q: {item.fields['question']}\nA:")
        assert item.target not in p.text.rsplit("Q: ", 1)[1]  # the answer never leaks


def test_prompt_hash_is_sha256_of_the_text(gsm8k: TaskSpec) -> None:
    [p] = render(gsm8k, [_item("Q1")])
    assert p.text is not None
    assert p.prompt_hash == sha256_text(p.text)
    assert p.canonical_text() == p.text


def test_hashes_are_stable_and_sensitive(gsm8k: TaskSpec) -> None:
    items = [_item("a", "0"), _item("b", "1")]
    first, again = render(gsm8k, items), render(gsm8k, items)
    assert first == again
    assert prompts_hash(first) == prompts_hash(again)
    assert first[0].prompt_hash != first[1].prompt_hash
    changed = render(gsm8k, [_item("a", "0"), _item("b!", "1")])
    assert prompts_hash(changed) != prompts_hash(first)
    # the same prompts under other ids, or in another order, are another run input
    assert prompts_hash(render(gsm8k, [_item("a", "0"), _item("b", "2")])) != prompts_hash(first)
    assert prompts_hash(list(reversed(first))) != prompts_hash(first)
    # pinned: rendering must not drift silently (template, exemplars, whitespace)
    assert first[0].prompt_hash == sha256_text(first[0].canonical_text())
    assert prompts_hash(first) == PINNED_PROMPTS_HASH


# Changing the gsm8k template or exemplars changes this: bump the task version with it.
PINNED_PROMPTS_HASH = "86a44b76e593bcb7cda3712e0d8127b72cdbdd47db720f539506983575a192b9"


def test_fewshot_override_and_count(gsm8k: TaskSpec) -> None:
    [p] = render(gsm8k, [_item("x")], fewshot=[{"question": "1+1?", "rationale": "2."}])
    assert p.text == "Q: 1+1?\nA: 2.\n\nQ: x\nA:"
    [zero] = render(gsm8k, [_item("x")], fewshot=[])
    assert zero.text == "Q: x\nA:"


def test_chat_prompt_is_messages() -> None:
    chat = load_task("gsm8k-chat")
    [p] = render(chat, [_item("What is 2+2?")])
    assert p.text is None and p.messages is not None
    assert [m["role"] for m in p.messages] == ["user"]
    content = p.messages[0]["content"]
    assert content.endswith("Problem: What is 2+2?")
    assert "last line" in content
    assert p.canonical_text() == canonical_json([{"role": "user", "content": content}])
    assert p.prompt_hash == sha256_text(p.canonical_text())
    with_system = replace(chat, system="Be brief.")
    [s] = render(with_system, [_item("What is 2+2?")])
    assert s.messages is not None
    assert [dict(m) for m in s.messages] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": content},
    ]
    assert s.prompt_hash != p.prompt_hash


def test_undefined_variable_fails_loudly(gsm8k: TaskSpec) -> None:
    typo = replace(gsm8k, template="Q: {{ questoin }}\nA:")
    with pytest.raises(EvalpipeError, match=r"cannot render item 7 .*'questoin' is undefined"):
        render(typo, [_item("x", "7")])
    missing_attr = replace(gsm8k, template="{% for ex in fewshot %}{{ ex.answer }}{% endfor %}")
    with pytest.raises(EvalpipeError, match="answer"):
        render(missing_attr, [_item("x")])


def test_sandbox_blocks_python_internals(gsm8k: TaskSpec) -> None:
    escape = replace(gsm8k, template="{{ question.__class__.__mro__ }}")
    with pytest.raises(EvalpipeError, match="cannot render"):
        render(escape, [_item("x")])


def test_no_includes_and_syntax_errors() -> None:
    with pytest.raises(EvalpipeError, match=r"t\.jinja:2: template syntax error"):
        compile_template("ok\n{% for %}", "t.jinja")
    template = compile_template('{% include "other.jinja" %}', "t.jinja")
    with pytest.raises(TypeError, match="no loader"):
        template.render()


def test_no_autoescape_and_trailing_newline_kept(gsm8k: TaskSpec) -> None:
    t = replace(gsm8k, template="{{ question }}\n")
    [p] = render(t, [_item("a < b & 'c'")])
    assert p.text == "a < b & 'c'\n"


def test_prompt_validates_itself() -> None:
    assert Prompt("0", "hi").prompt_hash == sha256_text("hi")
    with pytest.raises(ValueError, match="either text or messages"):
        Prompt("0", None, None)
    with pytest.raises(ValueError, match="either text or messages"):
        Prompt("0", "hi", ({"role": "user", "content": "hi"},))
    with pytest.raises(ValueError, match="does not match"):
        Prompt("0", "hi", None, "0" * 64)
