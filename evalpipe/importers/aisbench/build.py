"""Import an AISBench output folder (``outputs/default/<YYYYMMDD_HHMMSS>``) as evalpipe runs.

AISBench (PyPI ``ais-bench-benchmark``, CLI ``ais_bench``; its files derive from OpenCompass)
runs against an already-serving engine. :func:`read_output` (in
:mod:`evalpipe.importers.aisbench.read`) parses a run folder; :func:`build_runs` turns it into
evalpipe records, one run per (model, dataset), without touching a store;
:func:`import_aisbench` stores them idempotently: the run id is a hash of the content, so
importing a folder twice writes nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalpipe.importers.aisbench import rules
from evalpipe.importers.aisbench.model import AisDataset, AisOutput, AisSample
from evalpipe.importers.aisbench.read import read_output
from evalpipe.importers.common import content_config, sample_key, store_imported
from evalpipe.records import Run, RunConfig, Sample, canonical_json, sha256_text

if TYPE_CHECKING:
    from evalpipe.store import Store

__all__ = [
    "AisDataset",
    "AisOutput",
    "AisSample",
    "ImportedRun",
    "build_runs",
    "import_aisbench",
    "read_output",
]

# vllm_custom_api_chat.py ROLE_MAP: the roles the chat API was actually sent.
_ROLES = {"HUMAN": "user", "BOT": "assistant", "SYSTEM": "system", "TOOL": "tool"}


@dataclass(frozen=True)
class ImportedRun:
    """What :func:`build_runs` makes of one pair: the records to store and a note."""

    run: Run
    samples: tuple[Sample, ...]
    prompts: dict[str, str]
    note: str | None


# --- records --------------------------------------------------------------------------


def build_runs(
    output: AisOutput,
    *,
    layout: str | None,
    model: str | None = None,
    model_path: str | None = None,
    platform: str | None = None,
    engine_versions: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
) -> list[ImportedRun]:
    """The evalpipe runs of a parsed folder, one per (model, dataset) pair; pure.

    ``layout`` is required: AISBench talks to a running server and never knows its parallel
    sizes. ``model`` names the model (default: the config's served name or path);
    ``model_path``, a local copy of the weights, gives a real fingerprint.
    """
    canonical = rules.check_layout(layout, platform)
    built = []
    for pair in output.results:
        built.append(
            _build(output, pair, canonical, model, model_path, platform, engine_versions, tags)
        )
    return built


def _build(
    output: AisOutput,
    pair: AisDataset,
    layout: str,
    model: str | None,
    model_path: str | None,
    platform: str | None,
    engine_versions: Mapping[str, str] | None,
    tags: Sequence[str],
) -> ImportedRun:
    from evalpipe.engine.fingerprint import model_fingerprint
    from evalpipe.records import summary_of

    verdicts, note = rules.verdicts(pair, output.folder)
    ids, id_note = rules.item_ids(pair)
    samples: list[Sample] = []
    prompts: dict[str, str] = {}
    for s, item_id in zip(pair.samples, ids, strict=True):
        text = _prompt_text(s.prompt)
        prompt_hash = sha256_text(text) if text is not None else "unknown"
        if text is not None:
            prompts[prompt_hash] = text
        samples.append(_sample(s, item_id, prompt_hash, verdicts[s.index]))
    cfg = pair.model_cfg
    name = model or _first_text(cfg.get("model"), cfg.get("path")) or pair.model_abbr
    config = RunConfig(
        model=name,
        model_fingerprint=model_fingerprint(model_path) if model_path else f"name:{name}",
        task=f"aisbench:{pair.dataset_abbr}",
        task_version=rules.task_version(pair),
        prompt_hash=_prompts_hash(samples),
        data_source=f"aisbench:{pair.dataset_cfg.get('path') or pair.dataset_abbr}",
        data_sha256=_data_hash(samples),
        layout=layout,
        platform=platform or "unknown",
        engine_kind="import",
        engine_args={},
        sampling=rules.sampling(cfg),
        seed=rules.seed(cfg),
        limit=rules.limit(output.config),
        concurrency=rules.concurrency(cfg),
        engine_versions=dict(engine_versions or {}),
    )
    provenance = _provenance(output, pair, note, id_note)
    notes = " ".join(n for n in (note, id_note, rules.failure_note(pair)) if n) or None
    started = output.started or "unknown"
    summary = summary_of(samples)
    run = Run(
        run_id="",
        config=config,
        status="finished",
        started_at=started,
        finished_at=started,
        n_items=len(samples),
        tags=tuple(tags),
        provenance=provenance,
        message=notes,
        **summary,
    )
    digest = sha256_text(
        canonical_json(
            {
                "run": {**content_config(config), **_run_fields(run)},
                "samples": [sample_key(s) for s in samples],
            }
        )
    )
    stamp = (output.started or "").replace("-", "").replace(":", "").replace("T", "-")
    run_id = f"{stamp or 'aisbench'}-{digest[:12]}"
    return ImportedRun(
        run.with_(run_id=run_id),
        tuple(replace(s, run_id=run_id) for s in samples),
        prompts,
        notes,
    )


def _sample(s: AisSample, item_id: str, prompt_hash: str, verdict: rules.Verdict) -> Sample:
    meta: dict[str, Any] = {"aisbench_id": s.index}
    if s.uuid:
        meta["uuid"] = s.uuid
    if s.gold is not None and s.gold != verdict.reference:
        meta["gold"] = s.gold
    if s.error is not None:
        return Sample(
            "", item_id, prompt_hash, None, verdict.reference, None, error=s.error, meta=meta
        )
    return Sample(
        run_id="",
        item_id=item_id,
        prompt_hash=prompt_hash,
        output=s.prediction,
        target=verdict.reference,
        correct=verdict.correct,
        extracted=verdict.extracted,
        correct_by=verdict.correct_by,
        meta=meta,
    )


def _prompt_text(prompt: Any) -> str | None:
    """The prompt as sent: text, or chat messages (AISBench roles → API roles) as JSON."""
    if isinstance(prompt, str):
        return prompt or None
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        messages = []
        for m in prompt:
            msg = {"role": _ROLES.get(str(m.get("role", "")), m.get("role"))}
            msg["content"] = m.get("prompt", m.get("content"))
            msg.update({k: v for k, v in m.items() if k not in ("role", "prompt", "content")})
            messages.append(msg)
        return canonical_json(messages)
    return None


def _first_text(*values: Any) -> str | None:
    return next((v for v in values if isinstance(v, str) and v), None)


def _prompts_hash(samples: Iterable[Sample]) -> str:
    # evalpipe.tasks.prompts.prompts_hash over (item_id, prompt_hash), as the runner computes it.
    listed = list(samples)
    if any(s.prompt_hash == "unknown" for s in listed):
        return "unknown"
    h = hashlib.sha256()
    for s in listed:
        h.update(canonical_json([s.item_id, s.prompt_hash]).encode("utf-8") + b"\n")
    return h.hexdigest()


def _data_hash(samples: Iterable[Sample]) -> str | None:
    """sha256 over (item_id, reference) lines in order; None when a reference is unknown
    (a failed request without details), since the data's identity is then incomplete."""
    h = hashlib.sha256()
    for s in samples:
        if s.target is None:
            return None
        h.update(canonical_json([s.item_id, s.target]).encode("utf-8") + b"\n")
    return h.hexdigest()


def _run_fields(run: Run) -> dict[str, Any]:
    return {
        "started_at": run.started_at,
        "tags": list(run.tags),
        "provenance": run.provenance,
        "message": run.message,
    }


def _provenance(
    output: AisOutput, pair: AisDataset, note: str | None, id_note: str | None
) -> dict[str, Any]:
    model_cfg = dict(pair.model_cfg)
    if model_cfg.get("api_key"):
        model_cfg["api_key"] = "<redacted>"
    return {
        "importer": "aisbench",
        "aisbench_version": output.version,
        "aisbench_folder": output.folder,
        "config_file": output.config_file,
        "config_sha256": output.config_sha256,
        "files": dict(pair.files),
        "model_abbr": pair.model_abbr,
        "dataset_abbr": pair.dataset_abbr,
        "model_config": model_cfg,
        "dataset_config": pair.dataset_cfg,
        "aisbench_metrics": pair.metrics,
        "verdicts": "details" if pair.has_details else "recomputed",
        "item_ids": id_note or "AISBench ids",
    }


# --- storing --------------------------------------------------------------------------


def import_aisbench(
    store: Store,
    path: str | Path,
    *,
    layout: str | None,
    model_path: str | None = None,
    model: str | None = None,
    platform: str | None = None,
    datasets: Sequence[str] | None = None,
    engine_versions: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> list[Run]:
    """Store the AISBench run folder ``path`` as one evalpipe run per (model, dataset).

    Returns the runs in folder order. A run already stored with the same content is returned
    as it is and nothing is written, so importing a folder twice changes nothing. ``log``
    receives one line per run (stored or already there) and any note about its verdicts.

    Example::

        with open_store("evalpipe.db") as store:
            runs = import_aisbench(store, "outputs/default/20261128_065414", layout="dp2tp8")
    """
    built = build_runs(
        read_output(path, datasets),
        layout=layout,
        model=model,
        model_path=model_path,
        platform=platform,
        engine_versions=engine_versions,
        tags=tags,
    )
    out = []
    for item in built:
        stored = _store_one(store, item)
        if log is not None:
            r = item.run
            acc = "n/a" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"
            what = "stored" if stored else "already stored, nothing written:"
            log(f"{what} {r.run_id} {r.config.task} ({r.n_samples} samples, accuracy {acc})")
            if item.note:
                log(f"  note: {item.note}")
        out.append(item.run)
    return out


def _store_one(store: Store, item: ImportedRun) -> bool:
    """Store ``item``; ``False`` when the identical run was already there."""
    return store_imported(store, item.run, item.samples, item.prompts)
