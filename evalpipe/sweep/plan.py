"""Read a sweep plan (a YAML file, or the same keys from flags) and expand it into cells.

A plan names models, tasks and layouts; every layout runs every task on every model, each
``repeat`` times, and each context-parallel layout brings its non-CP baseline (``tp2=tp1``
names one for a layout that is not CP). Everything that can be refused without an engine is
refused here, all at once, each problem with the plan line it is about: an unknown key, task
or model, a layout that does not parse or break the platform's rules. What vLLM itself
accepts is checked afterwards by :func:`evalpipe.run.plan.precheck`, like any run.

Example::

    models: [gemma3-270m]
    tasks:
      - gsm8k
      - {task: passkey, params: {lengths: [4096]}, limit: 8}
    layouts: [tp2=tp1, dp2tp8dcp8]
    repeat: 2
    limit: 200
    engine_args: {max_model_len: 8192}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from evalpipe.engine import models as builtin_models
from evalpipe.engine.args import EngineArgs, interleave_given, pairs_for
from evalpipe.errors import EvalpipeError
from evalpipe.layout import Layout, current_platform, parse, validate
from evalpipe.limits import MAX_REPEAT, MAX_SWEEP_CELLS
from evalpipe.options import RunOptions
from evalpipe.run.cpu_dcp import backend_errors, pair_engine_args
from evalpipe.sweep.cells import Cell, Group, Pair, SweepPlan
from evalpipe.sweep.entries import (
    TOP_KEYS,
    LayoutEntry,
    ModelEntry,
    Problems,
    TaskEntry,
    common_options,
    layout_entries,
    model_entries,
    task_entries,
    whole,
)
from evalpipe.tasks import generators
from evalpipe.tasks.load import load_task
from evalpipe.yamlload import Path as YamlPath


def expand(
    data: Mapping[str, Any],
    template: RunOptions,
    source: str = "<flags>",
    lines: Mapping[YamlPath, int] | None = None,
    resolve_model: Callable[[str], str] = lambda m: m,
    flags: Collection[str] = (),
) -> SweepPlan:
    """The cells, groups and pairs of a plan. ``template`` holds what every run shares and
    the plan does not set (store, runs folder, progress …); ``resolve_model`` turns a
    built-in model name into its local folder (built on first use); ``flags`` names the keys
    given as flags over the file's (``--layouts`` narrowing a plan leaves endpoints out)."""
    problems = Problems(source, lines or {})
    for key in data:
        if key not in TOP_KEYS:
            known = ", ".join(TOP_KEYS)
            problems.add(f"unknown key {key!r} (a plan has: {known})", key)
    for key in ("models", "tasks", "layouts"):
        if key not in data:
            problems.add(f"{key} is missing: a plan needs {TOP_KEYS[key]}")
        elif not data[key]:
            problems.add(f"{key} is empty: a plan needs {TOP_KEYS[key]}", key)
    options = common_options(data, template, problems)
    models = model_entries(data.get("models") or [], problems)
    tasks = task_entries(data.get("tasks") or [], problems)
    layouts = layout_entries(data.get("layouts") or [], problems)
    repeat = whole(data.get("repeat", 1), problems, "repeat", minimum=1, maximum=MAX_REPEAT)
    if "layouts" not in flags:
        _check_endpoints(models, layouts, problems)
    _check_size(len(models) * len(tasks) * repeat * len(_all_layouts(layouts)), problems)
    _check_rules(models, layouts, options, problems)
    problems.raise_any()
    groups: list[Group] = []
    pairs: list[Pair] = []
    for model in models:
        launched = any(x.canonical not in model.endpoints for x in _all_layouts(layouts))
        resolved = _resolve(model, resolve_model) if launched else model.name
        _expand_model(model, resolved, tasks, layouts, repeat, options, groups, pairs)
    return SweepPlan(tuple(groups), tuple(pairs), source)


NO_WINDOW = " [no sliding window]"
"""The variant of the cells whose engine runs a sliding-window model without its window (a
DCP pair on CPU): another engine than a plain run of the same layout."""


def _resolve(model: ModelEntry, resolve: Callable[[str], str]) -> str:
    try:
        return resolve(model.name)
    except EvalpipeError as exc:
        where = f" (line {model.line})" if model.line else ""
        raise EvalpipeError(f"model {model.name}{where}: {exc}") from exc


def _check_model(model: ModelEntry, problems: Problems, where: tuple[str | int, ...]) -> None:
    """A model evalpipe will launch must be a built-in name, a folder or a known hub id."""
    if model.name in builtin_models.MODELS:
        return
    try:
        builtin_models.where(model.path or model.name)
    except EvalpipeError as exc:
        problems.add(str(exc), *where)


def _check_rules(
    models: list[ModelEntry], layouts: list[LayoutEntry], options: RunOptions, problems: Problems
) -> None:
    """Each layout and baseline against the rules of the platform it will run on: this
    machine's for an engine evalpipe launches, the declared (or generic) ones for an
    endpoint, as ``evalpipe run`` does."""
    for i, model in enumerate(models):
        if any(x.canonical not in model.endpoints for x in _all_layouts(layouts)):
            _check_model(model, problems, ("models", i))
        for entry in layouts:
            for layout in (entry.layout, entry.baseline):
                if layout is None:
                    continue
                remote = layout.canonical in model.endpoints
                platform = options.platform or ("generic" if remote else current_platform())
                rules = None if platform == "generic" else platform
                errors = validate(layout, rules, options.attention)
                if not remote and not errors:
                    errors = _backend_errors(layout, platform, options, model)
                for error in errors:
                    problems.add(
                        f"layout {layout.canonical} cannot run on platform {platform}: {error}",
                        "layouts",
                        layouts.index(entry),
                    )


