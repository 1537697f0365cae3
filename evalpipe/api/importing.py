"""Runs from files: the JSONL exchange format, and other harnesses' output (lm-eval,
AISBench)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import IO, TYPE_CHECKING

from evalpipe.errors import EvalpipeError
from evalpipe.records import Run

if TYPE_CHECKING:
    # It imports SQLAlchemy, which `evalpipe --help` must not pay for.
    from evalpipe.importers.lmeval.build import ImportedRun


def import_jsonl(store: str | None, path: str) -> str:
    """``evalpipe runs import FILE`` (``-``: stdin): store the run in a JSONL file; its id.

    The file is read as bytes and decoded line by line, so messages name the file and the
    line, also for bytes that are not UTF-8. A missing or unreadable file is reported before
    the store is opened (a typo creates no store).
    """
    from evalpipe.importers.jsonl import import_run
    from evalpipe.store import open_store

    source: IO[bytes]
    if path == "-":
        source, name = sys.stdin.buffer, "<stdin>"
    else:
        try:
            source, name = open(path, "rb"), path  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise EvalpipeError(f"cannot read {path}: {exc.strerror}") from None
    with source if path != "-" else nullcontext(source), open_store(store) as s:
        return import_run(s, source, source=name, log=lambda m: print(m, file=sys.stderr))


def import_lmeval(
    store: str | None,
    path: str,
    layout: str | None = None,
    model_path: str | None = None,
    primary: str | None = None,
) -> list[tuple[ImportedRun, bool]]:
    """``evalpipe import lm-eval DIR``: one run per task; (ImportedRun, written now) each."""
    from evalpipe.importers.lmeval.build import import_lmeval as _import
    from evalpipe.store import open_store

    with open_store(store) as s:
        return _import(s, path, layout=layout, model_path=model_path, primary=primary)


def describe_lmeval_import(item: ImportedRun, created: bool) -> str:
    """One line for people: what :func:`import_lmeval` stored (or found already stored),
    with lm-eval's accuracy per filter, primary first."""
    from evalpipe.importers.lmeval.build import describe

    return describe(item, created)


def import_aisbench(
    store: str | None,
    path: str,
    layout: str | None = None,
    model_path: str | None = None,
    datasets: Sequence[str] | None = None,
) -> list[Run]:
    """``evalpipe import aisbench DIR``: one run per (model, dataset); notes go to stderr."""
    from evalpipe.importers.aisbench.build import import_aisbench as _import
    from evalpipe.store import open_store

    with open_store(store) as s:
        return _import(
            s,
            path,
            layout=layout,
            model_path=model_path,
            datasets=datasets,
            log=lambda m: print(m, file=sys.stderr),
        )
