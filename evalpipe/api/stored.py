"""Stored runs: list, show, export and import them."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from evalpipe.errors import EvalpipeError
from evalpipe.records import Run
from evalpipe.report.textfmt import safe


def run_to_dict(run: Run) -> dict[str, Any]:
    from evalpipe.importers.jsonl import run_to_dict as _to_dict

    return _to_dict(run)


def format_run_summary(run: Run, store: str | None, details: bool = False) -> str:
    """A run for the terminal: what ran, its accuracy, its speed and where it is stored;
    ``details`` (``evalpipe runs show``) adds when, how and the commands that go further.
    Stored text is shown with control characters escaped (an imported model name is
    untrusted)."""
    from evalpipe.store import describe_store
    from evalpipe.store.connect import resolve

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    c, rid = run.config, safe(run.run_id)
    head = [
        f"run {rid}: {safe(c.task)} v{safe(c.task_version)} on {safe(c.layout_name)} "
        f"({safe(c.platform)}), model {safe(c.model)}",
        f"  accuracy {pct(run.accuracy)} strict ({run.n_correct}/{run.n_samples - run.n_errors})"
        f", {pct(run.accuracy_flexible)} flexible; infrastructure errors {run.n_errors}",
        f"  {run.duration_s or 0:.1f}s, {run.throughput_tok_s or 0:.1f} output tok/s",
    ]
    flag = resolve(store).flag  # a suggested command finds the store this one used
    if not details:
        shown = f"evalpipe runs show {shlex.quote(rid)}{flag}"
        return "\n".join([*head, f"  stored in {describe_store(store)} ({shown})"])
    return "\n".join([*head, *_details(run, flag), f"  stored in {describe_store(store)}"])


def _details(run: Run, flag: str = "") -> list[str]:
    c, rid = run.config, safe(run.run_id)

    def pairs(values: dict[str, Any]) -> str:
        return safe(" ".join(f"{k}={v}" for k, v in values.items()) or "-", 200)

    lines = [
        f"  status {safe(run.status)}; started {safe(run.started_at)}, finished "
        f"{safe(run.finished_at or '-')}; {run.n_samples} samples of {run.n_items} items",
        f"  model fingerprint {safe(c.model_fingerprint)}; engine {safe(c.engine_kind)} "
        f"{pairs(dict(c.engine_versions))}",
        f"  engine args {pairs(dict(c.engine_args))}",
        f"  sampling {pairs(dict(c.sampling))}; seed {c.seed}; limit {c.limit or 'none'}; "
        f"concurrency {c.concurrency}; repeat {c.repeat_index}",
        f"  data {safe(c.data_source)} (sha256 {safe(c.data_sha256 or '-', 16)}); "
        f"prompt {safe(c.prompt_hash, 16)}; config hash {c.config_hash()}",
    ]
    if run.tags:
        lines.append(f"  tags {safe(', '.join(run.tags))}")
    if run.message:
        lines.append(f"  message {safe(run.message, 300)}")
    q = shlex.quote(rid)  # an imported run's id may hold anything
    lines += [
        f"  every field: evalpipe runs show {q} --json{flag}",
        f"  its samples: evalpipe runs export {q} -o run.jsonl{flag}",
    ]
    if _has_automatic_baseline(run):  # else `compare RUN` has no baseline to look for
        lines.append(f"  against its baseline: evalpipe compare {q}{flag}")
    return lines


def _has_automatic_baseline(run: Run) -> bool:
    from evalpipe.layout import LayoutError, parse

    try:
        return parse(run.config.layout).is_cp or run.config.fault is not None
    except LayoutError:
        return False


def store_inputs(store: str | None) -> list[tuple[str, Path | None]]:
    """The store's files as a command's inputs, for :func:`evalpipe.paths.check_outputs`
    (none for a server)."""
    from evalpipe.paths import store_files
    from evalpipe.store.connect import resolve

    try:
        path = resolve(store).path
    except EvalpipeError:
        return []  # not a store location at all: the command's own open says so, its way
    if path is None:
        return []
    side = [(f"the store's {f.name.removeprefix(path.name)} file", f) for f in store_files(path)]
    return [("the store", path), *side[1:]]


def list_runs(
    store: str | None,
    task: str | None = None,
    layout: str | None = None,
    limit: int | None = 50,
) -> list[Run]:
    from evalpipe.store import open_store

    with open_store(store, create=False, empty_ok=False) as s:
        return s.list_runs(task=task, layout=layout, limit=limit)


def get_run(store: str | None, run_id: str) -> Run:
    from evalpipe.store import open_store

    with open_store(store, create=False, empty_ok=False) as s:
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
            f"{safe(r.run_id):24} {safe(r.config.task):10} {safe(r.config.layout):12} "
            f"{safe(r.status):9} {r.n_samples:>5} {acc:>7} {r.n_errors:>4}  "
            f"{safe(Path(r.config.model).name)}"
            + safe(r.config.layout_name.removeprefix(r.config.layout))
        )
    return "\n".join(rows)


def export_run(store: str | None, run_id: str, out: TextIO | str | Path) -> None:
    """Write run ``run_id`` (id or unique prefix) and its samples as JSONL to ``out``, a
    stream or a file path. A file is replaced only when the export is complete: a run that
    does not exist, a full disk or an interrupt leaves an existing file as it was.

    Example::

        export_run("evalpipe.db", "20261128-065414-3f2a9c", "run.jsonl")
    """
    from evalpipe.importers.jsonl import export_run as _export
    from evalpipe.paths import check_outputs, open_atomic
    from evalpipe.store import open_store

    if isinstance(out, (str, Path)):
        # Before the store is opened: `-o evalpipe.db` must not replace the store it reads.
        check_outputs([("-o", out)], store_inputs(store))
    with open_store(store, create=False, empty_ok=False) as s:
        found = s.get_run(run_id).run_id  # before any file is opened: a typo writes nothing
        if not isinstance(out, (str, Path)):
            _export(s, found, out)
            return
        with open_atomic(out) as stream:
            _export(s, found, stream)


def import_run(store: str | None, path: str) -> str:
    """Import the JSONL run at ``path`` (``-``: standard input) into ``store``; its id."""
    from evalpipe.api.importing import import_jsonl

    return import_jsonl(store, path)
