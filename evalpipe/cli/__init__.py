"""Command line: parses arguments and calls :mod:`evalpipe.api`; nothing else lives here.

One module per command group (``running``, ``reporting``, ``stored``, ``setup``), each with
its handlers and a ``register(sub)`` that adds its parsers (``setup`` also has
``register_layout``, so ``layout`` keeps its place in ``evalpipe --help``).

Imports stay at module level only for the standard library, so ``evalpipe --help`` costs
milliseconds and never loads vllm, torch or SQLAlchemy.

Exit codes: 0 success; 1 the evaluation failed, the layout is invalid or the input is bad
(the message says what to do); 2 usage error; 130 interrupted. ``gate``: 0 pass, 1 fail
(drift or failed), 2 incomplete (a run or baseline is missing), 3 bad policy or usage, 4 the
store cannot be opened or read.
A closed output pipe (``evalpipe runs list | head -1``) is no error: what is left to print is
dropped, the command (a run too) finishes and exits with its own code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO, cast

from evalpipe import __version__
from evalpipe.cli import canary, reporting, running, scoring, setup, stored, sweeping
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
    sweeping.register(sub)
    canary.register(sub)
    scoring.register(sub)
    reporting.register(sub)
    setup.register_layout(sub)
    stored.register(sub)
    setup.register(sub)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _ClosedPipeGuard:
    """A standard stream that swallows a closed pipe instead of raising ``BrokenPipeError``.

    ``evalpipe runs list | head -1`` closes stdout after one line and ``evalpipe run … 2>&1 |
    head`` closes both streams mid-run: the reader chose to stop reading, so what is left to
    print is dropped while the command (the run: every sample stored) carries on. The stream's
    descriptor is pointed at /dev/null so that later writes, and Python's final flush at exit,
    find nothing to complain about.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._divert()
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._divert()

    def _divert(self) -> None:
        self._closed = True
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not a file (a test's capture): dropping the writes is enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        with contextlib.suppress(OSError):
            self._stream.flush()  # the bytes still buffered now go to /dev/null

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _guarded_streams() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    out = _ClosedPipeGuard(sys.stdout)
    sys.stdout = cast(TextIO, out)
    sys.stderr = cast(TextIO, _ClosedPipeGuard(sys.stderr))
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        except OSError:
            out._divert()  # a full disk, reported by the command: what is left is dropped
        sys.stdout, sys.stderr = saved


def main(argv: Sequence[str] | None = None) -> int:
    with _guarded_streams():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
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
        code = handler(args)
        sys.stdout.flush()  # here: a full disk under stdout is this command's error
        return code
    except EvalpipeError as exc:
        print(f"evalpipe: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # The file system's answer (a full disk, a directory where a file was meant, no
        # permission) is the whole story; a traceback would add nothing a user can act on.
        # `gate` documents 3 for an output it cannot write: 1 would read as drift.
        print(f"evalpipe: error: {_os_error(exc)}", file=sys.stderr)
        return 3 if args.command == "gate" else 1
    except KeyboardInterrupt:
        print(f"evalpipe: interrupted{_what_stays(args)}", file=sys.stderr)
        return 130


def _what_stays(args: argparse.Namespace) -> str:
    """What an interrupted command leaves: only a run (or a sweep's runs) is stored and
    resumes; a dry run, a report or a read stored nothing."""
    if args.command in ("run", "sweep") and not getattr(args, "dry_run", False):
        return "; the run is stored and resumes with the same command"
    if args.command == "score":
        return "; what was scored is stored, and the same command scores the rest"
    return ""


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {what}" if paths else what


if __name__ == "__main__":
    sys.exit(main())