def _backend_errors(
    layout: Layout, platform: str, options: RunOptions, model: ModelEntry
) -> list[str]:
    """What the attention backend ``layout`` runs on here refuses (the CPU DCP backend's
    rules), as :func:`evalpipe.run.plan.precheck` would say it for a cell."""
    try:
        args = EngineArgs.build(layout, (*options.engine_args, *model.engine_args), platform)
    except EvalpipeError:
        return []  # a bad --engine-arg is refused with its own line
    return backend_errors(layout, platform, args)


def _check_endpoints(
    models: list[ModelEntry], layouts: list[LayoutEntry], problems: Problems
) -> None:
    """An endpoint for a layout the plan does not run is a typo: its group would get a local
    engine instead of the server meant for it."""
    known = {x.canonical for x in _all_layouts(layouts)}
    for i, model in enumerate(models):
        for layout in model.endpoints:
            if known and layout not in known:
                problems.add(
                    f"endpoints: {layout} is not a layout of this plan (its layouts and "
                    f"baselines: {', '.join(sorted(known))})",
                    "models",
                    i,
                    "endpoints",
                )


def _check_size(cells: int, problems: Problems) -> None:
    """Refuse a plan of more runs than :data:`MAX_SWEEP_CELLS`, before it is expanded."""
    if cells > MAX_SWEEP_CELLS:
        problems.add(
            f"the plan makes up to {cells} runs (models x tasks x layouts with their "
            f"baselines x repeat), above the limit of {MAX_SWEEP_CELLS}; split it into "
            "smaller plans"
        )


def _all_layouts(layouts: list[LayoutEntry]) -> list[Layout]:
    return [x for e in layouts for x in (e.layout, e.baseline) if x is not None]


def _expand_model(
    model: ModelEntry,
    resolved: str,
    tasks: list[TaskEntry],
    layouts: list[LayoutEntry],
    repeat: int,
    options: RunOptions,
    groups: list[Group],
    pairs: list[Pair],
) -> None:
    """This model's groups (baselines first, so pairs complete early) and pairs."""
    # (layout, variant) → cell key → cell, in order: one engine per layout and engine arguments
    cells: dict[tuple[str, str], dict[str, Cell]] = {}

    def cell(layout: Layout, task: TaskEntry, r: int, grid: Layout | None, pair: Layout) -> str:
        o = _cell_options(model, resolved, task, layout, r, grid, options)
        # Both sides of a pair compute the same model (on CPU, a DCP layout's override).
        shared = pair_engine_args(o, pair.canonical)
        variant = "" if shared == o.engine_args else NO_WINDOW
        o = dataclasses.replace(o, engine_args=pairs_for(layout, shared))
        base = pair != layout
        c = Cell(model.label, task.name, layout.canonical, r, o, base, task.line, variant)
        cells.setdefault((layout.canonical, variant), {}).setdefault(c.key, c)
        return c.key

    # A baseline's cells are made before its layout's, so its group comes first and each
    # pair can be compared as soon as its layout's group ends.
    for entry in layouts:
        for task in tasks:
            for r in range(repeat):
                if entry.baseline is None:
                    cell(entry.layout, task, r, None, entry.layout)
                    continue
                grid = entry.layout if _needs_grid(task) else None
                base_key = cell(entry.baseline, task, r, grid, entry.layout)
                pairs.append(Pair(cell(entry.layout, task, r, None, entry.layout), base_key))
    for (layout, variant), by_key in cells.items():
        endpoint = model.endpoints.get(layout)
        devices = 0 if endpoint else parse(layout).devices
        found = tuple(by_key.values())
        groups.append(Group(model.label, layout, devices, found, endpoint, variant))


def _needs_grid(task: TaskEntry) -> bool:
    """Whether the task's items depend on the shard grid (long-context generators): then a
    baseline is run on its CP layout's grid, so both score the same prompts."""
    spec = load_task(task.name)
    if spec.data.generator is None or task.data:
        return False
    return "shard_period" in generators.get(spec.data.generator).requires


def _cell_options(
    model: ModelEntry,
    resolved: str,
    task: TaskEntry,
    layout: Layout,
    r: int,
    grid: Layout | None,
    o: RunOptions,
) -> RunOptions:
    endpoint = model.endpoints.get(layout.canonical)
    shard = grid.canonical if grid is not None else None
    engine_args = (*o.engine_args, *model.engine_args)
    return dataclasses.replace(
        o,
        task=task.name,
        model=model.name if endpoint else (_local(resolved) or resolved),
        layout=layout.canonical,
        repeat_index=r,
        engine="endpoint" if endpoint else "serve",
        endpoint=endpoint,
        served_model=model.served_model,
        model_path=_local(model.path),
        engine_args=engine_args,
        params=task.params,
        limit=task.limit if task.limit is not None else o.limit,
        data=_local(task.data),
        data_dir=_local(o.data_dir),
        shard_layout=shard,
        # the grid's interleave, which the baseline's own arguments will leave out
        shard_interleave=interleave_given(engine_args) if grid is not None else None,
    )


def _local(path: str | None) -> str | None:
    """A local file or folder as an absolute path: a cell may run in a process (a Ray
    worker) whose working folder is not this one. Anything else (a hub id, a served name)
    as it is; neither is part of a run's configuration hash (the fingerprint and data
    digest are), so a sweep's run still pairs with one made by hand."""
    if path is None or not Path(path).expanduser().exists():
        return path
    return str(Path(path).expanduser().resolve())
