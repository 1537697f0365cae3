"""Writing a run as exchange-format JSONL (:mod:`evalpipe.importers.jsonl` reads it): the run
line, one line per sample, the trace lines (:mod:`evalpipe.importers.tracelines`) and the end
line (:mod:`evalpipe.importers.endline`), every field evalpipe knows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import IO, TYPE_CHECKING, Any

from evalpipe import __version__
from evalpipe.importers import endline, tracelines
from evalpipe.importers.lines import json_line
from evalpipe.records import EXCHANGE_VERSION, Run, Sample, config_to_dict, summary_of

if TYPE_CHECKING:
    from evalpipe.store import Store


def run_to_dict(run: Run) -> dict[str, Any]:
    """The run as one flat JSON object: id, config, config hash, outcome, versions."""
    out: dict[str, Any] = {"run_id": run.run_id, **config_to_dict(run.config)}
    out["config_hash"] = run.config.config_hash()
    for f in fields(Run):
        if f.name not in ("run_id", "config"):
            out[f.name] = getattr(run, f.name)
    out["tags"] = list(run.tags)
    out["provenance"] = dict(run.provenance)
    out["schema_version"] = EXCHANGE_VERSION
    out["evalpipe_version"] = __version__
    return out


def sample_to_dict(sample: Sample, prompt: str | None = None) -> dict[str, Any]:
    """One sample line: every :class:`Sample` field but ``run_id``, plus the prompt text."""
    out: dict[str, Any] = {"item_id": sample.item_id, "prompt_hash": sample.prompt_hash}
    out["prompt"] = prompt
    for f in fields(Sample):
        if f.name not in ("run_id", "item_id", "prompt_hash"):
            value = getattr(sample, f.name)
            out[f.name] = dict(value) if isinstance(value, Mapping) else value
    return out


def export_run(store: Store, run_id: str, out: IO[str]) -> int:
    """Write run ``run_id`` (id or unique prefix) as JSONL to ``out``: the run, its samples,
    token traces and the end line; return the sample count. The counts written are the
    samples' (a running run's record has those of when it last stopped): the file imports."""
    run = store.get_run(run_id)
    found = store.samples(run.run_id)
    texts = store.get_prompts(s.prompt_hash for s in found)
    summed = endline.Summed(out)
    summed.write(json_line({"run": run_to_dict(run.with_(**summary_of(found)))}))
    for s in found:
        summed.write(json_line(sample_to_dict(s, texts.get(s.prompt_hash))))
    n = tracelines.write_trace_lines(store, run.run_id, {s.item_id: s for s in found}, summed)
    out.write(endline.end_line(len(found), n, summed.sha.hexdigest()))
    return len(found)
