"""Ask the installed vLLM whether it accepts a layout for a model, without starting workers.

:mod:`evalpipe.layout` knows the rules that depend on sizes alone; the rest (attention heads
divisible by TP, KV heads vs DCP, what the platform's model runner supports, the vLLM
version's own rule set) only vLLM knows. ``EngineArgs.create_engine_config()`` runs all of
that config-time validation in-process: no worker, no weights, a few seconds after import.
Runtime-only checks (e.g. the attention backend's DCP support, checked per layer once the
model is loaded) are not covered; :func:`evalpipe.layout.validate` with a platform covers the
known ones.

Before a run, :func:`check_before_launch` asks the same question in a child process and
remembers an accepted configuration, so a repeat or the next invocation pays nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalpipe.engine.provenance import vllm_distribution
from evalpipe.errors import EvalpipeError
from evalpipe.layout import Layout, parse
from evalpipe.paths import cache_dir

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
    """vLLM's verdict: ``available`` is False when vLLM gave none (not installed, or the
    check did not finish; then ``ok`` is False too and says nothing about the layout);
    ``message`` is vLLM's reason when not ok, or why there is no verdict."""

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


# --- before a launch: in a child process, accepted configurations remembered ----------------

CHECK_TIMEOUT_S = 600.0
_ANSWER = "evalpipe-vllm-check: "
_ACCEPTED = VllmCheck(available=True, ok=True)
_memo: set[str] = set()


@dataclass(frozen=True)
class LaunchConfig:
    """One configuration a run is about to start vLLM with."""

    layout: Layout
    model: str
    extra: Mapping[str, Any]


def check_before_launch(configs: Sequence[LaunchConfig]) -> list[VllmCheck]:
    """:func:`check_with_vllm` for each of ``configs`` (a run and its baseline), in order.

    They are checked in one child process, so vLLM is imported once: importing it here would
    hold torch in evalpipe's memory beside the engine for the whole run, and the check's
    offline and logging settings would leak into the engine's environment. An accepted
    configuration is remembered in this process and, for a local model folder, in the user's
    cache (keyed on the vLLM build, the model's config.json and the arguments), so a repeat
    or the next invocation costs nothing; a refusal is checked again every time.
    """
    if importlib.util.find_spec("vllm") is None:
        return [VllmCheck(available=False, ok=False, message="vllm is not installed")] * len(
            configs
        )
    keys = [_verdict_key(c.model, {**c.layout.engine_kwargs(), **c.extra}) for c in configs]
    stored = [cache_dir() / "vllm-check" / f"{key}.json" for key, _ in keys]
    known = [
        key in _memo or (durable and path.is_file())
        for (key, durable), path in zip(keys, stored, strict=True)
    ]
    todo = [c for c, k in zip(configs, known, strict=True) if not k]
    fresh = iter(_in_child(todo) if todo else [])
    results = [_ACCEPTED if k else next(fresh) for k in known]
    for (key, durable), path, result in zip(keys, stored, results, strict=True):
        if result.ok:
            _memo.add(key)
            if durable and not path.is_file():
                _remember(path)
    return results


def forget() -> None:
    """Forget the accepted configurations remembered in this process (the cache stays)."""
    _memo.clear()


def _verdict_key(model: str, kwargs: Mapping[str, Any]) -> tuple[str, bool]:
    """A digest of everything vLLM's verdict depends on; True when it can be kept on disk
    (a local folder whose config.json is part of the digest)."""
    path = Path(model).expanduser()
    config = path / "config.json"
    durable = config.is_file()
    facts = {
        "vllm": vllm_distribution(),
        "python": sys.executable,
        "model": str(path.resolve()) if durable else model,
        "config": hashlib.sha256(config.read_bytes()).hexdigest() if durable else None,
        "args": dict(kwargs),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("VLLM_")},
    }
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32], durable


def _remember(stored: Path) -> None:
    # A lost write only costs the next run a check; never fail a run for the cache.
    try:
        stored.parent.mkdir(parents=True, exist_ok=True)
        tmp = stored.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text('{"ok": true}\n')
        os.replace(tmp, stored)
    except OSError:
        pass


def _in_child(configs: Sequence[LaunchConfig]) -> list[VllmCheck]:
    request = json.dumps(
        [{"layout": c.layout.canonical, "model": c.model, "extra": dict(c.extra)} for c in configs]
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "evalpipe.engine.vllm_check"],
            input=request,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        late = f"vLLM's config check did not finish in {CHECK_TIMEOUT_S:.0f} s"
        return [VllmCheck(available=False, ok=False, message=late)] * len(configs)
    answers = [ln for ln in done.stdout.splitlines() if ln.startswith(_ANSWER)]
    if done.returncode != 0 or not answers:
        tail = " ".join(done.stderr.strip().splitlines()[-3:]) or f"exit {done.returncode}"
        raise EvalpipeError(f"vLLM's config check failed to run: {tail}")
    results = []
    for answer in json.loads(answers[-1][len(_ANSWER) :]):
        if "error" in answer:  # the first input error is the user's to fix
            raise EvalpipeError(str(answer["error"]))
        results.append(
            VllmCheck(bool(answer["available"]), bool(answer["ok"]), answer.get("message"))
        )
    return results


def _child() -> int:
    """The child's side: a list of requests on stdin, one answer line on stdout."""
    answers: list[dict[str, Any]] = []
    for request in json.loads(sys.stdin.read()):
        try:
            layout = parse(request["layout"])
            result = check_with_vllm(layout, request["model"], request["extra"])
        except EvalpipeError as err:
            answers.append({"error": err.message})
            continue
        answers.append({"available": result.available, "ok": result.ok, "message": result.message})
    sys.stdout.write(_ANSWER + json.dumps(answers) + "\n")
    return 0


__all__ = [
    "LaunchConfig",
    "VllmCheck",
    "check_before_launch",
    "check_with_vllm",
    "forget",
    "summarize",
]

if __name__ == "__main__":
    sys.exit(_child())
