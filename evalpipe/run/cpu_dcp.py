"""What a run on evalpipe's CPU DCP backend adds to its plan: the backend's rules, checked
where the engine will start; the engine's environment; and the sliding-window override, for
the DCP run and for its baseline alike.

A DCP layout on CPU runs on the backend evalpipe's vLLM plugin installs when the engine's
environment has ``EVALPIPE_CPU_DCP=1`` (:mod:`evalpipe.backends`). vLLM's DCP refuses
sliding-window layers, so a model with a window (Gemma-3) runs without it
(``hf_overrides={"sliding_window": null}``: every layer attends to the whole context).
That changes its numerics past the window, so the pair's baseline must run with the same
override: ``run --with-baseline`` and sweeps pass :func:`pair_engine_args` to both sides, and
the override is an ordinary engine argument, stored with each run (which is how the two pair).
"""

from __future__ import annotations

import os
from typing import Any

from evalpipe.backends import (
    CPU_DCP_ENV,
    cpu_dcp_errors,
    merged_overrides,
    sliding_window_override,
    uses_cpu_dcp,
)
from evalpipe.engine import models
from evalpipe.engine.args import EngineArgs, parse_pairs
from evalpipe.errors import EvalpipeError
from evalpipe.layout import Layout, current_platform, parse
from evalpipe.options import RunOptions

OVERRIDES_KEY = "hf_overrides"


def backend_errors(layout: Layout, platform: str, args: EngineArgs) -> list[str]:
    """What the CPU DCP backend refuses in ``args`` for ``layout`` on ``platform``, including
    that it cannot load in this Python (empty for any other backend)."""
    if not uses_cpu_dcp(layout, platform):
        return []
    from evalpipe.engine.plugin.cpu_dcp import unavailable

    return cpu_dcp_errors(layout, args.values, unavailable())


def engine_env(layout: Layout, platform: str) -> dict[str, str]:
    """``EVALPIPE_CPU_DCP=1`` for a DCP engine on CPU; for any other, an empty value when the
    shell has one set (an engine never inherits the backend)."""
    if uses_cpu_dcp(layout, platform):
        return {CPU_DCP_ENV: "1"}
    return {CPU_DCP_ENV: ""} if os.environ.get(CPU_DCP_ENV) else {}


def with_override(args: EngineArgs, layout: Layout, platform: str, model: str) -> EngineArgs:
    """``args`` with the sliding-window override merged in when ``layout`` runs on the CPU
    DCP backend and ``model`` has a window; otherwise unchanged."""
    if not uses_cpu_dcp(layout, platform):
        return args
    given = args.values.get(OVERRIDES_KEY)
    needed = _needed(model, given)
    if needed is None:
        return args
    return EngineArgs({**args.values, OVERRIDES_KEY: merged_overrides(given, needed)})


def pair_engine_args(options: RunOptions, cp_layout: str) -> tuple[str, ...]:
    """``options.engine_args`` plus what an engine of ``cp_layout`` adds that the baseline of
    its pair must share (the sliding-window override of a DCP layout on CPU), as
    ``KEY=VALUE`` pairs: give the result to both sides."""
    if options.engine == "endpoint":
        return options.engine_args  # a server's arguments are its own
    platform = options.platform or current_platform()
    layout = parse(cp_layout)
    extras = parse_pairs(options.engine_args)
    merged = with_override(EngineArgs(extras), layout, platform, options.model)
    if merged.values.get(OVERRIDES_KEY) == extras.get(OVERRIDES_KEY):
        return options.engine_args
    kept = [p for p in options.engine_args if OVERRIDES_KEY not in parse_pairs([p])]
    override = EngineArgs({OVERRIDES_KEY: merged.values[OVERRIDES_KEY]})
    return (*kept, *override.as_pairs())


def _needed(model: str, given: Any) -> dict[str, Any] | None:
    config = models.config(model)
    if config is not None:
        return sliding_window_override(config)
    if isinstance(given, dict) and "sliding_window" in given:
        return None  # the user states the model's window; vLLM checks the rest
    raise EvalpipeError(
        f"cannot read the config.json of model {model!r} to see whether it has a sliding "
        "window, which vLLM's DCP refuses: run DCP on CPU with a local model folder, or say "
        "so yourself with --engine-arg 'hf_overrides={\"sliding_window\": null}'"
    )
