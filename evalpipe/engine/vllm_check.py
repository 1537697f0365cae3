"""Ask the installed vLLM whether it accepts a layout for a model, without starting workers.

:mod:`evalpipe.layout` knows the rules that depend on sizes alone; the rest (attention heads
divisible by TP, KV heads vs DCP, what the platform's model runner supports, the vLLM
version's own rule set) only vLLM knows. ``EngineArgs.create_engine_config()`` runs all of
that config-time validation in-process: no worker, no weights, a few seconds after import.
Runtime-only checks (e.g. the attention backend's DCP support, checked per layer once the
model is loaded) are not covered; :func:`evalpipe.layout.validate` with a platform covers the
known ones.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from evalpipe.errors import EvalpipeError
from evalpipe.layout import Layout

_MAX_MESSAGE = 600
# Pydantic wraps vLLM's ValueError: "1 validation error for ParallelConfig\n  Value error,
# <vLLM's text> [type=value_error, input_value=..., input_type=...]\n    For further
# information visit https://errors.pydantic.dev/...". Only vLLM's text helps the user.
_PYDANTIC_NOISE = (
    re.compile(r"^\d+ validation errors? for \w+$"),
    re.compile(r"^For further information visit \S+$"),
)
_PYDANTIC_TAIL = re.compile(r"\s*\[type=[^\]]*\]$")
_PYDANTIC_HEAD = re.compile(r"^(Value|Assertion) error, ")


@dataclass(frozen=True)
class VllmCheck:
    """vLLM's verdict: ``available`` is False when vLLM is not installed (then ``ok`` is
    False too and says nothing about the layout); ``message`` is vLLM's reason when not ok."""

    available: bool
    ok: bool
    message: str | None = None


def check_with_vllm(layout: Layout, model: str, extra: Mapping[str, object]) -> VllmCheck:
    """Build vLLM's engine config for ``model`` with ``layout`` (+ ``extra`` EngineArgs).

    Raises :class:`EvalpipeError` when vLLM is installed but cannot be imported (a broken
    install must not pass for "no vLLM here"), when ``extra`` names no EngineArgs field or
    when the model cannot be found (offline: a local folder or an HF cache entry).
    """
    if importlib.util.find_spec("vllm") is None:
        return VllmCheck(available=False, ok=False, message="vllm is not installed")
    # Model configs are read through huggingface_hub, which fixes its offline flag at import:
    # a check must never download, so set it before vLLM pulls the hub in.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # vLLM logs to stdout by default (vllm/envs.py VLLM_LOGGING_STREAM), which would corrupt
    # `evalpipe layout explain --json`; the verdict is our return value, the chatter is stderr.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        from vllm.engine.arg_utils import EngineArgs  # heavy: torch, transformers
    except Exception as err:  # any failure here is a broken install, not a layout verdict
        raise EvalpipeError(
            f"vllm is installed but failed to import ({summarize(err)}); fix the engine "
            "install (see ENGINE.md: remove CUDA builds of torchvision/torchaudio on CPU)"
        ) from err
    kwargs = {**layout.engine_kwargs(), **extra}
    try:
        args = EngineArgs(model=model, **kwargs)
    except Exception as err:
        # EngineArgs.__post_init__ only converts sub-config dicts and resolves the model path
        # (vllm/engine/arg_utils.py); no layout rule runs yet, so a failure here is a misspelt
        # key in extra or a model that is not there: the caller's to fix, not a verdict.
        raise EvalpipeError(
            f"vLLM rejected the engine arguments for model {model!r} before checking the "
            f"layout: {summarize(err)}"
        ) from err
    try:
        args.create_engine_config()
    except Exception as err:  # vLLM signals a refused config with many exception types
        return VllmCheck(available=True, ok=False, message=summarize(err))
    return VllmCheck(available=True, ok=True)


def summarize(err: BaseException) -> str:
    """One line of what an exception says: type name plus its first meaningful lines."""
    lines: list[str] = []
    for raw in str(err).splitlines():
        line = raw.strip()
        if not line or any(p.match(line) for p in _PYDANTIC_NOISE):
            continue
        line = _PYDANTIC_HEAD.sub("", _PYDANTIC_TAIL.sub("", line))
        if line.startswith("input_value=") or line.startswith("input_type="):
            continue
        lines.append(line)
        if len(lines) == 3:
            break
    text = " ".join(lines) or "(no message)"
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    return f"{type(err).__name__}: {text}"


__all__ = ["VllmCheck", "check_with_vllm", "summarize"]
