"""What a run is made of: the built-in models, the offline data and the task files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelInfo:
    """A built-in model (``evalpipe model list``): ``built`` once its HF folder is cached."""

    name: str
    built: bool
    description: str


@dataclass(frozen=True)
class TaskInfo:
    """A task file as ``evalpipe tasks list`` shows it."""

    name: str
    version: str
    request: str
    description: str


def list_models() -> list[ModelInfo]:
    """The built-in models, in the order ``evalpipe model fetch`` offers them."""
    from evalpipe.engine import models

    return [
        ModelInfo(
            name,
            (models.model_dir(name) / "evalpipe-model.json").exists(),
            source.description,
        )
        for name, (source, _) in models.MODELS.items()
    ]


def fetch_model(name: str, log: Callable[[str], None] = print) -> Path:
    """The HF folder of built-in model ``name``, built on first use; ``log`` gets progress."""
    from evalpipe.engine import models

    return models.fetch(name, log=log)


def fetch_data(name: str) -> Path:
    """Build dataset ``name`` offline into the user cache once; returns the data directory."""
    from evalpipe.tasks import datafetch

    return datafetch.fetch(name)


def iter_tasks() -> Iterator[TaskInfo]:
    """Every task on the search path (built-in and ``$EVALPIPE_TASKS_PATH``), loaded and
    checked one at a time, so a broken task file raises after the good ones before it."""
    from evalpipe.tasks.load import list_tasks, load_task

    for name in list_tasks():
        t = load_task(name)
        yield TaskInfo(t.name, t.version, t.request, t.description)
