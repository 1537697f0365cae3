"""Load a task's items from one data source, with the provenance that makes them reproducible.

Sources, in order of precedence: an explicit file (``--data PATH``), the task's file inside a
data directory (``EVALPIPE_DATA_DIR``), then the task's own default (a Hugging Face dataset
through ``datasets``, or a registered generator). Every source yields the same thing: rows in
source order whose 0-based index is the item id, a ``source`` string and the sha256 of the
data (file bytes, or the rows as JSON lines for ``hf:`` and generated data).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.paths import cached_data_dir
from evalpipe.tasks import generators
from evalpipe.tasks.scoring import normalize_target
from evalpipe.tasks.spec import Dataset, Item, TaskSpec

DATA_DIR_ENV = "EVALPIPE_DATA_DIR"

Row = tuple[str, Any]
"""A raw record and where it came from ("path:line", "path[3]", "hf:… row 3")."""


def _as_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected text or a number, got {type(value).__name__}")
    return str(value)


def _gsm8k_final(value: Any) -> str:
    # GSM8K answers are a worked solution ending "#### N"; only N is the target.
    text = _as_text(value)
    if "####" not in text:
        raise ValueError("the answer has no '#### N' final-answer line")
    return text.rsplit("####", 1)[1].strip()


TARGET_TRANSFORMS: dict[str, Callable[[Any], str]] = {
    "none": _as_text,
    "gsm8k_final": _gsm8k_final,
}
"""Named target transforms a task file may use (no code in YAML, so this list is closed)."""


def read_rows(path: Path) -> tuple[list[Row], str]:
    """Records of a ``.jsonl`` or ``.json`` (list) file and the sha256 of its bytes.

    Raises :class:`EvalpipeError` naming the file (and line) for a missing file, an
    unsupported type or bad JSON.
    """
    if not path.is_file():
        raise EvalpipeError(f"data file {path} does not exist (or is not a file)")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalpipeError(f"{path}: not UTF-8 text ({exc})") from exc
    if path.suffix == ".jsonl":
        rows: list[Row] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue  # a trailing blank line is common; ids count records, not lines
            try:
                rows.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise EvalpipeError(f"{path}:{lineno}: bad JSON line: {exc.msg}") from exc
        return rows, digest
    if path.suffix == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalpipeError(f"{path}:{exc.lineno}: bad JSON: {exc.msg}") from exc
        if not isinstance(value, list):
            raise EvalpipeError(f"{path}: a .json data file must hold a list of records")
        return [(f"{path}[{i}]", v) for i, v in enumerate(value)], digest
    raise EvalpipeError(f"{path}: unsupported data file type (use .jsonl or a .json list)")


def jsonl_sha256(records: Sequence[Any]) -> str:
    """sha256 of records as JSON lines (``json.dumps`` defaults + newline).

    For GSM8K's test split this reproduces the upstream file's sha256, so an ``hf:`` run and
    a file run of the same data record the same hash.
    """
    h = hashlib.sha256()
    for record in records:
        h.update((json.dumps(record) + "\n").encode("utf-8"))
    return h.hexdigest()


def load_dataset(
    task: TaskSpec,
    data_path: str | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
    *,
    generator_context: Mapping[str, Any] | None = None,
) -> Dataset:
    """Load ``task``'s items: ``data_path`` > ``data_dir`` (default env EVALPIPE_DATA_DIR)
    > the task's default source. ``limit`` keeps the first N items; ids never change.

    ``generator_context`` carries run-dependent inputs (e.g. a tokenizer) for generators
    that declare them. Raises :class:`EvalpipeError` for any unusable source or record.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise EvalpipeError(f"--limit must be a positive integer, not {limit!r}")
    spec = task.data
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_path:
        path = Path(data_path).expanduser().resolve()
        rows, digest = read_rows(path)
        source = f"file:{path}"
    elif data_dir and spec.data_dir_file:
        path = (Path(data_dir).expanduser() / spec.data_dir_file).resolve()
        if not path.is_file():
            raise EvalpipeError(
                f"task {task.name}: {spec.data_dir_file} is not in the data directory "
                f"{data_dir} (from --data-dir or {DATA_DIR_ENV}); add it there, or pass "
                "--data PATH"
            )
        rows, digest = read_rows(path)
        source = f"file:{path}"
    elif spec.data_dir_file and (cached_data_dir() / spec.data_dir_file).is_file():
        # Built by `evalpipe data fetch` from a package registry: preferred over a hub.
        path = (cached_data_dir() / spec.data_dir_file).resolve()
        rows, digest = read_rows(path)
        source = f"file:{path}"
    elif spec.generator:
        gen, records = generators.generate(spec.generator, spec.generator_params, generator_context)
        source = generators.source_id(gen, spec.generator_params)
        rows = [(f"{source} row {i}", r) for i, r in enumerate(records)]
        digest = jsonl_sha256(records)
    elif spec.source and spec.source.startswith("hf:"):
        rows, digest, source = _load_hf(task)
    else:
        raise EvalpipeError(
            f"task {task.name} has no default data source; pass --data PATH or set "
            f"{DATA_DIR_ENV} to a directory holding {spec.data_dir_file or 'its data file'}"
        )
    if not rows:
        raise EvalpipeError(f"task {task.name}: the data source {source} has no records")
    chosen = rows if limit is None else rows[:limit]
    items = tuple(_item(task, str(i), where, row) for i, (where, row) in enumerate(chosen))
    return Dataset(items=items, source=source, sha256=digest, n_total=len(rows))


