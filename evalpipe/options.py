"""The options of one ``evalpipe run``: a config dataclass instead of a long keyword list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.yamlload import YamlInputError, load_yaml

ENGINE_KINDS = ("serve", "endpoint", "offline")
REQUEST_ORDERS = ("dataset", "reversed")


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for. Defaults are the CLI's defaults.

    ``platform`` None means "the platform evalpipe runs on" (detected without importing
    torch); ``served_model`` is the name to request from an ``--endpoint`` (defaults to
    ``model``); ``model_path`` lets an endpoint run still fingerprint local weights;
    ``reuse_finished`` returns an already finished run of the same config instead of
    running it again (``--with-baseline``, ``--repeat``). ``params`` (``KEY=VALUE``, the
    value read as YAML) override a generated task's parameters; ``shard_layout`` is the
    layout whose shard boundaries a long-context task's length grid straddles (default: the
    run's own layout; a baseline run gets its CP run's layout, so both get the same items),
    ``shard_interleave`` that layout's interleave size when this run's engine arguments do
    not set it (a baseline without DCP runs without the CP run's interleave argument).
    ``fault`` is a canary fault spec (:mod:`evalpipe.faults`) the engine injects (an
    endpoint's run is only labelled with it); ``request_order`` sends the items in
    ``dataset`` or ``reversed`` order (arrival order shapes the engine's batches).
    ``logprobs`` is the top-k of token logprobs captured per generated position (0: none);
    like ``progress`` it is not part of the run's configuration: capture does not change what
    is generated, so a run with and one without it pair and resume alike.
    """

    task: str
    model: str
    layout: str = "tp1"
    platform: str | None = None
    attention: str | None = None
    engine: str = "serve"
    endpoint: str | None = None
    served_model: str | None = None
    model_path: str | None = None
    engine_args: tuple[str, ...] = ()
    data: str | None = None
    data_dir: str | None = None
    limit: int | None = None
    concurrency: int = 256
    request_timeout_s: float = 3600.0
    health_timeout_s: float = 900.0
    max_error_rate: float = 0.0
    seed: int = 0
    store: str | None = None
    runs_dir: Path | None = None
    resume: str | None = None
    tags: tuple[str, ...] = ()
    repeat_index: int = 0
    progress: bool = True
    api_key_env: str | None = None
    reuse_finished: bool = False
    params: tuple[str, ...] = ()
    shard_layout: str | None = None
    shard_interleave: int | None = None
    logprobs: int = 5
    fault: str | None = None
    request_order: str = "dataset"


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["lengths=[240, 272]", "n=2"]`` -> ``{"lengths": [240, 272], "n": 2}`` (YAML values).

    Each value is read by :func:`evalpipe.yamlload.load_yaml` (a duplicate key inside one is
    refused), and a KEY given twice is refused too: the last one silently winning is the
    mistake strict YAML loading exists to catch.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise EvalpipeError(f"--param {pair!r} is not KEY=VALUE (example: --param n=2)")
        if key in out:
            raise EvalpipeError(f"--param {key} is given twice; give each parameter once")
        try:
            out[key] = load_yaml(value)
        except YamlInputError as exc:
            raise EvalpipeError(f"--param {pair!r}: the value is not valid YAML: {exc}") from exc
    return out
