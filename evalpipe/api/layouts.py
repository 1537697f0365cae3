"""Layouts: validate and explain a layout (``evalpipe layout explain``)."""

from __future__ import annotations

from typing import Any

from evalpipe.api.running import resolve_model

RULE_TEXT = {
    "vllm": "ParallelConfig's size rules (pcp 1: dcp divides tp; pcp > 1: dcp is 1, pcp or tp*pcp)",
    "cuda": "none on sizes alone (vLLM checks the attention backends when it starts)",
    "ascend": "vLLM Ascend refuses prefill context parallel",
    "ascend+sfa": "with sparse (SFA) attention vLLM Ascend needs dcp = tp when dcp > 1",
    "cpu": "vLLM's CPU model runner refuses prefill context parallel; decode context parallel "
    "runs on evalpipe's CPU DCP backend when it can load here, with an interleave dividing the "
    "KV block size (128) and eager mode",
}
"""What each rule set of :func:`evalpipe.layout.rule_sets` checks, as ``layout explain`` says."""


def explain_layout(
    text: str,
    platform: str | None = None,
    attention: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """``evalpipe layout explain``: the layout's sizes, rule violations, baseline and flags,
    and under ``rules`` what was checked (one ``NAME: what`` line each), so that a
    ``--platform`` or ``--attention`` that changes no verdict still shows it was applied.

    With ``model``, vLLM's own config validation also runs (when vllm is importable) and its
    message, if any, is added to ``errors``.
    """
    from evalpipe.layout import current_platform, explain, rule_sets

    info = explain(text, platform=platform, attention=attention)
    _backend(info, platform)
    rules = [f"{name}: {RULE_TEXT[name]}" for name in rule_sets(platform, attention)]
    if platform is None:
        rules.append(
            "platform: none given, no platform rules (add --platform; `evalpipe run` applies "
            f"its own: {current_platform()} here)"
        )
    if attention is not None and platform != "ascend":
        rules.append(
            f"attention: {attention} changes nothing here (only --platform ascend has rules for it)"
        )
    if model:
        rules.append(_vllm_check(info, text, model))
    info["rules"] = rules
    return info


def _backend(info: dict[str, Any], platform: str | None) -> None:
    """Add the attention backend the layout runs on and why (both None for a layout that
    does not parse) and, for the CPU DCP backend, what keeps it from running here with the
    default engine arguments."""
    from evalpipe.backends import backend_for
    from evalpipe.engine.args import EngineArgs
    from evalpipe.layout import parse
    from evalpipe.run.cpu_dcp import backend_errors

    info["attention_backend"] = info["attention_backend_why"] = None
    if info["devices"] is None:
        return
    layout = parse(info["layout"])
    backend = backend_for(layout, platform)
    info["attention_backend"], info["attention_backend_why"] = backend.name, backend.why
    if platform is not None:
        errors = backend_errors(layout, platform, EngineArgs.build(layout, (), platform))
        info["errors"] += errors
        info["valid"] = info["valid"] and not errors


def _vllm_check(info: dict[str, Any], text: str, model: str) -> str:
    """Run vLLM's own config check for ``model`` if the layout passed the rules above; its
    ``rules`` line. A failure is added to ``info``'s errors."""
    if not info["valid"]:
        return "vllm-config: skipped (the layout already breaks a rule above)"
    from evalpipe.engine.vllm_check import check_with_vllm
    from evalpipe.layout import parse

    check = check_with_vllm(parse(text), resolve_model(model), {})
    if not check.available:
        return f"vllm-config: skipped ({check.message})"
    if not check.ok:
        info["errors"].append(f"vLLM: {check.message}")
        info["valid"] = False
    return f"vllm-config: vLLM's own config check for {model} (heads, KV heads, backends)"


def format_layout(info: dict[str, Any]) -> str:
    lines = [f"layout   {info['layout']}  ({'valid' if info['valid'] else 'INVALID'})"]
    if info.get("devices") is not None:
        sizes = " ".join(f"{k}={info[k]}" for k in ("dp", "tp", "pp", "pcp", "dcp"))
        lines.append(f"sizes    {sizes} ep={'on' if info['ep'] else 'off'}")
        lines.append(f"devices  {info['devices']}")
        lines.append(f"baseline {info['baseline'] or '(not a context-parallel layout)'}")
        lines.append(f"vllm     {' '.join(info['vllm_args'])}")
        backend = info.get("attention_backend") or "chosen by vLLM"
        lines.append(f"backend  {backend}: {info.get('attention_backend_why')}")
    lines += [f"error    {e}" for e in info["errors"]]
    lines += [f"{'rules' if i == 0 else '':8} {r}" for i, r in enumerate(info.get("rules", []))]
    return "\n".join(lines)
