"""Records ↔ table rows; pure functions (no database)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from evalpipe.errors import StoreError
from evalpipe.records import (
    Run,
    Sample,
    canonical_json,
    config_from_dict,
    config_to_dict,
)

# Numeric ids longer than this would overflow BIGINT; they sort as text instead.
_MAX_ORDER_DIGITS = 18


def run_to_row(run: Run) -> dict[str, Any]:
    c = run.config
    return {
        "run_id": run.run_id,
        "config_hash": c.config_hash(),
        "model": c.model,
        "model_fingerprint": c.model_fingerprint,
        "task": c.task,
        "task_version": c.task_version,
        "prompt_hash": c.prompt_hash,
        "data_source": c.data_source,
        "data_sha256": c.data_sha256,
        "layout": c.layout,
        "platform": c.platform,
        "engine_kind": c.engine_kind,
        "config": canonical_json(config_to_dict(c)),
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "n_items": run.n_items,
        "n_samples": run.n_samples,
        "n_correct": run.n_correct,
        "n_correct_flexible": run.n_correct_flexible,
        "n_errors": run.n_errors,
        "accuracy": run.accuracy,
        "accuracy_flexible": run.accuracy_flexible,
        "duration_s": run.duration_s,
        "output_tokens": run.output_tokens,
        "throughput_tok_s": run.throughput_tok_s,
        "tags": _dumps(list(run.tags)),
        "provenance": _dumps(dict(run.provenance)),
        "message": run.message,
    }


def run_from_row(row: Mapping[Any, Any]) -> Run:
    try:
        config = config_from_dict(json.loads(row["config"]))
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"run {row['run_id']} is damaged in the store: its stored configuration does not "
            f"read ({exc}), so the store was changed outside evalpipe; restore it from a "
            "backup, or copy the other runs to a new store (`evalpipe store copy STORE NEW "
            "--run ID`)"
        ) from exc
    return Run(
        run_id=row["run_id"],
        config=config,
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        n_items=row["n_items"],
        n_samples=row["n_samples"],
        n_correct=row["n_correct"],
        n_correct_flexible=row["n_correct_flexible"],
        n_errors=row["n_errors"],
        accuracy=row["accuracy"],
        accuracy_flexible=row["accuracy_flexible"],
        duration_s=row["duration_s"],
        output_tokens=row["output_tokens"],
        throughput_tok_s=row["throughput_tok_s"],
        tags=tuple(json.loads(row["tags"])),
        provenance=json.loads(row["provenance"]),
        message=row["message"],
    )


def item_order(item_id: str) -> int | None:
    """The id as a number when it is one (dataset order), else ``None`` (text order)."""
    if item_id.isascii() and item_id.isdigit() and len(item_id) <= _MAX_ORDER_DIGITS:
        return int(item_id)
    return None


def _text(value: str | None) -> str | None:
    """Text as both stores can hold it: PostgreSQL refuses NUL (U+0000) in text, SQLite keeps
    it; a model output may contain one. It becomes U+FFFD on both, so a run reads the same
    from either store (and exports, which refuse NUL, stay importable)."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def sample_to_row(s: Sample) -> dict[str, Any]:
    return {
        "run_id": s.run_id,
        "item_id": s.item_id,
        "item_order": item_order(s.item_id),
        "prompt_hash": s.prompt_hash,
        "output": _text(s.output),
        "target": _text(s.target),
        "correct": s.correct,
        "extracted": _dumps(dict(s.extracted)),
        "correct_by": _dumps(dict(s.correct_by)),
        "prompt_tokens": s.prompt_tokens,
        "output_tokens": s.output_tokens,
        "finish_reason": _text(s.finish_reason),
        "latency_s": s.latency_s,
        "error": _text(s.error),
        "completed_at": s.completed_at,
        "meta": _dumps(dict(s.meta)),
    }


def samples_from_rows(rows: Sequence[Mapping[Any, Any]]) -> list[Sample]:
    """Samples from ``samples`` rows.

    The JSON maps of all rows are parsed in one ``json.loads`` call: per-call overhead, not
    parsing, dominated reading a full run (7 ms vs 1 ms for 1319 samples).
    """
    maps = _maps(rows)
    out = []
    for i, row in enumerate(rows):
        correct = row["correct"]
        out.append(
            Sample(
                run_id=row["run_id"],
                item_id=row["item_id"],
                prompt_hash=row["prompt_hash"],
                output=row["output"],
                target=row["target"],
                correct=None if correct is None else bool(correct),
                extracted=maps[3 * i],
                correct_by=maps[3 * i + 1],
                prompt_tokens=row["prompt_tokens"],
                output_tokens=row["output_tokens"],
                finish_reason=row["finish_reason"],
                latency_s=row["latency_s"],
                error=row["error"],
                completed_at=row["completed_at"],
                meta=maps[3 * i + 2],
            )
        )
    return out


_MAP_COLUMNS = ("extracted", "correct_by", "meta")


def _maps(rows: Sequence[Mapping[Any, Any]]) -> list[dict[str, Any]]:
    """The rows' JSON maps, three a row. A row edited outside evalpipe can hold text that
    still parses inside the joined list (``{}, {"a": 1}`` is two values) and would shift every
    later row's maps: anything but exactly three objects a row is read again row by row, and
    the damaged row is named."""
    texts = ",".join(r[c] for r in rows for c in _MAP_COLUMNS)
    try:
        maps = json.loads(f"[{texts}]")
    except ValueError:
        maps = None
    if (
        isinstance(maps, list)
        and len(maps) == 3 * len(rows)
        and all(isinstance(m, dict) for m in maps)
    ):
        return maps
    out: list[dict[str, Any]] = []
    for row in rows:
        for column in _MAP_COLUMNS:
            try:
                value = json.loads(row[column])
            except (TypeError, ValueError):
                value = None
            if not isinstance(value, dict):
                raise StoreError(
                    f"run {row['run_id']} is damaged in the store: sample {row['item_id']!r} "
                    f"has a '{column}' column that is not a JSON object, so the store was changed "
                    "outside evalpipe; restore it from a backup, or copy its intact runs to a "
                    "new store (`evalpipe store copy STORE NEW --run ID`)"
                )
            out.append(value)
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
