"""What every command group shares: the help formatter, ``group`` (a command with
subcommands), ``add`` (a subcommand with an example in its help) and the ``--store`` option."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def group(sub: Any, name: str, help: str, metavar: str = "COMMAND") -> Any:
    """``evalpipe NAME SUBCOMMAND``: the parser ``add`` puts NAME's subcommands in."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", metavar=metavar)


def add(sub: Any, name: str, handler: Handler, help: str, example: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=f"{help}\n\nExample:\n  {example}",
        formatter_class=formatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="SQLite file path or SQLAlchemy URL (default: $EVALPIPE_STORE or ./evalpipe.db)",
    )
