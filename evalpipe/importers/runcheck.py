"""An imported run held to what a native run guarantees, and its identity.

A native run's layout went through the layout grammar and vLLM's rules, and its counts are
what its samples give; an imported one is checked the same way, whatever its status. Its
identity is its content: the id a file without ``run_id`` is stored under is a hash of it, and
importing the same file again compares content, leaving out what only the import's clock
supplied (``started_at`` and ``finished_at`` when the file has none), so a second import, or
eight at once, finds the first one's run instead of a different one.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.layout import LayoutError, parse, validate
from evalpipe.records import (
    Run,
    Sample,
    canonical_json,
    config_to_dict,
    sha256_text,
    summary_of,
)

UNKNOWN_PROMPT = "unknown"
CLOCK_FIELDS = ("started_at", "finished_at")
"""The :class:`Run` fields an import may fill from its clock when the file leaves them out."""


def canonical_layout(text: str, where: str) -> str:
    """``text`` as a native run stores a layout (``DCP2tp2dp2`` → ``dp2tp2dcp2``), once it
    parses and keeps vLLM's own rules; else an :class:`EvalpipeError` naming ``where``."""
    try:
        layout = parse(text)
    except LayoutError as exc:
        raise EvalpipeError(f"{where}: run 'layout': {exc}") from None
    problems = validate(layout)  # vLLM's rules only: the platform the run had is not known
    if problems:
        raise EvalpipeError(f"{where}: run 'layout' {layout.canonical}: {'; '.join(problems)}")
    return layout.canonical


def summary(given: Mapping[str, Any], samples: Sequence[Sample], where: str) -> dict[str, Any]:
    """The run's counts and accuracies from ``samples``, after checking that those the file
    states (``given``) match them, whatever the run's status. (``n_items``, the items the run
    set out to answer, is not among them: it is fixed when a run starts.)"""
    computed = summary_of(samples)
    for key, value in computed.items():
        if key in given and not _same(given[key], value):
            raise EvalpipeError(
                f"{where}: run {key} is {given[key]!r} but the samples give {value!r}; fix "
                "the file, or leave the summary fields out to have them computed"
            )
    return computed


def _same(stated: Any, computed: Any) -> bool:
    if isinstance(computed, float) and isinstance(stated, (int, float)):
        return not isinstance(stated, bool) and math.isclose(
            stated, computed, rel_tol=1e-9, abs_tol=1e-12
        )
    return bool(stated == computed) and type(stated) is type(computed)


def derived_prompt_hash(samples: Sequence[Sample]) -> str:
    """When every prompt is known: the runner's run-level hash over (item_id, prompt_hash)
    pairs in file order, so an import of the same prompts matches an evalpipe run's."""
    if not samples or any(s.prompt_hash == UNKNOWN_PROMPT for s in samples):
        return UNKNOWN_PROMPT
    return sha256_text("".join(canonical_json([s.item_id, s.prompt_hash]) + "\n" for s in samples))


def content_id(
    run: Run, samples: Sequence[Sample], prompts: Mapping[str, str], clock: Collection[str]
) -> str:
    """The id of a run whose file gives none: a hash of the run (less the ``clock`` fields),
    its samples and prompt texts, after the UTC time of a stated start so ids sort by it
    (``20261128-031642-3f9a0c1b2d4e``; ``import-…`` without one)."""
    record = {
        f.name: getattr(run, f.name)
        for f in fields(Run)
        if f.name not in ("run_id", "config", *clock)
    }
    record["config"] = config_to_dict(run.config)
    content = {
        "run": record,
        "samples": sorted(([_sample_record(s) for s in samples]), key=lambda d: str(d["item_id"])),
        "prompts": {h: prompts[h] for h in sorted(prompts)},
    }
    digest = sha256_text(canonical_json(content))[:12]
    stamp = None if "started_at" in clock else _stamp(run.started_at)
    return f"{stamp or 'import'}-{digest}"


def _sample_record(s: Sample) -> dict[str, Any]:
    return {
        f.name: dict(v) if isinstance(v := getattr(s, f.name), Mapping) else v
        for f in fields(Sample)
        if f.name != "run_id"
    }


def _stamp(text: str) -> str | None:
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:  # "unknown"
        return None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y%m%d-%H%M%S")


def same_run(stored: Run, imported: Run, clock: Collection[str]) -> bool:
    """Whether ``stored`` is ``imported``, but for the ``clock`` fields the import filled."""
    return stored == imported.with_(**{f: getattr(stored, f) for f in clock})
