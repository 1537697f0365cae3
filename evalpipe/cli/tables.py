"""``evalpipe runs export --format csv|parquet --table …``: a frame of the Python API
(:mod:`evalpipe.api.frames`) written as a table; JSONL, the default, stays the run exchange
format of :mod:`evalpipe.cli.stored`."""

from __future__ import annotations

import argparse
import sys

from evalpipe.cli.common import tokens
from evalpipe.errors import EvalpipeError

EXPORT_EXAMPLES = (
    "evalpipe runs export RUN_ID -o run.jsonl\n"
    "  evalpipe runs export --format csv --table runs --task gsm8k --since 2026-11-01 -o runs.csv\n"
    "  evalpipe runs export RUN_ID --format parquet --table samples -o samples.parquet\n"
    "  evalpipe runs export RUN_ID --format csv --table pairs --baseline-layout tp1 -o pairs.csv\n"
    "  evalpipe runs export RUN_ID --format parquet --table tokens --shard-period 128 -o t.parquet"
)
TABLES = ("runs", "samples", "pairs", "tokens")
"""As :data:`evalpipe.api.frames.TABLES` (imported lazily: the CLI loads no API at start)."""
FILTERS = ("tag", "model", "task", "layout", "status", "since", "until")
PAIR_OPTIONS = ("baseline", "baseline_layout", "shard_period", "path", "force")


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """The format, the table, its run filters and the pair it compares."""
    what = parser.add_argument_group("tables (--format csv or parquet; README: Notebooks)")
    what.add_argument(
        "--format",
        choices=("jsonl", "csv", "parquet"),
        default="jsonl",
        help="jsonl (default): one whole run, for `evalpipe runs import`; csv or parquet: "
        "the --table (parquet needs -o FILE and pip install 'evalpipe[parquet]')",
    )
    what.add_argument(
        "--table",
        choices=TABLES,
        help="runs: a row per run; samples (default): a row per item per run; pairs: RUN's "
        "items beside its baseline's; tokens: RUN's compared token positions",
    )
    select = parser.add_argument_group("runs and samples: which runs (default: all)")
    for flag, text in (
        ("--tag", "runs carrying TAG (repeatable: every one)"),
        ("--model", "model name or path as run, or its last part (repeatable: any)"),
        ("--task", "task (repeatable: any)"),
        ("--layout", "layout, any spelling (repeatable: any)"),
        ("--status", "running, finished, failed or aborted (repeatable: any)"),
    ):
        select.add_argument(flag, action="append", help=text)
    select.add_argument(
        "--since", help="started at or after this ISO 8601 date or time (no zone: UTC)"
    )
    select.add_argument("--until", help="started before this date or time")
    pair = parser.add_argument_group("pairs and tokens: RUN against its baseline, as compare")
    pair.add_argument("--baseline", metavar="RUN_ID", help="default: found as compare finds it")
    pair.add_argument("--baseline-layout", metavar="L", help="e.g. tp1 to compare tp2 with tp1")
    pair.add_argument(
        "--shard-period", type=tokens, metavar="N", help="tokens (default: the layout's)"
    )
    pair.add_argument(
        "--path",
        action="append",
        choices=("decode", "forced-decode", "forced"),
        help="tokens: only this path",
    )
    pair.add_argument("--force", action="store_true", help="pair runs that differ in questions")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, False)]


def refuse_table_flags(args: argparse.Namespace) -> None:
    """A JSONL export takes none of the table options: say so rather than ignore them."""
    extra = _given(args, FILTERS + PAIR_OPTIONS)
    if extra:
        raise EvalpipeError(
            f"{', '.join(extra)}: only for a table; add --format csv or --format parquet "
            "(a JSONL export is one whole run)",
            exit_code=2,
        )


def export_table(args: argparse.Namespace) -> int:
    """Write the frame ``--table`` names as ``--format`` to ``-o`` (CSV also to stdout)."""
    from evalpipe import api

    table, fmt = args.table or "samples", args.format
    _check(args, table, fmt)
    if table in ("runs", "samples"):
        read = api.runs_frame if table == "runs" else api.samples_frame
        df = read(
            args.store, args.run or None, tags=args.tag, model=args.model, task=args.task,
            layout=args.layout, status=args.status, since=args.since, until=args.until,
        )  # fmt: skip
    elif table == "pairs":
        df = api.pairs_frame(
            args.store, args.run[0], args.baseline, baseline_layout=args.baseline_layout,
            shard_period=args.shard_period, force=args.force,
        )  # fmt: skip
    else:
        df = api.tokens_frame(
            args.store, args.run[0], args.baseline, baseline_layout=args.baseline_layout,
            shard_period=args.shard_period,
            paths=args.path or ("decode", "forced-decode", "forced"),
            force=args.force,
        )  # fmt: skip
    to_stdout = args.output in (None, "-")
    api.write_frame(df, sys.stdout if to_stdout else args.output, fmt)
    if not to_stdout:
        shape = f"{len(df)} rows, {len(df.columns)} columns"
        print(f"{table}: {shape} to {args.output}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace, table: str, fmt: str) -> None:
    """Usage errors (exit 2): options the table does not take, a pair's one RUN, parquet's
    file."""
    if fmt == "jsonl":
        raise EvalpipeError(
            "--table needs --format csv or --format parquet (JSONL is one whole run)", exit_code=2
        )
    problems = []
    pairs = table in ("pairs", "tokens")
    wrong = _given(args, FILTERS if pairs else PAIR_OPTIONS)
    if table != "tokens" and args.path:
        wrong.append("--path")
    if wrong:
        problems.append(f"--table {table} does not take {', '.join(dict.fromkeys(wrong))}")
    if pairs and len(args.run) != 1:
        problems.append(f"--table {table} compares one RUN with its baseline: give one RUN")
    if fmt == "parquet" and args.output in (None, "-"):
        problems.append(f"parquet is binary: give a file, e.g. -o {table}.parquet")
    if problems:
        raise EvalpipeError("; ".join(problems), exit_code=2)
