"""lm-eval output folders → evalpipe runs: one run per task, every document a sample.

:func:`build_runs` turns what :func:`~evalpipe.importers.lmeval.read.read_output` parsed into
evalpipe records without touching a store (pure); :func:`import_lmeval` stores them. The run
id is a hash of the content, so importing a folder twice writes nothing new.

Mapping: task ``gsm8k`` becomes task ``lm-eval:gsm8k`` with lm-eval's task version; each
lm-eval filter (``strict-match``, ``flexible-extract``) becomes an ``extracted`` /
``correct_by`` entry whose verdict is lm-eval's own per-sample metric value (the task's first
metric, e.g. ``exact_match``), and the primary verdict is ``strict-match`` (else the first
filter) unless another is chosen. lm-eval's "no match" answer ``[invalid]`` is stored as no
answer (``None``). The layout comes from the parallel sizes in the model args
(``tensor_parallel_size``, …) or must be given. Task config, version, n-shot and hashes go to
the run's provenance, lm-eval's per-sample ``doc_hash`` / ``prompt_hash`` / ``target_hash``
to each sample's ``meta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalpipe.errors import EvalpipeError
from evalpipe.importers.common import content_config, sample_key, store_imported
from evalpipe.importers.lmeval.config import (
    LAYOUT_ARGS,
    data_source,
    int_or_none,
    layout_from_model_args,
    limit_of,
    model_name,
    provenance,
    sampling,
    times,
)
from evalpipe.importers.lmeval.read import LmevalDoc, LmevalOutput, LmevalTask, read_output
from evalpipe.records import Run, RunConfig, Sample, canonical_json, sha256_text

if TYPE_CHECKING:
    from evalpipe.store import Store

__all__ = [
    "DEFAULT_PRIMARY",
    "LAYOUT_ARGS",
    "TASK_PREFIX",
    "ImportedRun",
    "build_runs",
    "describe",
    "import_lmeval",
    "layout_from_model_args",
    "read_output",
    "store_run",
]

TASK_PREFIX = "lm-eval:"
"""evalpipe task names of lm-eval tasks: ``lm-eval:gsm8k`` (also what ``run`` accepts)."""
DEFAULT_PRIMARY = "strict-match"
INVALID = "[invalid]"
"""What lm-eval's regex filters answer when nothing matches."""

"""Model args (vLLM's own names, as lm-eval's vllm backend takes them) → layout sizes."""


@dataclass(frozen=True)
class ImportedRun:
    """One task's records, ready to store, and lm-eval's verdict accuracy per filter."""

    run: Run
    samples: tuple[Sample, ...]
    prompts: dict[str, str]
    accuracy_by_filter: dict[str, float | None]

    def renamed(self, run_id: str) -> ImportedRun:
        """The same records under another run id (``evalpipe run lm-eval:…`` keeps its own)."""
        return replace(
            self,
            run=self.run.with_(run_id=run_id),
            samples=tuple(replace(s, run_id=run_id) for s in self.samples),
        )


# --- layout -----------------------------------------------------------------------------


# --- records ----------------------------------------------------------------------------


def build_runs(
    outputs: Sequence[LmevalOutput],
    *,
    layout: str | None = None,
    model_path: str | None = None,
    primary: str | None = None,
    platform: str | None = None,
    engine_args: Mapping[str, Any] | None = None,
    engine_versions: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
    repeat_index: int = 0,
) -> list[ImportedRun]:
    """The evalpipe runs of parsed lm-eval output, one per task; no store needed.

    ``model_path``, a local copy of the weights, gives the fingerprint native evalpipe runs
    get (otherwise ``name:<model>``). ``platform``, ``engine_args`` and ``engine_versions``
    describe the engine when the caller knows it (``evalpipe run lm-eval:…`` does).
    """
    from evalpipe.engine.fingerprint import model_fingerprint

    fingerprint = model_fingerprint(model_path) if model_path else None
    built = []
    for out in outputs:
        canonical = layout_from_model_args(out.model_args, layout)
        for task in out.tasks:
            built.append(
                _build(
                    out,
                    task,
                    layout=canonical,
                    fingerprint=fingerprint,
                    primary=primary,
                    platform=platform,
                    engine_args=dict(engine_args or {}),
                    engine_versions=dict(engine_versions or {}),
                    tags=tuple(tags),
                    repeat_index=repeat_index,
                )
            )
    return built


