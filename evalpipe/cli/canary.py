"""``evalpipe canary``: inject known faults into the real engine and show which signal sees
them, at how many items (the gate's detection-power certificate for one model)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from evalpipe.cli.common import add, count, points, probability, store_arg


def cmd_canary(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evalpipe import api

    options = api.RunOptions(
        task=args.task,
        model=args.model,
        layout=args.layout,
        platform=args.platform,
        engine_args=tuple(args.engine_arg),
        data=args.data,
        data_dir=args.data_dir,
        limit=args.limit,
        concurrency=args.concurrency,
        seed=args.seed,
        store=args.store,
        runs_dir=Path(args.runs_dir) if args.runs_dir else None,
        progress=not args.quiet,
        params=tuple(args.param),
        logprobs=args.logprobs,
    )
    settings = api.CanarySettings(
        grid=args.grid,
        max_starts=args.max_starts,
        max_retries=args.max_retries,
        margin=args.margin / 100,
        alpha=args.alpha,
        min_n=args.min_n,
    )
    if args.dry_run:
        print(api.canary_dry_run(options, settings))
        return 0
    report = api.canary(options, settings)
    print(json.dumps(api.canary_json(report)) if args.json else api.format_canary(report))
    return 1 if report.failures else 0


def register(sub: Any) -> None:
    p = add(
        sub,
        "canary",
        cmd_canary,
        "inject known faults into the engine and show which signal catches them",
        "evalpipe canary --model gemma3-270m --task gsm8k --limit 120 --grid faults.yaml",
    )
    p.add_argument("--model", default="smollm2", help="model path or built-in name")
    p.add_argument("--task", default="gsm8k", help="task name or YAML path (default gsm8k)")
    p.add_argument("--layout", default="tp1", help="the layout every arm runs on (default tp1)")
    p.add_argument("--limit", type=int, default=120, help="first N items (default 120)")
    p.add_argument(
        "--grid",
        metavar="FILE",
        help="YAML grid of faults and benign variants (default: the built-in grid, "
        "3 kinds x 3 sizes + 2 benign variants; README shows the format)",
    )
    p.add_argument(
        "--max-starts",
        type=count,
        default=20,
        help="refuse a grid needing more engine starts than this (default 20)",
    )
    p.add_argument("--max-retries", type=count, default=2, help="restarts of a lost engine")
    p.add_argument("--platform", choices=["cuda", "ascend", "cpu"], help="rule set")
    p.add_argument(
        "--engine-arg", action="append", default=[], metavar="KEY=VALUE", help="for every arm"
    )
    p.add_argument("--data", help="local data file instead of the task's default")
    p.add_argument("--data-dir", help="data directory (default: $EVALPIPE_DATA_DIR)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logprobs", type=int, default=5, metavar="K", help="top-K captured")
    p.add_argument("--margin", type=points, default=1.0, help="accuracy margin in points")
    p.add_argument("--alpha", type=probability, default=0.05)
    p.add_argument("--min-n", type=count, default=100)
    p.add_argument("--runs-dir", help="where run directories (engine logs) go")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list every engine start and its runs (new, to resume, reused); start nothing",
    )
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    store_arg(p)
