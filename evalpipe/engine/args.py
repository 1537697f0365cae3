"""Engine arguments, parsed once: the layout's sizes, the user's extras and platform defaults.

:class:`EngineArgs` is a sorted mapping of ``vllm.EngineArgs`` field names to JSON values,
built once per run from the :class:`~evalpipe.layout.Layout`, the ``--engine-arg KEY=VALUE``
pairs (values read as YAML, so ``4096`` is a number and ``true`` a boolean) and what the
platform needs. It is stored as it is (``RunConfig.engine_args``) and rendered only at the
edge: :meth:`EngineArgs.to_flags` for ``vllm serve``, :meth:`EngineArgs.to_kwargs` for
``vllm.LLM``. Pairing compares :meth:`EngineArgs.non_layout` structurally.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from evalpipe.errors import EvalpipeError
from evalpipe.layout import INTERLEAVE_KEYS, LAYOUT_ENGINE_KEYS, Layout, interleave_size
from evalpipe.records import engine_arg_value

DERIVED_KEYS = frozenset({"distributed_executor_backend", *INTERLEAVE_KEYS})
"""Keys that follow from the layout on a platform (the CPU engine needs ``mp`` for more
than one rank) or that only its DCP reads (the KV cache interleave), so they never keep two
runs from pairing: a DCP run of any interleave pairs with one baseline."""

CPU_DEFAULTS = {"enforce_eager": True}
"""What evalpipe adds on CPU unless the user says otherwise: compiled mode costs 150-200 s of
warm-up per start there and its cache does not reload, and eager mode gives the same greedy
outputs run to run. A suggested command leaves them out."""


def _normal_key(raw: str) -> str:
    """``--max-model-len`` / ``max-model-len`` / ``max_model_len`` → ``max_model_len``."""
    return raw.strip().lstrip("-").replace("-", "_")


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``["dtype=float32", "max_model_len=4096"]`` → ``{"dtype": "float32", ...}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = _normal_key(key)
        if not sep or not key:
            raise EvalpipeError(
                f"--engine-arg {pair!r} is not KEY=VALUE (example: --engine-arg dtype=float32)"
            )
        out[key] = engine_arg_value(value)
    return out


def _flag_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _pair_value(value: Any) -> str:
    """The text that YAML reads back as ``value`` (a string that would read as a number or a
    boolean is quoted)."""
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    return json.dumps(value)


@dataclass(frozen=True)
class EngineArgs:
    """The engine's arguments as one sorted mapping of EngineArgs field names to values."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", {k: self.values[k] for k in sorted(self.values)})

    @classmethod
    def build(
        cls, layout: Layout, pairs: Iterable[str], platform: str, *, remote: bool = False
    ) -> EngineArgs:
        """The layout's sizes, the user's ``KEY=VALUE`` extras and the platform defaults.

        ``remote`` (an endpoint evalpipe does not start) keeps only the user's extras: the
        server's own flags are not evalpipe's to state.
        """
        extras = parse_pairs(pairs)
        if remote:
            return cls(extras)
        clash = sorted(set(extras) & LAYOUT_ENGINE_KEYS)
        if clash:
            raise EvalpipeError(
                f"--engine-arg {clash[0]}: the layout sets it ({layout.canonical}); change "
                "--layout instead"
            )
        values: dict[str, Any] = {**layout.engine_kwargs(), **extras}
        if platform == "cpu":
            values = {**CPU_DEFAULTS, **values}
            if layout.tp * layout.pp > 1:
                values.setdefault("distributed_executor_backend", "mp")
        return cls(values)

    def to_flags(self) -> list[str]:
        """Long flags for ``vllm serve``: ``True`` → ``--flag``, ``False`` → ``--no-flag``
        (vLLM's argparse accepts the ``--no-`` form of boolean options)."""
        flags: list[str] = []
        for key, value in self.values.items():
            name = key.replace("_", "-")
            if value is True:
                flags.append(f"--{name}")
            elif value is False:
                flags.append(f"--no-{name}")
            else:
                flags += [f"--{name}", _flag_value(value)]
        return flags

    def to_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM``."""
        return dict(self.values)

    def non_layout(self) -> dict[str, Any]:
        """Every argument but the layout's sizes and what follows from them: what must be
        equal for two runs of different layouts to pair."""
        skip = LAYOUT_ENGINE_KEYS | DERIVED_KEYS
        return {k: v for k, v in self.values.items() if k not in skip}

    def as_pairs(self) -> list[str]:
        """Every argument as ``KEY=VALUE``, the way ``--engine-arg`` takes them (for display)."""
        return [f"{key}={_pair_value(value)}" for key, value in self.values.items()]

    def user_pairs(self) -> list[str]:
        """The non-layout arguments as ``KEY=VALUE``, platform defaults left out: what a
        suggested command repeats."""
        return [
            f"{key}={_pair_value(value)}"
            for key, value in self.non_layout().items()
            if CPU_DEFAULTS.get(key, ...) != value
        ]


def pairs_for(layout: Layout, pairs: tuple[str, ...]) -> tuple[str, ...]:
    """``--engine-arg`` pairs given for a pair of runs (or a sweep), as ``layout`` gets them:
    without the KV cache interleave when it has no DCP, which alone reads it (the engine is
    the same without it, and one run of it then serves as the baseline of every interleave)."""
    if layout.dcp > 1:
        return pairs
    return tuple(p for p in pairs if not set(parse_pairs([p])) & set(INTERLEAVE_KEYS))


def platform_env(layout: Layout, platform: str) -> dict[str, str]:
    """Environment variables the engine needs on ``platform`` (those the user set stay)."""
    if platform != "cpu":
        return {}
    from evalpipe.engine.server import cpu_env_defaults

    return cpu_env_defaults(layout.tp, layout.pp, os.environ)


def interleave_given(pairs: Iterable[str]) -> int | None:
    """The interleave size ``KEY=VALUE`` engine arguments set; None when they leave it to the
    platform, or give one that is not valid (which the run's own checks refuse, naming it)."""
    try:
        values = parse_pairs(pairs)
        if not any(key in values for key in INTERLEAVE_KEYS):
            return None
        return interleave_size(values, "")
    except (ValueError, EvalpipeError):
        return None


def with_interleave(engine_args: Mapping[str, Any], interleave: int) -> dict[str, Any]:
    """``engine_args`` with their interleave size set to ``interleave``."""
    kept = {k: v for k, v in engine_args.items() if k not in INTERLEAVE_KEYS}
    return {**kept, INTERLEAVE_KEYS[0]: interleave}
