"""Registry of deterministic task-data generators, each named and versioned.

A generator is a plain function ``fn(n, seed, **params) -> list[dict]`` registered with
:func:`register`; its rows go through the same field mapping as rows read from a file. All
randomness comes from ``random.Random(seed)`` so the same (name, version, params) always
yields the same items. Bump a generator's version whenever its output for the same
parameters changes: the version is part of the recorded data source.

Generators that depend on the run (a long-context ``passkey`` generator needs the model's
tokenizer) name what they need in ``requires``; the runner passes those values as keyword
arguments through ``context``. They never come from YAML, and the sha256 of the generated
rows records their effect.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from evalpipe.errors import EvalpipeError
from evalpipe.records import canonical_json

Rows = list[dict[str, Any]]
F = TypeVar("F", bound=Callable[..., Rows])


@dataclass(frozen=True)
class Generator:
    """A registered generator: ``fn`` plus the name and version recorded with its data."""

    name: str
    version: str
    fn: Callable[..., Rows]
    requires: tuple[str, ...] = ()

    def __call__(self, **kwargs: Any) -> Rows:
        return self.fn(**kwargs)


GENERATORS: dict[str, Generator] = {}


def register(name: str, version: str, requires: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator adding ``fn`` to :data:`GENERATORS`; it must accept ``n`` and ``seed``."""

    def add(fn: F) -> F:
        params = inspect.signature(fn).parameters
        if "n" not in params or "seed" not in params:
            raise TypeError(f"generator {name!r} must take 'n' and 'seed' arguments")
        if name in GENERATORS:
            raise TypeError(f"generator {name!r} is registered twice")
        GENERATORS[name] = Generator(name, version, fn, tuple(requires))
        return fn

    return add


def get(name: str) -> Generator:
    try:
        return GENERATORS[name]
    except KeyError:
        raise EvalpipeError(
            f"unknown generator {name!r}; available: {', '.join(sorted(GENERATORS))}"
        ) from None


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``params`` (from YAML) fit generator ``name``'s signature."""
    gen = get(name)
    clash = sorted(set(params) & set(gen.requires))
    if clash:
        raise ValueError(f"{clash[0]!r} comes from the run, not from the task file")
    try:
        inspect.signature(gen.fn).bind(**params, **dict.fromkeys(gen.requires))
    except TypeError as exc:
        raise ValueError(f"generator {name!r}: {exc}") from exc


def generate(
    name: str, params: Mapping[str, Any], context: Mapping[str, Any] | None = None
) -> tuple[Generator, Rows]:
    """Run generator ``name`` with YAML ``params`` plus whatever it ``requires`` from context."""
    gen = get(name)
    context = context or {}
    missing = [k for k in gen.requires if k not in context]
    if missing:
        raise EvalpipeError(
            f"generator {name!r} needs {', '.join(missing)} from the run; pass it in the "
            "generator context"
        )
    try:
        check_params(name, params)
        rows = gen(**params, **{k: context[k] for k in gen.requires})
    except ValueError as exc:
        raise EvalpipeError(f"generator {name!r}: {exc}") from exc
    return gen, rows


def source_id(gen: Generator, params: Mapping[str, Any]) -> str:
    """``generator:NAME@VERSION?k=v&…``, with params sorted, as recorded in the run."""
    query = "&".join(
        f"{k}={v if isinstance(v, str) else canonical_json(v)}" for k, v in sorted(params.items())
    )
    return f"generator:{gen.name}@{gen.version}" + (f"?{query}" if query else "")
