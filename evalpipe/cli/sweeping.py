"""``evalpipe sweep``: models × tasks × layouts (with baselines) × repeats as one job."""

from __future__ import annotations

import argparse
import json
from typing import Any

from evalpipe.cli.common import add, count, points, store_arg

EPILOG = """\
A plan file (YAML; the flags --models/--tasks/--layouts/--repeat/--limit/--engine-arg win over
its keys):

  models: [gemma3-270m]                 # names or paths; or {name, path, served_model,
                                        #   endpoints: {LAYOUT: URL}, engine_args}
  tasks: [gsm8k, {task: arith, limit: 40, params: {n: 40}}]
  layouts: [tp2=tp1, dp2tp8dcp8]        # a CP layout brings its baseline (dp2tp8)
  repeat: 2                             # repeat indexes 0..K-1: the engine's noise floor
  limit: 200
  engine_args: {max_model_len: 8192}

Every cell is the run `evalpipe run` would make: finished ones are reused, unfinished ones
resume from their stored samples; run the same command again after a failure or a kill.
Exit: 0 every cell finished (and --policy passed), 1 a cell failed or never ran (or the gate
failed), 2 usage or the gate incomplete, 130 interrupted."""


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evalpipe import api

    template = api.RunOptions(
        task="",
        model="",
        store=args.store,
        runs_dir=Path(args.runs_dir) if args.runs_dir else None,
        progress=not args.quiet,
        request_timeout_s=args.request_timeout,
        health_timeout_s=args.health_timeout,
        platform=args.platform,
    )
    flags: dict[str, Any] = {
        "models": args.models,
        "tasks": args.tasks,
        "layouts": args.layouts,
        "repeat": args.repeat,
        "limit": args.limit,
        "engine_args": args.engine_arg or None,
        "concurrency": args.concurrency,
        "logprobs": args.logprobs,
    }
    settings = api.SweepSettings(
        plan=args.plan,
        overrides={k: v for k, v in flags.items() if v is not None},
        template=template,
        executor=args.executor,
        devices=args.devices,
        ray_address=args.ray_address,
        ray_resource=args.ray_resource,
        max_retries=args.max_retries,
        dry_run=args.dry_run,
        margin=args.margin / 100,
        policy=args.policy,
        tag=args.tag,
        dashboard=args.dashboard,
        progress_every_s=args.progress_every,
    )
    outcome = api.sweep(settings)
    if args.json:
        print(json.dumps(api.sweep_json(outcome)))
    else:
        print(api.format_sweep(outcome))
    return int(outcome.exit_code)


def register(sub: Any) -> None:
    p = add(
        sub,
        "sweep",
        cmd_sweep,
        "run a plan of models x tasks x layouts (each CP layout with its baseline) x repeats",
        "evalpipe sweep plan.yaml --dry-run   |   evalpipe sweep --models gemma3-270m "
        "--tasks arith --layouts tp2=tp1 --repeat 2 --limit 20",
    )
    p.epilog = EPILOG
    p.add_argument("plan", nargs="?", help="plan file (YAML); optional with --models/--tasks/…")
    p.add_argument("--models", type=_list, help="comma-separated models (names or paths)")
    p.add_argument("--tasks", type=_list, help="comma-separated tasks")
    p.add_argument(
        "--layouts", type=_list, help="comma-separated layouts; tp2=tp1 names a baseline"
    )
    p.add_argument("--repeat", type=int, help="runs of every cell (default 1)")
    p.add_argument("--limit", type=int, help="first N items of every task")
    p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--concurrency", type=int, help="requests in flight per run (default 256)")
    p.add_argument("--logprobs", type=int, metavar="K", help="top-K logprobs captured (default 5)")
    p.add_argument("--platform", choices=["cuda", "ascend", "cpu"], help="rule set")
    p.add_argument(
        "--dry-run", action="store_true", help="print the cells, devices, reuse; run nothing"
    )
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--devices", type=int, help="devices this machine offers (local executor)")
    p.add_argument("--ray-address", default="auto", help="auto, HOST:PORT or ray://HOST:10001")
    p.add_argument(
        "--ray-resource", default="GPU", help="the accelerator's Ray resource: GPU, NPU, CPU"
    )
    p.add_argument("--max-retries", type=count, default=2, help="retries of a lost group")
    p.add_argument(
        "--progress-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="ray: print each cell's stored samples this often (default 10)",
    )
    p.add_argument("--margin", type=points, default=1.0, help="non-inferiority margin, points")
    p.add_argument("--policy", help="gate policy: decide the release gate at the end")
    p.add_argument("--tag", help="the gate's selection of runs tagged TAG (default: latest)")
    p.add_argument("--dashboard", metavar="DIR", help="render the dashboard into DIR at the end")
    p.add_argument("--request-timeout", type=float, default=3600.0, help="seconds")
    p.add_argument("--health-timeout", type=float, default=900.0, help="seconds")
    p.add_argument("--runs-dir", help="where run directories (engine logs) go")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument("--quiet", action="store_true", help="no per-run progress bars")
    store_arg(p)
