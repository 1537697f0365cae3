"""Stored runs: list, show, export and import them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from evalpipe.errors import EvalpipeError
from evalpipe.records import Run


def run_to_dict(run: Run) -> dict[str, Any]:
    from evalpipe.importers.jsonl import run_to_dict as _to_dict

    return _to_dict(run)


def format_run_summary(run: Run, store: str | None) -> str:
    from evalpipe.store import describe_store

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    c = run.config
    return (
        f"run {run.run_id}: {c.task} v{c.task_version} on {c.layout} ({c.platform}), "
        f"model {c.model}\n"
        f"  accuracy {pct(run.accuracy)} strict ({run.n_correct}/{run.n_samples - run.n_errors})"
        f", {pct(run.accuracy_flexible)} flexible; infrastructure errors {run.n_errors}\n"
        f"  {run.duration_s or 0:.1f}s, {run.throughput_tok_s or 0:.1f} output tok/s\n"
        f"  stored in {describe_store(store)} (evalpipe runs show {run.run_id})"
    )


def list_runs(
    store: str | None,
    task: str | None = None,
    layout: str | None = None,
    limit: int | None = 50,
) -> list[Run]:
    from evalpipe.store import open_store

    with open_store(store) as s:
        return s.list_runs(task=task, layout=layout, limit=limit)


def get_run(store: str | None, run_id: str) -> Run:
    from evalpipe.store import open_store

    with open_store(store) as s:
        return s.get_run(run_id)


def format_runs_table(runs: Sequence[Run]) -> str:
    if not runs:
        return "no runs stored yet; start one with `evalpipe run gsm8k --layout tp1 --limit 20`"
    header = (
        f"{'run':24} {'task':10} {'layout':12} {'status':9} {'n':>5} {'acc':>7} {'err':>4}  model"
    )
    rows = [header]
    for r in runs:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.1%}"
        rows.append(
            f"{r.run_id:24} {r.config.task:10} {r.config.layout:12} {r.status:9} "
            f"{r.n_samples:>5} {acc:>7} {r.n_errors:>4}  {Path(r.config.model).name}"
        )
    return "\n".join(rows)


def export_run(store: str | None, run_id: str, out: TextIO) -> None:
    from evalpipe.importers.jsonl import export_run as _export
    from evalpipe.store import open_store

    with open_store(store) as s:
        _export(s, s.get_run(run_id).run_id, out)


def import_run(store: str | None, path: str) -> str:
    from evalpipe.importers.jsonl import import_run as _import
    from evalpipe.store import open_store

    try:
        source = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise EvalpipeError(f"cannot read {path}: {exc.strerror}") from exc
    with source, open_store(store) as s:
        return _import(s, source)
