"""Layouts: validate and explain a layout (``evalpipe layout explain``)."""

from __future__ import annotations

from typing import Any

from evalpipe.api.running import resolve_model


def explain_layout(
    text: str,
    platform: str | None = None,
    attention: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """``evalpipe layout explain``: the layout's sizes, rule violations, baseline and flags.

    With ``model``, vLLM's own config validation also runs (when vllm is importable) and its
    message, if any, is added to ``errors``.
    """
    from evalpipe.layout import explain, parse

    info = explain(text, platform=platform, attention=attention)
    if model and info["valid"]:
        from evalpipe.engine.vllm_check import check_with_vllm

        check = check_with_vllm(parse(text), resolve_model(model), {})
        if check.available and not check.ok:
            info["errors"].append(f"vLLM: {check.message}")
            info["valid"] = False
    return info


def format_layout(info: dict[str, Any]) -> str:
    lines = [f"layout   {info['layout']}  ({'valid' if info['valid'] else 'INVALID'})"]
    if info.get("devices") is not None:
        sizes = " ".join(f"{k}={info[k]}" for k in ("dp", "tp", "pp", "pcp", "dcp"))
        lines.append(f"sizes    {sizes} ep={'on' if info['ep'] else 'off'}")
        lines.append(f"devices  {info['devices']}")
        lines.append(f"baseline {info['baseline'] or '(not a context-parallel layout)'}")
        lines.append(f"vllm     {' '.join(info['vllm_args'])}")
    lines += [f"error    {e}" for e in info["errors"]]
    return "\n".join(lines)
