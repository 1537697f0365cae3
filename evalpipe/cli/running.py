"""``evalpipe run``: evaluate a task on a model and layout (with its baseline, repeats)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from evalpipe.cli.common import add, points, store_arg


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evalpipe import api

    engine = "endpoint" if args.endpoint else args.engine
    options = api.RunOptions(
        task=args.task,
        model=args.model,
        layout=args.layout,
        platform=args.platform,
        attention=args.attention,
        engine=engine,
        endpoint=args.endpoint,
        served_model=args.served_model,
        model_path=args.model_path,
        engine_args=tuple(args.engine_arg),
        data=args.data,
        data_dir=args.data_dir,
        limit=args.limit,
        concurrency=args.concurrency,
        request_timeout_s=args.request_timeout,
        health_timeout_s=args.health_timeout,
        max_error_rate=args.max_error_rate,
        seed=args.seed,
        store=args.store,
        runs_dir=Path(args.runs_dir) if args.runs_dir else None,
        resume=args.resume,
        tags=tuple(args.tag),
        progress=not args.quiet,
        api_key_env=args.api_key_env,
        params=tuple(args.param),
        shard_layout=args.shard_layout,
        shard_interleave=args.shard_interleave,
        logprobs=args.logprobs,
        fault=args.fault,
        request_order=args.request_order,
    )
    if args.with_baseline:
        base_runs, runs = api.run_with_baseline(options, args.baseline_layout, args.repeat)
        comparisons = api.compare(
            options.store,
            [runs[0].run_id],
            baseline=base_runs[0].run_id,
            margin=args.margin / 100,
            force=False,
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "runs": [api.run_to_dict(r) for r in runs],
                        "baseline_runs": [api.run_to_dict(r) for r in base_runs],
                        "comparisons": [api.comparison_json(c) for c in comparisons],
                    }
                )
            )
        else:
            for r in (*base_runs, *runs):
                print(api.format_run_summary(r, options.store))
            print("\n\n".join(api.format_comparison(c) for c in comparisons))
        return 0
    runs = api.run_repeated(options, args.repeat)
    for r in runs:
        if args.json:
            print(json.dumps(api.run_to_dict(r)))
        else:
            print(api.format_run_summary(r, options.store))
    return 0


def register(sub: Any) -> None:
    run = add(
        sub,
        "run",
        cmd_run,
        "evaluate a task on a model and layout, storing every sample",
        "evalpipe run gsm8k --layout tp2 --model gemma3-270m --limit 20",
    )
    run.add_argument(
        "task",
        help="task name (see `evalpipe tasks list`), a task YAML path, or lm-eval:TASK to run "
        "an lm-eval task against the same engine",
    )
    run.add_argument("--layout", default="tp1", help="parallel layout, e.g. dp2tp8dcp8")
    run.add_argument(
        "--model",
        default="smollm2",
        help="model path or name; the built-ins smollm2 and gemma3-270m are built on first "
        "use (default: smollm2)",
    )
    run.add_argument("--platform", choices=["cuda", "ascend", "cpu"], help="rule set")
    run.add_argument("--attention", choices=["sfa"], help="attention kind (sfa: sparse)")
    run.add_argument("--engine", choices=["serve", "offline"], default="serve")
    run.add_argument("--endpoint", help="URL of a running OpenAI-compatible server")
    run.add_argument("--served-model", help="model name on --endpoint (default: --model)")
    run.add_argument("--model-path", help="local weights of the endpoint's model, to fingerprint")
    run.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra engine argument, repeatable (e.g. dtype=float32)",
    )
    _run_options(run)


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--data", help="local data file (.jsonl/.json) instead of the default")
    run.add_argument("--data-dir", help="data directory (default: $EVALPIPE_DATA_DIR)")
    run.add_argument("--limit", type=int, help="only the first N items")
    run.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    run.add_argument("--request-timeout", type=float, default=3600.0, help="seconds")
    run.add_argument("--health-timeout", type=float, default=900.0, help="seconds")
    run.add_argument(
        "--max-error-rate",
        type=float,
        default=0.0,
        help="fraction of infrastructure errors tolerated (default 0)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--resume", metavar="RUN_ID", help="continue a stopped run")
    run.add_argument("--tag", action="append", default=[], help="label the run, repeatable")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a generated task's parameter, repeatable; the value is YAML "
        '(e.g. --param period=256 --param "lengths=[240, 272]")',
    )
    run.add_argument(
        "--shard-layout",
        metavar="LAYOUT",
        help="layout whose shard boundaries (dcp x interleave) a long-context task's "
        "lengths straddle (default: --layout)",
    )
    run.add_argument(
        "--shard-interleave",
        type=int,
        metavar="N",
        help="the interleave size of --shard-layout's engine, for a run whose own engine "
        "arguments do not set it, e.g. the baseline of a DCP run with "
        "cp_kv_cache_interleave_size=N (default: this run's)",
    )
    run.add_argument(
        "--logprobs",
        type=int,
        default=5,
        metavar="K",
        help="store the token ids and top-K logprobs of every generated token, for "
        "token-level comparison (default 5; 0 = off)",
    )
    run.add_argument(
        "--fault",
        metavar="SPEC",
        help="inject a canary fault into the engine (evalpipe's vLLM plugin), e.g. "
        "key-scale:size=0.2,period=128; kinds: key-scale, kv-position, out-scale. Stored "
        "with the run: a faulted run never pairs or passes as a clean one",
    )
    run.add_argument(
        "--request-order",
        choices=["dataset", "reversed"],
        default="dataset",
        help="the order items are sent in (arrival order shapes the engine's batches)",
    )
    run.add_argument("--runs-dir", help="where run directories (engine logs) go")
    run.add_argument("--api-key-env", help="env var holding the endpoint's API key")
    run.add_argument(
        "--with-baseline",
        action="store_true",
        help="run the non-CP baseline first (reused when a finished one matches), then compare",
    )
    run.add_argument(
        "--baseline-layout", help="baseline layout for --with-baseline (default: non-CP layout)"
    )
    run.add_argument(
        "--repeat", type=int, default=1, help="K runs of the same config (engine noise floor)"
    )
    run.add_argument(
        "--margin", type=points, default=1.0, help="non-inferiority margin in points (default 1)"
    )
    run.add_argument("--json", action="store_true", help="print the run record as JSON")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    store_arg(run)
