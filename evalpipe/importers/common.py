"""Storing an imported run whose id is a hash of its content: idempotent, shared by importers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.records import Run, RunConfig, Sample, config_to_dict
from evalpipe.store import Store


def store_imported(
    store: Store, run: Run, samples: Sequence[Sample], prompts: Mapping[str, str]
) -> bool:
    """Store ``run`` with its samples; ``False`` when the identical run was already there.

    Raises :class:`EvalpipeError` when a run with that id holds different content.
    """
    existing = store.find_run(run.run_id)
    if existing is None:
        try:
            store.create_run(run, samples, dict(prompts))
            return True
        except EvalpipeError:
            existing = store.find_run(run.run_id)  # another importer may have stored it meanwhile
            if existing is None:
                raise
    stored = {s.item_id: s for s in store.samples(run.run_id)}
    if existing == run and stored == {s.item_id: s for s in samples}:
        return False
    raise EvalpipeError(
        f"run {run.run_id} is already in {store.name} with different content, though its id is "
        "a hash of the content (was the store edited?); import into another store (--store)"
    )


def sample_key(s: Sample) -> list[Any]:
    """The fields of an imported sample that its run id hashes (what the harness produced)."""
    return [
        s.item_id,
        s.prompt_hash,
        s.output,
        s.target,
        s.correct,
        dict(s.extracted),
        dict(s.correct_by),
        s.error,
        dict(s.meta),
    ]


def content_config(config: RunConfig) -> dict[str, Any]:
    """``config`` as the content an imported run's id hashes.

    Ids were first computed when engine arguments were a list of flags, and an importer's run
    had none: an empty mapping still hashes as that empty list, so importing a folder again
    after the change finds the run stored before instead of storing a second copy.
    """
    out = config_to_dict(config)
    if not out["engine_args"]:
        out["engine_args"] = []
    return out
