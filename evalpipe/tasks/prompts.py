"""Render task templates into prompts (completion text or chat messages) and hash them.

Templates run in a jinja2 :class:`~jinja2.sandbox.SandboxedEnvironment` with
:class:`~jinja2.StrictUndefined` and no loader: a template can read its item's fields and
the few-shot exemplars, and nothing else (no includes, no attribute tricks, no silent
empty strings for misspelt variables). Autoescape is off because these are prompts, not
HTML, and trailing newlines are kept so the template file decides the exact prompt end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from evalpipe.errors import EvalpipeError
from evalpipe.records import canonical_json, sha256_text
from evalpipe.tasks.spec import Item, TaskSpec

FEWSHOT_VAR = "fewshot"
"""The template variable holding the few-shot exemplars (a list of records)."""


@dataclass(frozen=True)
class Prompt:
    """One rendered request: ``text`` for a completion or ``messages`` for chat, never both.

    ``prompt_hash`` is computed (sha256 of :meth:`canonical_text`), so equal prompts share a
    hash whatever task or run produced them; a hash passed in must match.
    """

    item_id: str
    text: str | None
    messages: tuple[Mapping[str, str], ...] | None = None
    prompt_hash: str = ""

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise ValueError("a prompt has either text or messages, not both or neither")
        if self.messages is not None:
            # Copies, so the frozen prompt cannot change through the caller's dicts.
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))
        digest = sha256_text(self.canonical_text())
        if self.prompt_hash and self.prompt_hash != digest:
            raise ValueError(f"prompt_hash {self.prompt_hash} does not match the prompt")
        object.__setattr__(self, "prompt_hash", digest)

    def canonical_text(self) -> str:
        """The prompt as one string: the text itself, or the messages as canonical JSON."""
        if self.text is not None:
            return self.text
        assert self.messages is not None
        return canonical_json([dict(m) for m in self.messages])


def environment() -> SandboxedEnvironment:
    """The one jinja2 environment every task template is compiled in."""
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def compile_template(source: str, name: str) -> jinja2.Template:
    """Compile ``source``; a syntax error becomes an :class:`EvalpipeError` naming ``name``."""
    try:
        return environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise EvalpipeError(f"{name}:{exc.lineno}: template syntax error: {exc.message}") from exc


def render(
    task: TaskSpec,
    items: Sequence[Item],
    fewshot: Sequence[Mapping[str, Any]] | None = None,
) -> list[Prompt]:
    """Render one prompt per item, in order.

    ``fewshot`` defaults to the task's own exemplars (the ones its ``template_hash``
    covers). Chat tasks get the optional system message and the rendered template as the
    user message. Any template error (undefined variable, sandbox violation) raises
    :class:`EvalpipeError` naming the template and item.
    """
    template = compile_template(task.template, task.template_name)
    shots = [dict(s) for s in (task.fewshot if fewshot is None else fewshot)]
    prompts: list[Prompt] = []
    for item in items:
        try:
            text = template.render({**item.fields, FEWSHOT_VAR: shots})
        except jinja2.TemplateError as exc:
            raise EvalpipeError(
                f"{task.template_name}: cannot render item {item.item_id} of task "
                f"{task.name}: {exc}"
            ) from exc
        if task.request == "chat":
            messages = [{"role": "system", "content": task.system}] if task.system else []
            messages.append({"role": "user", "content": text})
            prompts.append(Prompt(item.item_id, None, tuple(messages)))
        else:
            prompts.append(Prompt(item.item_id, text))
    return prompts


def prompts_hash(prompts: Sequence[Prompt]) -> str:
    """The run-level rendered-prompt hash: sha256 over (item_id, prompt_hash) in order."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(canonical_json([p.item_id, p.prompt_hash]).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
