"""``evalpipe score``: teacher-forced scoring of a baseline's tokens on a run's engine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from evalpipe.cli.common import add, store_arg


def cmd_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evalpipe import api

    report = api.score(
        args.run,
        args.against,
        store=args.store,
        engine=args.engine,
        endpoint=args.endpoint,
        baseline_endpoint=args.baseline_endpoint,
        served_model=args.served_model,
        logprobs=args.logprobs,
        floor=args.floor,
        max_error_rate=args.max_error_rate,
        concurrency=args.concurrency,
        engine_args=tuple(args.engine_arg),
        limit=args.limit,
        runs_dir=Path(args.runs_dir) if args.runs_dir else None,
        progress=not args.quiet,
        path=args.path,
    )
    print(json.dumps(api.score_json(report)) if args.json else api.format_score(report))
    return 0


def register(sub: Any) -> None:
    score = add(
        sub,
        "score",
        cmd_score,
        "teacher-forced scoring: RUN's engine scores BASELINE's generated tokens",
        "evalpipe score 20261201-101500-ab12cd --against 20261201-100000-cd34ef",
    )
    score.description = (score.description or "") + (
        "\n\nRUN's engine (re-created from RUN's stored configuration, or the server at "
        "--endpoint)\ngenerates the baseline's tokens one decode step at a time (--path "
        "forced-decode, traces\nstored as source decode:BASELINE), or scores them appended to "
        "each prompt with prompt\nlogprobs (--path prefill, source BASELINE). The baseline's "
        "own tokens are scored on its\nengine too, and on its repeats for the noise floor. "
        "Resumable: scored items are skipped.\nThen: evalpipe compare RUN --baseline BASELINE"
    )
    score.add_argument("run", metavar="RUN", help="the run whose engine scores (id or prefix)")
    score.add_argument(
        "--path",
        choices=["forced-decode", "prefill"],
        default="forced-decode",
        help="forced-decode (default): the engine generates the baseline's tokens one decode "
        "step at a time (evalpipe's logits processor; an endpoint needs --logits-processors "
        "evalpipe.engine.plugin.forcing:ForceTokens); prefill: the tokens appended to the "
        "prompt, scored with prompt logprobs (a vocabulary-sized row per position)",
    )
    score.add_argument(
        "--against",
        required=True,
        metavar="BASELINE",
        help="the run whose generated tokens are scored (needs token traces: run --logprobs)",
    )
    score.add_argument(
        "--endpoint", help="server that scores RUN (required when RUN was made on an endpoint)"
    )
    score.add_argument(
        "--baseline-endpoint",
        help="server that scores BASELINE and its repeats, when they need their own engine",
    )
    score.add_argument("--served-model", help="model name on those servers (default: the run's)")
    score.add_argument(
        "--engine",
        choices=["serve", "offline"],
        help="start the engines this way (default: as each run was made)",
    )
    score.add_argument(
        "--logprobs",
        type=int,
        metavar="K",
        help="top-k logprobs per position (default: the baseline's k)",
    )
    score.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also score the baseline's tokens on its repeats, for the noise floor "
        "(default: when repeats exist)",
    )
    score.add_argument(
        "--max-error-rate",
        type=float,
        default=0.0,
        help="share of items that may fail (e.g. longer than the context) (default 0)",
    )
    _engine_options(score)
    score.add_argument("--runs-dir", help="where engine logs go (default: $EVALPIPE_RUNS_DIR)")
    score.add_argument("--json", action="store_true", help="print the summary as JSON")
    score.add_argument("--quiet", action="store_true", help="no progress output")
    store_arg(score)


def _engine_options(score: argparse.ArgumentParser) -> None:
    """How the scoring sessions run: requests in flight, engine arguments, how many items."""
    score.add_argument(
        "--concurrency",
        type=int,
        help="requests in flight (default: as each run was made); prompt logprobs cost "
        "memory for every prompt position in flight (vocabulary-sized rows): lower it when the "
        "engine runs out of memory",
    )
    score.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine argument over the stored ones for every scoring session, the same on "
        "both sides (e.g. max_num_batched_tokens=1024: prompt logprobs need a vocabulary-sized "
        "row per prefill token of a step); repeatable",
    )
    score.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="score only the baseline's first N items (dataset order), the same N on every "
        "side; a later call with a larger N scores the rest",
    )
