"""Which attention backend runs a layout, and what a DCP layout on CPU needs; pure.

vLLM's CPU platform runs one attention backend, CPU_ATTN, whatever ``--attention-backend``
says, and CPU_ATTN returns no softmax LSE, which DCP needs to merge the KV cache's shards.
evalpipe's vLLM plugin puts a torch backend in its place (:mod:`evalpipe.engine.plugin.cpu_dcp`)
in an engine started with ``EVALPIPE_CPU_DCP=1``, which evalpipe sets only for a DCP layout
on CPU. This module is the pure half: the backend a layout runs on and why, the rules that
backend adds (whether it can load here is an input, as the engine side finds it), and the
override DCP needs for a model with a sliding window (vLLM: "DCP not support sliding window"),
which both sides of a pair get so that they compute the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.layout import Layout, interleave_size

CPU_DCP_ENV = "EVALPIPE_CPU_DCP"
"""The engine environment variable that makes evalpipe's plugin install the CPU DCP backend:
``1`` (what evalpipe sets) runs its torch attention in DCP engines only, :data:`CPU_DCP_ALL`
in every engine, DCP or not."""

CPU_DCP_ALL = "all"
"""``EVALPIPE_CPU_DCP=all``: the torch attention without DCP too (one rank: no merge), to check
it against vLLM's own CPU backend on the same model; a developer's switch, set on a server
started by hand (an engine evalpipe starts gets ``1`` or nothing)."""

CPU_DCP = "evalpipe-cpu-dcp"
CPU_STOCK = "CPU_ATTN"

CPU_BLOCK_SIZE = 128
"""vLLM's KV cache block size on CPU when none is given (vllm/platforms/cpu.py
``check_and_update_config``)."""


@dataclass(frozen=True)
class Backend:
    """The attention backend a layout runs on (None: vLLM chooses at start-up) and why."""

    name: str | None
    why: str


def uses_cpu_dcp(layout: Layout, platform: str | None) -> bool:
    """Whether an engine evalpipe starts for ``layout`` on ``platform`` runs the CPU DCP
    backend."""
    return platform == "cpu" and layout.dcp > 1


def backend_for(layout: Layout, platform: str | None) -> Backend:
    """The backend of ``layout`` on ``platform``, as ``layout explain`` and a run record it."""
    if platform is None:
        return Backend(None, "no platform given: vLLM chooses the backend where it runs")
    if platform != "cpu":
        return Backend(
            None,
            f"vLLM chooses the backend on {platform} at start-up and checks, per layer, that "
            "it supports the layout's context parallelism",
        )
    if layout.dcp == 1:
        return Backend(CPU_STOCK, "vLLM's own CPU backend (the only one its CPU platform selects)")
    return Backend(
        CPU_DCP,
        f"dcp{layout.dcp}: vLLM's CPU_ATTN returns no softmax LSE, which DCP needs to merge "
        "the shards; evalpipe's plugin registers a torch backend in its place that does "
        f"({CPU_DCP_ENV}=1), and vLLM's own DCP code (query all-gather, LSE merge over gloo) "
        "runs around it",
    )


def cpu_dcp_errors(
    layout: Layout, engine_args: Mapping[str, Any], unavailable: str | None
) -> list[str]:
    """What keeps ``layout`` with ``engine_args`` (EngineArgs names → values) from running on
    the CPU DCP backend; ``unavailable`` is why the backend cannot load here (None: it can).
    Empty for a layout without DCP. vLLM's own checks (tp % dcp, KV heads) are not repeated."""
    if layout.dcp == 1:
        return []
    name = f"dcp{layout.dcp}"
    errors = []
    if unavailable is not None:
        errors.append(f"{name}: evalpipe's CPU DCP backend cannot load here: {unavailable}")
    try:
        interleave = interleave_size(engine_args, "cpu")
    except ValueError as exc:
        errors.append(f"{name}: {exc}")
        interleave = 1
    block = engine_args.get("block_size", CPU_BLOCK_SIZE)
    whole = isinstance(block, int) and not isinstance(block, bool) and block > 0
    if whole and (interleave > block or block % interleave):
        errors.append(
            f"{name}: an interleave of {interleave} tokens must divide the KV block size "
            f"({block}; vLLM refuses it otherwise)"
        )
    if engine_args.get("enforce_eager") is not True:
        errors.append(
            f"{name}: evalpipe's CPU DCP backend runs in eager mode only (remove "
            "enforce_eager=false)"
        )
    if str(engine_args.get("kv_cache_dtype", "auto")).startswith("fp8"):
        errors.append(f"{name}: evalpipe's CPU DCP backend has no fp8 KV cache")
    return errors


def sliding_window_override(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``hf_overrides`` that make every layer of a model global, from its ``config.json``,
    or None when it has no sliding window. vLLM's DCP refuses sliding-window layers; this
    changes the model's numerics past the window, so both sides of a pair must run with it.

    Only the window goes: ``layer_types`` stays, because Gemma-3 picks each layer's RoPE by
    its type (theta 10 000 for local layers, 1 000 000 for global ones), and making every
    layer "full_attention" would give the local layers the global RoPE, which breaks the
    model (measured here: 0 of 8 arith items, every output at max tokens)."""
    window = config.get("sliding_window")
    if window is None or config.get("use_sliding_window") is False:
        return None
    return {"sliding_window": None}


def merged_overrides(given: Any, needed: Mapping[str, Any]) -> dict[str, Any]:
    """The user's ``hf_overrides`` (or None) with ``needed`` added; a key the user set to
    something else is refused, naming it."""
    if given is None:
        return dict(needed)
    if not isinstance(given, Mapping):
        raise EvalpipeError(f"--engine-arg hf_overrides must be a mapping, not {given!r}")
    clash = sorted(k for k in needed if k in given and given[k] != needed[k])
    if clash:
        raise EvalpipeError(
            f"--engine-arg hf_overrides sets {', '.join(clash)}, which DCP on CPU needs as "
            f"{ {k: needed[k] for k in clash} } (no window: vLLM's DCP refuses "
            "sliding-window layers); leave those keys out"
        )
    return {**given, **needed}
