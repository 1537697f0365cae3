"""What every command group shares: the help formatter, ``group`` (a command with
subcommands), ``add`` (a subcommand with an example in its help), the ``--store`` option and
the argument types of the decision thresholds (a bad value is a usage error, exit 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, TypeVar

_N = TypeVar("_N", int, float)

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
        # A prefix is not a flag: `comment --baseline X` must not become --baseline-layout X.
        allow_abbrev=False,
    )
    parser.set_defaults(handler=handler)
    return parser


def store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="SQLite file path or SQLAlchemy URL (default: $EVALPIPE_STORE or ./evalpipe.db)",
    )


def points(text: str) -> float:
    """``--margin``: accuracy points, above 0 and below 100 (``nan`` would make every
    comparison silently inconclusive)."""
    value = _parse(text, float)
    if not (math.isfinite(value) and 0 < value < 100):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of points above 0, below 100")
    return value


def probability(text: str) -> float:
    """``--alpha``: strictly between 0 and 1."""
    value = _parse(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1 (e.g. 0.05)")
    return value


def count(text: str) -> int:
    """``--min-n``: a whole number, 0 or more."""
    value = _parse(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 or more")
    return value


def tokens(text: str) -> int:
    """``--shard-period``: a positive whole number of tokens."""
    value = _parse(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of tokens")
    return value


def _parse(text: str, kind: Callable[[str], _N]) -> _N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
