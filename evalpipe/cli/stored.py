"""``evalpipe runs``, ``import`` and ``store``: stored runs, other harnesses' output, the store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalpipe.cli.common import add, group, store_arg
from evalpipe.cli.tables import (
    EXPORT_EXAMPLES,
    add_table_arguments,
    export_table,
    refuse_table_flags,
)
from evalpipe.errors import EvalpipeError


def cmd_runs_list(args: argparse.Namespace) -> int:
    from evalpipe import api

    runs = api.list_runs(args.store, task=args.task, layout=args.layout, limit=args.limit)
    if args.json:
        print(json.dumps([api.run_to_dict(r) for r in runs]))
    else:
        print(api.format_runs_table(runs))
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from evalpipe import api

    run = api.get_run(args.store, args.run)
    if args.json:
        print(json.dumps(api.run_to_dict(run)))
    else:
        print(api.format_run_summary(run, args.store, details=True))
    return 0


def cmd_runs_export(args: argparse.Namespace) -> int:
    from evalpipe import api

    if args.format != "jsonl" or args.table is not None:
        return export_table(args)
    refuse_table_flags(args)
    if len(args.run) != 1:
        raise EvalpipeError(
            "a JSONL export is one whole run: give one run id (`evalpipe runs list` shows "
            "them); for many runs add --format csv or --format parquet (--table runs or samples)",
            exit_code=2,
        )
    # A file is replaced only once the export is complete (the run found, every line written).
    out = sys.stdout if args.output in (None, "-") else args.output
    api.export_run(args.store, args.run[0], out)
    return 0


def cmd_runs_import(args: argparse.Namespace) -> int:
    from evalpipe import api

    run_id = api.import_run(args.store, args.file)
    print(json.dumps({"run_id": run_id}) if args.json else run_id)
    return 0


def cmd_import_aisbench(args: argparse.Namespace) -> int:
    from evalpipe import api

    runs = api.import_aisbench(
        args.store, args.dir, layout=args.layout, model_path=args.model_path, datasets=args.dataset
    )
    for r in runs:
        print(
            json.dumps(api.run_to_dict(r)) if args.json else api.format_run_summary(r, args.store)
        )
    return 0


def cmd_import_lmeval(args: argparse.Namespace) -> int:
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
        for item, created in imported:
            print(api.describe_lmeval_import(item, created))
    return 0


def cmd_store_migrate(args: argparse.Namespace) -> int:
    from evalpipe import api

    report = api.migrate_store(args.store)
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


def cmd_store_copy(args: argparse.Namespace) -> int:
    from evalpipe import api

    report = api.copy_store(args.src, args.dst, args.run or None)
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


def register(sub: Any) -> None:
    _runs(sub)
    _imports(sub)
    _store(sub)


def _runs(sub: Any) -> None:
    runs = group(sub, "runs", "stored runs")
    ls = add(runs, "list", cmd_runs_list, "list stored runs, newest first", "evalpipe runs list")
    ls.add_argument("--task")
    ls.add_argument("--layout")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    store_arg(ls)
    show = add(
        runs,
        "show",
        cmd_runs_show,
        "show one run: what ran, its accuracy, when and how (--json: every stored field)",
        "evalpipe runs show 20261128-065414-3f2a9c",
    )
    show.add_argument("run", help="run id or a unique prefix (`evalpipe runs list` shows them)")
    show.add_argument("--json", action="store_true", help="every stored field as one line of JSON")
    store_arg(show)
    export = add(
        runs,
        "export",
        cmd_runs_export,
        "write a run and its samples as JSONL, or a table of runs, samples, a comparison's "
        "paired items or its token positions as CSV or parquet",
        EXPORT_EXAMPLES,
    )
    export.add_argument(
        "run", nargs="*", metavar="RUN", help="run id or unique prefix (JSONL: exactly one)"
    )
    export.add_argument(
        "-o",
        "--output",
        help="file, replaced only when the export is complete (default, or -: stdout)",
    )
    store_arg(export)
    add_table_arguments(export)
    imp = add(
        runs,
        "import",
        cmd_runs_import,
        "store a run from JSONL (an export, or another harness's output)",
        "evalpipe runs import run.jsonl --json",
    )
    imp.add_argument("file", help="JSONL file, or - for stdin")
    imp.add_argument("--json", action="store_true")
    store_arg(imp)


def _imports(sub: Any) -> None:
    """``evalpipe import HARNESS …``: other harnesses' output folders as runs (one subcommand
    per harness)."""
    harnesses = group(
        sub, "import", "store other harnesses' output folders as runs", metavar="HARNESS"
    )
    lm = add(
        harnesses,
        "lm-eval",
        cmd_import_lmeval,
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
    store_arg(lm)
    ais = add(
        harnesses,
        "aisbench",
        cmd_import_aisbench,
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
    store_arg(ais)


def _store(sub: Any) -> None:
    store_cmd = group(sub, "store", "the store itself")
    mig = add(
        store_cmd,
        "migrate",
        cmd_store_migrate,
        "bring a store (SQLite file or PostgreSQL) to the current schema",
        "evalpipe store migrate --store postgresql://ci@db.internal/evalpipe",
    )
    mig.add_argument("--json", action="store_true")
    store_arg(mig)
    cp = add(
        store_cmd,
        "copy",
        cmd_store_copy,
        "copy runs between stores; copying again creates nothing new (exit 1 on conflicts)",
        "evalpipe store copy ./evalpipe.db postgresql://ci@db.internal/evalpipe",
    )
    cp.add_argument("src", help="source store: SQLite path or URL")
    cp.add_argument("dst", help="destination store (created/migrated if needed)")
    cp.add_argument(
        "--run", action="append", metavar="ID", help="run id or prefix (repeatable; default all)"
    )
    cp.add_argument("--json", action="store_true")