def _load_hf(task: TaskSpec) -> tuple[list[Row], str, str]:
    spec = task.data
    assert spec.source is not None
    repo = spec.source.removeprefix("hf:")
    source = f"{spec.source}@{spec.hf_config or 'default'}/{spec.hf_split}"
    if spec.hf_revision:
        source += f"?revision={spec.hf_revision}"
    what_to_do = (
        f"pass --data PATH or set {DATA_DIR_ENV} to a directory holding "
        f"{spec.data_dir_file or 'the data file'}"
    )
    try:
        import datasets  # lazy: a heavy optional dependency, needed only for hf: sources
    except ImportError:
        raise EvalpipeError(
            f"task {task.name} reads {spec.source} through the `datasets` package, which is "
            f"not installed (pip install 'evalpipe[hf]'); or {what_to_do}"
        ) from None
    try:
        ds = datasets.load_dataset(
            repo, spec.hf_config, split=spec.hf_split, revision=spec.hf_revision
        )
        records = [dict(r) for r in ds]
    except Exception as exc:  # datasets raises many types (offline, auth, not found)
        raise EvalpipeError(
            f"could not load {source} through `datasets` ({type(exc).__name__}: {exc}); "
            f"if offline, {what_to_do}"
        ) from exc
    rows = [(f"{source} row {i}", r) for i, r in enumerate(records)]
    return rows, jsonl_sha256(records), source


def _item(task: TaskSpec, item_id: str, where: str, row: Any) -> Item:
    if not isinstance(row, dict):
        raise EvalpipeError(f"{where}: a record must be a JSON object")
    spec = task.data
    fields: dict[str, Any] = {}
    for var, column in spec.fields.items():
        if column not in row:
            raise EvalpipeError(
                f"{where}: no field {column!r} (task {task.name} maps {var} <- {column}; "
                f"the record has {', '.join(sorted(row))})"
            )
        if var != "target":
            fields[var] = row[column]
    try:
        target = TARGET_TRANSFORMS[spec.target_transform](row[spec.fields["target"]])
    except ValueError as exc:
        raise EvalpipeError(f"{where}: bad target: {exc}") from exc
    if normalize_target(task.metric, target) is None:
        raise EvalpipeError(f"{where}: target {target!r} is not a number (metric {task.metric})")
    return Item(item_id=item_id, fields=fields, target=target)