def _build(
    out: LmevalOutput,
    task: LmevalTask,
    *,
    layout: str,
    fingerprint: str | None,
    primary: str | None,
    platform: str | None,
    engine_args: dict[str, Any],
    engine_versions: dict[str, str],
    tags: tuple[str, ...],
    repeat_index: int,
) -> ImportedRun:
    from evalpipe.records import summary_of
    from evalpipe.tasks.prompts import Prompt, prompts_hash

    where = f"{out.folder}/{task.samples_file}"
    chosen = _primary(task, primary, where)
    metric = _metric(task, where)
    samples: list[Sample] = []
    prompts: dict[str, str] = {}
    listed: list[Prompt] = []
    for doc in task.docs:
        sample = _sample(doc, chosen, metric, where)
        if doc.prompt is not None:
            prompts[sample.prompt_hash] = doc.prompt
            listed.append(Prompt(sample.item_id, doc.prompt))
        samples.append(sample)
    accuracy = {f: _mean(s.correct_by[f] for s in samples) for f in task.filters}
    _check_aggregates(task, metric, accuracy, out)
    model = model_name(out)
    source, data_sha256, data_note = data_source(task)
    config = RunConfig(
        model=model,
        model_fingerprint=fingerprint or f"name:{model}",
        task=TASK_PREFIX + task.name,
        task_version=task.version,
        prompt_hash=prompts_hash(listed) if len(listed) == len(samples) else "unknown",
        data_source=source,
        data_sha256=data_sha256,
        layout=layout,
        platform=platform or "unknown",
        engine_kind="import",
        engine_args=engine_args,
        sampling=sampling(task, out),
        seed=int_or_none(out.config.get("random_seed")) or 0,
        limit=limit_of(out.config.get("limit")),
        concurrency=int_or_none(out.model_args.get("num_concurrent")) or 1,
        engine_versions=engine_versions,
        repeat_index=repeat_index,
    )
    started, finished = times(out)
    run = Run(
        run_id="",
        config=config,
        status="finished",
        started_at=started,
        finished_at=finished,
        n_items=len(samples),
        duration_s=out.total_seconds,
        tags=tags,
        provenance=provenance(out, task, chosen, metric, accuracy, data_note),
        **summary_of(samples),
    )
    digest = sha256_text(
        canonical_json(
            {
                "config": content_config(config),
                "run": {k: v for k, v in _run_dict(run).items() if k != "run_id"},
                "samples": [sample_key(s) for s in samples],
            }
        )
    )
    stamp = started.replace("-", "").replace(":", "").replace("T", "-")[:15]
    run_id = f"{stamp if stamp[:1].isdigit() else 'lmeval'}-lm{digest[:10]}"
    return ImportedRun(run, tuple(samples), prompts, accuracy).renamed(run_id)


def _primary(task: LmevalTask, primary: str | None, where: str) -> str:
    if primary is not None:
        if primary not in task.filters:
            raise EvalpipeError(
                f"--primary {primary}: task {task.name} has no such lm-eval filter (it has "
                f"{', '.join(task.filters)})"
            )
        return primary
    return DEFAULT_PRIMARY if DEFAULT_PRIMARY in task.filters else task.filters[0]


def _metric(task: LmevalTask, where: str) -> str:
    if not task.metric_names:
        raise EvalpipeError(f"{where}: the samples carry no per-sample metric to score with")
    return task.metric_names[0]


def _sample(doc: LmevalDoc, primary: str, metric: str, where: str) -> Sample:
    item_id = str(doc.doc_id)
    verdicts: dict[str, bool] = {}
    for name, values in doc.metrics.items():
        value = values.get(metric)
        if isinstance(value, bool) or value in (0, 1):
            verdicts[name] = bool(value)
        else:
            raise EvalpipeError(
                f"{where}: document {doc.doc_id}, filter {name}: {metric} is {value!r}, not a "
                "right/wrong verdict (0 or 1); evalpipe imports tasks scored per sample as "
                "right or wrong"
            )
    prompt_hash = sha256_text(doc.prompt) if doc.prompt is not None else "unknown"
    meta: dict[str, Any] = {
        k: v
        for k, v in (
            ("doc_hash", doc.doc_hash),
            ("prompt_hash", doc.prompt_hash),
            ("target_hash", doc.target_hash),
        )
        if v is not None
    }
    meta["metrics"] = {name: dict(values) for name, values in doc.metrics.items()}
    return Sample(
        run_id="",
        item_id=item_id,
        prompt_hash=prompt_hash,
        output=_output(doc.responses),
        target=None if doc.target is None else _text(doc.target),
        correct=verdicts[primary],
        extracted={name: _answer(value) for name, value in doc.filtered.items()},
        correct_by=verdicts,
        meta=meta,
    )


