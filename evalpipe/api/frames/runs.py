"""Runs and samples as DataFrames (columns: :mod:`evalpipe.api.frames.columns`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evalpipe.api.frames.columns import RUN_COLUMNS, SAMPLE_COLUMNS, frame, pandas
from evalpipe.api.frames.select import Filters, Location, Names, Selection, reading, select_runs
from evalpipe.records import Run, canonical_json

if TYPE_CHECKING:
    from typing import Unpack

    from evalpipe.api.frames.columns import DataFrame

_SAMPLE_FIELDS = tuple(c for c in SAMPLE_COLUMNS if c != "run_id")


def runs_frame(
    store: Location = None,
    run_ids: Names = None,
    **filters: Unpack[Filters],
) -> DataFrame:
    """One row per stored run, newest first: configuration, versions, tags, accuracy and
    status (columns and dtypes: :data:`~evalpipe.api.frames.columns.RUN_COLUMNS`).

    ``run_ids`` (ids or unique prefixes) and the ``filters`` (``tags``, ``model``, ``task``,
    ``layout``, ``status``, ``since``, ``until``) select runs as
    :class:`~evalpipe.api.frames.select.Selection` says; every filter given must match.
    An unknown run id is an error that names it; filters that match nothing give an empty
    frame with the columns. One query (two with run ids), whatever the number of runs.

    Example::

        runs = runs_frame("evalpipe.db", task="gsm8k", layout=["dp2tp8dcp8", "dp2tp8"],
                          since="2026-11-01")
        runs.groupby("layout").accuracy.mean()
    """
    selection = Selection.of(run_ids, **filters)
    pandas()  # before the store is read: a missing extra says so first
    with reading(store) as s:
        runs = select_runs(s, selection)
    return run_table(runs)


def run_table(runs: Sequence[Run]) -> DataFrame:
    """The runs frame of ``runs``, in their order."""
    rows = [_run_row(r) for r in runs]
    return frame(RUN_COLUMNS, {name: [row[name] for row in rows] for name in RUN_COLUMNS})


def _run_row(run: Run) -> dict[str, Any]:
    from evalpipe.compare.runs import shard_period_of

    c = run.config

    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return {
        "run_id": run.run_id,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "status": run.status,
        "model": c.model,
        "model_fingerprint": c.model_fingerprint,
        "task": c.task,
        "task_version": c.task_version,
        "layout": c.layout,
        "shard_period": shard_period_of(run).period,
        "platform": c.platform,
        "engine_kind": c.engine_kind,
        "engine_args": canonical_json(dict(c.engine_args)),
        "sampling": canonical_json(dict(c.sampling)),
        "seed": c.seed,
        "limit": c.limit,
        "concurrency": c.concurrency,
        "repeat_index": c.repeat_index,
        "request_order": c.request_order,
        "fault": c.fault,
        "prompt_hash": c.prompt_hash,
        "data_source": c.data_source,
        "data_sha256": c.data_sha256,
        "engine_versions": canonical_json(dict(c.engine_versions)),
        "vllm_version": text(c.engine_versions.get("vllm")),
        "evalpipe_version": text(run.provenance.get("evalpipe_version")),
        "config_hash": c.config_hash(),
        "tags": json.dumps(list(run.tags), ensure_ascii=False),
        **{
            name: getattr(run, name)
            for name in (
                *("n_items", "n_samples", "n_correct", "n_correct_flexible", "n_errors"),
                *("accuracy", "accuracy_flexible", "output_tokens", "duration_s"),
                "throughput_tok_s",
            )
        },
        "message": run.message,
    }


def samples_frame(
    store: Location = None,
    run_ids: Names = None,
    **filters: Unpack[Filters],
) -> DataFrame:
    """One row per item per selected run (columns and dtypes:
    :data:`~evalpipe.api.frames.columns.SAMPLE_COLUMNS`): runs newest first, each run's
    items in dataset order. Runs are selected as in :func:`runs_frame`; the samples of all
    of them are read in one query per 500 runs.

    Example::

        runs = runs_frame("evalpipe.db", tags="rc1")
        samples = samples_frame("evalpipe.db", runs.run_id).merge(runs, on="run_id")
        samples.groupby("layout").correct.mean()
    """
    from evalpipe.store.answers import read_columns

    selection = Selection.of(run_ids, **filters)
    pd = pandas()
    with reading(store) as s:
        runs = select_runs(s, selection)
        columns = read_columns(s, [r.run_id for r in runs], ("item_order", *_SAMPLE_FIELDS),
                               parse_json=False)  # fmt: skip
    order = columns.pop("item_order")
    df = frame(SAMPLE_COLUMNS, columns)
    # An errored sample has no verdict and no output: <NA>, never a wrong answer.
    df.loc[~df.ok, ["correct", "output"]] = pd.NA
    rank = {r.run_id: i for i, r in enumerate(runs)}
    keys = pd.DataFrame(
        {
            "run": df.run_id.map(rank).astype("int64"),
            "text": pd.Series(order, dtype="Int64").isna(),
            "order": pd.Series(order, dtype="Int64").fillna(0),
            "item": df.item_id,
        }
    )
    at = keys.sort_values(["run", "text", "order", "item"], kind="stable").index
    return df.loc[at].reset_index(drop=True)
