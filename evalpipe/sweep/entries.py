"""The entries of a sweep plan, read and checked one by one, every problem with its line.

:func:`read_plan_text` reads the YAML (keeping each value's line); the ``*_entries`` functions
turn the ``models``, ``tasks`` and ``layouts`` lists into typed entries and add what is wrong
with each to :class:`Problems`, which raises them all at once. How the entries become cells is
:mod:`evalpipe.sweep.plan`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.layout import ATTENTIONS, PLATFORMS, Layout, LayoutError, parse
from evalpipe.limits import INT64_MAX, MAX_CONCURRENCY, MAX_LOGPROBS
from evalpipe.options import RunOptions
from evalpipe.tasks.load import load_task
from evalpipe.yamlload import Path as YamlPath
from evalpipe.yamlload import YamlInputError, load_yaml_lines

TOP_KEYS = {
    "models": "model names, paths, or {name, path, served_model, endpoints, engine_args}",
    "tasks": "task names, or {task, params, limit, data}",
    "layouts": "layouts; LAYOUT=BASELINE names the baseline of a layout that is not CP",
    "repeat": "runs of every cell (repeat index 0..K-1), for the engine's noise floor",
    "limit": "first N items of every task (a task's own limit wins)",
    "engine_args": "vLLM engine arguments for every engine: {name: value} or [KEY=VALUE]",
    "concurrency": "requests in flight per run",
    "logprobs": "top-K token logprobs captured per generated position (0: off)",
    "seed": "sampling seed",
    "max_error_rate": "infrastructure errors a run may have (fraction)",
    "platform": "the platform whose layout rules apply (default: this machine's)",
    "attention": "the attention backend's rules (sfa)",
    "data_dir": "where tasks read their data files",
}
MODEL_KEYS = ("name", "path", "served_model", "endpoints", "engine_args")
TASK_KEYS = ("task", "params", "limit", "data")
TEXT_KEYS = ("path", "served_model", "data")
"""Optional entry fields that are text (a path, a served name): anything else is refused."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    line: int | None
    path: str | None = None
    served_model: str | None = None
    endpoints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    engine_args: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How cells name the model: a folder by its last part (``/models/DeepSeek-V3.2``
        → ``DeepSeek-V3.2``), so keys stay short; anything else as written."""
        return PurePath(self.name).name if "/" in self.name.rstrip("/") else self.name


@dataclass(frozen=True)
class TaskEntry:
    name: str
    line: int | None
    params: tuple[str, ...] = ()
    limit: int | None = None
    data: str | None = None


@dataclass(frozen=True)
class LayoutEntry:
    layout: Layout
    baseline: Layout | None
    line: int | None


class Problems:
    """Every refusal of one plan, each with its line, raised together."""

    def __init__(
        self, source: str, lines: Mapping[YamlPath, int], what: str = "the sweep plan"
    ) -> None:
        self.source, self.lines, self.what = source, lines, what
        self.items: list[str] = []

    def line(self, *path: str | int) -> int | None:
        """The line of the value at ``path``; none for the plan as a whole (a missing key is
        on no line, and the plan's first line is not where it is missing)."""
        return self.lines.get(tuple(path)) if path else None

    def add(self, problem: str, *path: str | int) -> None:
        line = self.line(*path)
        where = f"{self.source}:{line}" if line else f"{self.source}"
        if f"{where}: {problem}" not in self.items:  # one layout refused once, not per model
            self.items.append(f"{where}: {problem}")

    def raise_any(self) -> None:
        if self.items:
            raise EvalpipeError(f"{self.what} is refused:\n  " + "\n  ".join(self.items))


def read_plan_text(text: str, source: str) -> tuple[dict[str, Any], dict[YamlPath, int]]:
    """The plan file's mapping and the line of every value; a YAML problem names its line."""
    try:
        data, lines = load_yaml_lines(text)
    except YamlInputError as exc:
        raise EvalpipeError(f"{source}: not a valid sweep plan: {exc}") from exc
    if not isinstance(data, dict):
        raise EvalpipeError(
            f"{source}: a sweep plan is a mapping with models, tasks and layouts "
            "(see `evalpipe sweep --help`)"
        )
    return data, lines


def common_options(data: Mapping[str, Any], t: RunOptions, problems: Problems) -> RunOptions:
    """The template with the plan's run-wide settings applied."""
    changes: dict[str, Any] = {"reuse_finished": True}
    for key, minimum, maximum in (
        ("concurrency", 1, MAX_CONCURRENCY),
        ("logprobs", 0, MAX_LOGPROBS),
        ("seed", 0, INT64_MAX),
        ("limit", 1, INT64_MAX),
    ):
        if key in data:
            changes[key] = whole(data[key], problems, key, minimum=minimum, maximum=maximum)
    if "max_error_rate" in data:
        rate = data["max_error_rate"]
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
            problems.add("max_error_rate is a fraction between 0 and 1", "max_error_rate")
        else:
            changes["max_error_rate"] = float(rate)
    for key, allowed in (("platform", PLATFORMS), ("attention", ATTENTIONS), ("data_dir", ())):
        if key not in data:
            continue
        if not isinstance(data[key], str):
            problems.add(f"{key} is a string", key)
        elif allowed and data[key] not in allowed:
            problems.add(f"unknown {key} {data[key]!r}; expected one of {', '.join(allowed)}", key)
        else:
            changes[key] = data[key]
    if "engine_args" in data:
        args = engine_args(data["engine_args"], problems, "engine_args")
        changes["engine_args"] = (*t.engine_args, *args)
    return dataclasses.replace(t, **changes)


def whole(
    value: Any, problems: Problems, *path: str | int, minimum: int = 0, maximum: int = INT64_MAX
) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        problems.add(
            f"{path[-1]} must be a whole number from {minimum} to {maximum}, not {value!r}",
            *path,
        )
        return minimum
    return value


def engine_args(value: Any, problems: Problems, *path: str | int) -> tuple[str, ...]:
    if isinstance(value, dict):
        return tuple(f"{k}={yaml_value(v)}" for k, v in value.items())
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return tuple(value)
    problems.add("engine_args is {name: value} or a list of KEY=VALUE", *path)
    return ()


def yaml_value(value: Any) -> str:
    """A value as ``--engine-arg``/``--param`` read it back (YAML): lists stay lists."""
    return value if isinstance(value, str) else json.dumps(value)


def _entries(
    value: Any, problems: Problems, section: str, name: str, keys: tuple[str, ...]
) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """The entries of the list ``section`` as mappings with a string ``name`` key (a bare
    string is that name) and each with its path; what is not is added to ``problems``, as
    unknown keys and an optional field given as anything but text are."""
    if not isinstance(value, list):
        problems.add(f"{section} is a list", section)
        return
    kind = section.removesuffix("s")
    for i, entry in enumerate(value):
        where: tuple[str | int, ...] = (section, i)
        if isinstance(entry, str):
            entry = {name: entry}
        if not isinstance(entry, dict) or not isinstance(entry.get(name), str):
            problems.add(f"a {kind} is a name, or a mapping with {name}", *where)
            continue
        for key, field in entry.items():
            if key not in keys:
                problems.add(f"unknown {kind} key {key!r} (known: {', '.join(keys)})", *where)
            elif key in TEXT_KEYS and not isinstance(field, str):
                problems.add(f"{kind} {key} is text, not {field!r}", *where, key)
        yield where, {k: v for k, v in entry.items() if k not in TEXT_KEYS or isinstance(v, str)}


def model_entries(value: Any, problems: Problems) -> list[ModelEntry]:
    out: list[ModelEntry] = []
    for where, entry in _entries(value, problems, "models", "name", MODEL_KEYS):
        endpoints = entry.get("endpoints", {})
        if not isinstance(endpoints, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in endpoints.items()
        ):
            problems.add("endpoints is {layout: URL}", *where, "endpoints")
            endpoints = {}
        model = ModelEntry(
            entry["name"],
            problems.line(*where),
            entry.get("path"),
            entry.get("served_model"),
            {_canonical(k, problems, *where, "endpoints", k): v for k, v in endpoints.items()},
            engine_args(entry.get("engine_args", {}), problems, *where, "engine_args"),
        )
        if any(m.label == model.label for m in out):
            problems.add(f"model {model.label} is listed twice", *where)
        out.append(model)
    return out


def _canonical(text: str, problems: Problems, *path: str | int) -> str:
    try:
        return parse(text).canonical
    except LayoutError as exc:
        problems.add(str(exc), *path)
        return text


def task_entries(value: Any, problems: Problems) -> list[TaskEntry]:
    out: list[TaskEntry] = []
    for where, entry in _entries(value, problems, "tasks", "task", TASK_KEYS):
        params = entry.get("params", {})
        if not isinstance(params, dict):
            problems.add("params is {name: value}", *where, "params")
            params = {}
        limit = entry.get("limit")
        task = TaskEntry(
            entry["task"],
            problems.line(*where),
            tuple(f"{k}={yaml_value(v)}" for k, v in params.items()),
            None if limit is None else whole(limit, problems, *where, "limit", minimum=1),
            entry.get("data"),
        )
        _check_task(task, params, problems, where)
        if any(t.name == task.name for t in out):
            problems.add(f"task {task.name} is listed twice (one entry per task)", *where)
        out.append(task)
    return out


def _check_task(
    task: TaskEntry, params: Mapping[str, Any], problems: Problems, where: tuple[str | int, ...]
) -> None:
    if task.name.startswith("lm-eval:"):
        problems.add(
            f"{task.name}: lm-eval tasks are not swept (run them with `evalpipe run`)", *where
        )
        return
    try:
        load_task(task.name, params=params or None)
    except EvalpipeError as exc:
        problems.add(str(exc), *where)


def layout_entries(value: Any, problems: Problems) -> list[LayoutEntry]:
    if not isinstance(value, list):
        problems.add("layouts is a list", "layouts")
        return []
    out: list[LayoutEntry] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            problems.add("a layout is a string such as dp2tp8dcp8 or tp2=tp1", "layouts", i)
            continue
        text, _, base = entry.partition("=")
        try:
            layout = parse(text)
            baseline = parse(base) if base else (layout.baseline() if layout.is_cp else None)
        except LayoutError as exc:
            problems.add(str(exc), "layouts", i)
            continue
        if baseline == layout:
            problems.add(f"{entry}: a layout is not its own baseline", "layouts", i)
            continue
        if any(x.layout == layout for x in out):
            problems.add(f"layout {layout.canonical} is listed twice", "layouts", i)
        out.append(LayoutEntry(layout, baseline, problems.line("layouts", i)))
    return out
