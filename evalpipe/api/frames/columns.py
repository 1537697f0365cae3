"""The columns of every frame and their dtypes: the documented contract (README "Notebooks"),
only ever added to; and the one place pandas is imported, lazily, with the extra to install.

Dtypes are pandas' nullable ones where a value can be missing, named as ``df.dtypes`` prints
them on pandas 2 and 3 alike: ``string`` (missing: ``<NA>``), ``Int64``, ``boolean``; counts
that are always there are ``int64``, measurements ``float64`` (missing: NaN), flags ``bool``
and times ``datetime64[ns, UTC]`` (a stored time that is not ISO 8601, e.g. an import's
``unknown``, is NaT). Maps and lists (engine arguments, tags, extracted answers) are their
JSON text, so CSV and parquet hold them the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from evalpipe.errors import EvalpipeError

if TYPE_CHECKING:
    # What every reader returns; pandas ships no types, so to mypy it is Any.
    from pandas import DataFrame as DataFrame

TEXT, COUNT, INT, REAL, FLAG, VERDICT = "string", "int64", "Int64", "float64", "bool", "boolean"
TIME = "datetime64[ns, UTC]"

FRAMES_EXTRA = "pip install 'evalpipe[frames]'"
PARQUET_EXTRA = "pip install 'evalpipe[parquet]'"

RUN_COLUMNS: Mapping[str, str] = {
    "run_id": TEXT,
    "started_at": TIME,
    "finished_at": TIME,
    "status": TEXT,
    "model": TEXT,
    "model_fingerprint": TEXT,
    "task": TEXT,
    "task_version": TEXT,
    "layout": TEXT,
    "shard_period": INT,
    "platform": TEXT,
    "engine_kind": TEXT,
    "engine_args": TEXT,
    "sampling": TEXT,
    "seed": COUNT,
    "limit": INT,
    "concurrency": COUNT,
    "repeat_index": COUNT,
    "request_order": TEXT,
    "fault": TEXT,
    "prompt_hash": TEXT,
    "data_source": TEXT,
    "data_sha256": TEXT,
    "engine_versions": TEXT,
    "vllm_version": TEXT,
    "evalpipe_version": TEXT,
    "config_hash": TEXT,
    "tags": TEXT,
    "n_items": COUNT,
    "n_samples": COUNT,
    "n_correct": COUNT,
    "n_correct_flexible": COUNT,
    "n_errors": COUNT,
    "accuracy": REAL,
    "accuracy_flexible": REAL,
    "output_tokens": COUNT,
    "duration_s": REAL,
    "throughput_tok_s": REAL,
    "message": TEXT,
}
"""One row per run, newest first."""

SAMPLE_COLUMNS: Mapping[str, str] = {
    "run_id": TEXT,
    "item_id": TEXT,
    "ok": FLAG,
    "correct": VERDICT,
    "correct_by": TEXT,
    "target": TEXT,
    "extracted": TEXT,
    "output": TEXT,
    "prompt_hash": TEXT,
    "prompt_tokens": INT,
    "output_tokens": INT,
    "finish_reason": TEXT,
    "latency_s": REAL,
    "error": TEXT,
    "completed_at": TIME,
    "meta": TEXT,
}
"""One row per item per run: runs as in the runs frame, items in dataset order. ``ok``: the
engine answered; ``correct`` is ``<NA>`` for an infrastructure error (never a wrong answer)."""

PAIR_COLUMNS: Mapping[str, str] = {
    "run_id": TEXT,
    "baseline_id": TEXT,
    "item_id": TEXT,
    "target": TEXT,
    "run_correct": FLAG,
    "baseline_correct": FLAG,
    "flip": TEXT,
    "run_extracted": TEXT,
    "baseline_extracted": TEXT,
    "run_output": TEXT,
    "baseline_output": TEXT,
    "same_output": FLAG,
    "first_difference": INT,
    "prompt_tokens": INT,
    "shard_period": INT,
    "boundary": INT,
    "boundary_offset": INT,
    "near_boundary": VERDICT,
}
"""One row per item the comparison scores (both sides answered), in dataset order. ``flip``:
``correct_to_wrong`` / ``wrong_to_correct`` (baseline → run) or ``<NA>``; ``first_difference``
the first differing character of the outputs (``<NA>``: identical); ``boundary`` the nearest
shard boundary ``k·period`` (k ≥ 1) to the prompt's length and ``boundary_offset`` the signed
distance to it, ``near_boundary`` within 16 tokens (``<NA>`` without a shard period)."""

TOKEN_COLUMNS: Mapping[str, str] = {
    "run_id": TEXT,
    "baseline_id": TEXT,
    "path": TEXT,
    "item_id": TEXT,
    "position": COUNT,
    "token_index": COUNT,
    "residue": INT,
    "boundary_offset": INT,
    "near_boundary": VERDICT,
    "kl": REAL,
    "abs_dlogprob": REAL,
    "top1_agree": FLAG,
    "divergent": FLAG,
}
"""One row per compared token position of a pair, per path (``decode``, then ``forced``),
items in order. ``position`` counts the whole sequence (prompt tokens + ``token_index``), as
shard boundaries do; ``residue`` is ``position mod`` the shard period; ``kl`` is KL(baseline ‖
run) in nats; ``divergent`` marks the decode position where the two generations part."""


def pandas() -> Any:
    """The pandas module, or an :class:`EvalpipeError` naming the extra that installs it."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise EvalpipeError(f"DataFrames need pandas ({exc}): {FRAMES_EXTRA}") from exc
    return pd


def frame(schema: Mapping[str, str], columns: Mapping[str, Any] | None = None) -> DataFrame:
    """A DataFrame of ``columns`` (name → values) with exactly ``schema``'s columns and
    dtypes, in its order; no ``columns``: the empty frame. Times are parsed from ISO 8601."""
    pd = pandas()
    if columns is not None and set(columns) != set(schema):
        raise ValueError(f"columns {sorted(set(columns) ^ set(schema))} do not match the schema")
    data = {}
    for name, dtype in schema.items():
        values = columns[name] if columns is not None else []
        if dtype == TIME:
            text = pd.Series(values, dtype=object)
            parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
            data[name] = parsed.astype(TIME)
        else:
            data[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data)
