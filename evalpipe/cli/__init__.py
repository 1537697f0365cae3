"""Command line: parses arguments and calls :mod:`evalpipe.api`; nothing else lives here.

One module per command group (``running``, ``reporting``, ``stored``, ``setup``), each with
its handlers and a ``register(sub)`` that adds its parsers (``setup`` also has
``register_layout``, so ``layout`` keeps its place in ``evalpipe --help``).

Imports stay at module level only for the standard library, so ``evalpipe --help`` costs
milliseconds and never loads vllm, torch or SQLAlchemy.

Exit codes: 0 success; 1 the evaluation failed, the layout is invalid or the input is bad
(the message says what to do); 2 usage error; 130 interrupted. ``gate``: 0 pass, 1 fail
(drift or failed), 2 incomplete (a run or baseline is missing), 3 bad policy or usage.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from evalpipe import __version__
from evalpipe.cli import reporting, running, scoring, setup, stored
from evalpipe.cli.common import Handler, formatter
from evalpipe.errors import EvalpipeError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalpipe",
        description=(
            "Paired accuracy evaluation of inference-engine parallel layouts.\n\n"
            "Example:\n  evalpipe run gsm8k --layout tp1 --limit 20"
        ),
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"evalpipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The order of `evalpipe --help`: evaluate and report, then stored runs, then setup.
    running.register(sub)
    scoring.register(sub)
    reporting.register(sub)
    setup.register_layout(sub)
    stored.register(sub)
    setup.register(sub)
    return parser


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