def _output(responses: Sequence[Any]) -> str:
    # generate_until: [["text"]] (one request, one repeat); other shapes are kept as JSON.
    if len(responses) == 1:
        first = responses[0]
        if isinstance(first, list) and len(first) == 1 and isinstance(first[0], str):
            return first[0]
        if isinstance(first, str):
            return first
    return canonical_json(list(responses))


def _answer(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or value == INVALID:
        return None
    return value if isinstance(value, str) else canonical_json(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _mean(values: Iterable[bool]) -> float | None:
    listed = list(values)
    return sum(listed) / len(listed) if listed else None


def _check_aggregates(
    task: LmevalTask, metric: str, accuracy: Mapping[str, float | None], out: LmevalOutput
) -> None:
    """The per-sample verdicts must give the figures lm-eval reported (mean aggregation)."""
    if not _aggregates_by_mean(task.config, metric):
        return
    for name, mine in accuracy.items():
        reported = task.results.get(f"{metric},{name}")
        if isinstance(reported, bool) or not isinstance(reported, (int, float)) or mine is None:
            continue
        if not math.isclose(mine, reported, rel_tol=1e-9, abs_tol=1e-9):
            raise EvalpipeError(
                f"{out.folder}: task {task.name}, filter {name}: the samples give {metric} "
                f"{mine:.6f} but {out.results_file} reports {reported:.6f}; the samples file "
                "is not the one these results were computed from"
            )


def _aggregates_by_mean(config: Mapping[str, Any], metric: str) -> bool:
    for entry in config.get("metric_list") or ():
        if isinstance(entry, Mapping) and entry.get("metric") == metric:
            return bool(entry.get("aggregation", "mean") == "mean")
    return True


def _run_dict(run: Run) -> dict[str, Any]:
    """The run record as its content id hashes it: the exchange form, as ids were defined at
    exchange version 1 (so a folder imported before is found again, not stored twice)."""
    from evalpipe.importers.jsonl import run_to_dict

    out = run_to_dict(run)
    out.pop("evalpipe_version", None)  # the content, not who imported it
    config = content_config(run.config)
    out["engine_args"] = config["engine_args"]
    out["config_hash"] = sha256_text(
        canonical_json({**run.config.key(), "engine_args": config["engine_args"]})
    )[:16]
    out["schema_version"] = 1
    return out


# --- storing ----------------------------------------------------------------------------


def import_lmeval(
    store: Store,
    path: str | Path,
    *,
    layout: str | None = None,
    model_path: str | None = None,
    primary: str | None = None,
    tags: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> list[tuple[ImportedRun, bool]]:
    """Store the lm-eval output under ``path`` as one evalpipe run per task.

    Returns each run with ``True`` when it was written now, ``False`` when the identical
    run was already stored (nothing written). ``log`` gets one line per run.

    Example::

        with open_store("evalpipe.db") as store:
            for item, created in import_lmeval(store, "lm-eval-out", layout="tp1"):
                print(item.run.run_id, created)
    """
    built = build_runs(
        read_output(path), layout=layout, model_path=model_path, primary=primary, tags=tags
    )
    out = []
    for item in built:
        created = store_run(store, item)
        if log is not None:
            log(describe(item, created))
        out.append((item, created))
    return out


def store_run(store: Store, item: ImportedRun) -> bool:
    """Store ``item``; ``False`` when the identical run was already there."""
    return store_imported(store, item.run, item.samples, item.prompts)


def describe(item: ImportedRun, created: bool) -> str:
    """One line: what was stored, with lm-eval's accuracy per filter (primary first)."""
    r = item.run
    primary = r.provenance.get("lm_eval", {}).get("primary_filter")
    order = sorted(item.accuracy_by_filter, key=lambda f: f != primary)
    figures = ", ".join(f"{f} {_pct(item.accuracy_by_filter[f])}" for f in order)
    shots = r.provenance.get("n_shot")
    what = "stored" if created else "already stored, nothing written:"
    return (
        f"{what} {r.run_id} {r.config.task} v{r.config.task_version}"
        + (f" ({shots}-shot)" if shots is not None else "")
        + f" on {r.config.layout}: {r.n_samples} samples, {figures}"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"
