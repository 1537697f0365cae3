"""Read an lm-eval output folder (``lm_eval … --output_path DIR --log_samples``); pure.

lm-eval (EleutherAI lm-evaluation-harness, 0.4.x) writes, per invocation,
``results_<stamp>.json`` (aggregated metrics, task configs, versions, n-shot, task hashes,
model args) and one ``samples_<task>_<stamp>.jsonl`` per task, usually inside a per-model
subfolder. A samples file has one line per (document, filter): the document, the request
arguments (the prompt), the raw responses, the filtered answer and the per-sample metric
values. :func:`read_output` finds every results file under a folder, pairs it with its
samples files by the shared ``<stamp>``, and checks what evalpipe relies on; it knows
nothing about evalpipe's records or store (see :mod:`evalpipe.importers.lmeval.build`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalpipe.errors import EvalpipeError

RESULTS_GLOB = "results_*.json"
_RERUN = "rerun `lm_eval … --output_path DIR --log_samples` (or `evalpipe run lm-eval:TASK`)"


@dataclass(frozen=True)
class LmevalDoc:
    """One document of one task: its request and, per filter, answer and metric values."""

    doc_id: int
    prompt: str | None
    """The text sent (first request argument), or None when it was not a string."""
    responses: tuple[Any, ...]
    """The raw responses (``resps``), the same for every filter."""
    target: Any
    filtered: Mapping[str, Any]
    """Filter name → the filtered response (``filtered_resps``)."""
    metrics: Mapping[str, Mapping[str, Any]]
    """Filter name → {metric name: per-sample value}."""
    doc_hash: str | None = None
    prompt_hash: str | None = None
    target_hash: str | None = None
    doc: Any = None


@dataclass(frozen=True)
class LmevalTask:
    """One task of one lm-eval invocation, with its per-document samples (doc_id order)."""

    name: str
    version: str
    n_shot: int | None
    config: Mapping[str, Any]
    """The task config lm-eval dumped (``configs[task]``)."""
    results: Mapping[str, Any]
    """The aggregated figures (``results[task]``), e.g. ``"exact_match,strict-match"``."""
    task_hash: str | None
    n_samples: Mapping[str, Any]
    """``n-samples[task]``: ``{"original": N, "effective": M}``."""
    filters: tuple[str, ...]
    """Filter names in the order the samples file lists them."""
    metric_names: tuple[str, ...]
    docs: tuple[LmevalDoc, ...]
    samples_file: str
    samples_sha256: str


@dataclass(frozen=True)
class LmevalOutput:
    """One ``results_<stamp>.json`` and the tasks whose samples sit beside it."""

    folder: str
    results_file: str
    results_sha256: str
    stamp: str
    model_source: str | None
    model_name: str | None
    model_args: Mapping[str, Any]
    config: Mapping[str, Any]
    """The invocation's settings (``config``): model args, limit, seeds, gen_kwargs…"""
    lm_eval_version: str | None
    date: float | None
    total_seconds: float | None
    tasks: tuple[LmevalTask, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Other top-level facts kept for provenance (transformers version, chat template…)."""


_EXTRA_KEYS = (
    "git_hash",
    "transformers_version",
    "upper_git_hash",
    "max_length",
    "system_instruction_sha",
    "fewshot_as_multiturn",
    "chat_template_sha",
)


def read_output(path: str | Path) -> list[LmevalOutput]:
    """Every lm-eval invocation found in ``path`` (the folder given to ``--output_path``,
    a per-model subfolder of it, or one ``results_*.json``), oldest first.

    Raises :class:`EvalpipeError` saying what to do for a missing folder, no results file,
    damaged JSON or a missing or inconsistent samples file.
    """
    root = Path(path).expanduser()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(
            {*root.glob(RESULTS_GLOB), *root.glob(f"*/{RESULTS_GLOB}")},
            key=lambda p: (p.name, p.as_posix()),
        )
    else:
        raise EvalpipeError(f"{root} does not exist; give the folder lm-eval wrote its results to")
    if not files:
        raise EvalpipeError(
            f"no lm-eval results (results_*.json) in {root} or its model subfolders: point at "
            f"the --output_path folder of an lm-eval run, or {_RERUN}"
        )
    return [_read_results(f) for f in files]


def _read_results(path: Path) -> LmevalOutput:
    raw = _bytes(path)
    data = _json(raw, path)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise EvalpipeError(
            f"{path} is not an lm-eval results file (no 'results' object); {_RERUN}"
        )
    stamp = path.stem.removeprefix("results_")
    configs = _mapping(data.get("configs"), path, "configs")
    if not configs:
        raise EvalpipeError(f"{path} lists no task configs ('configs'); {_RERUN}")
    config = _mapping(data.get("config"), path, "config")
    tasks = tuple(_read_task(path, stamp, name, data, configs[name]) for name in sorted(configs))
    return LmevalOutput(
        folder=str(path.parent),
        results_file=path.name,
        results_sha256=hashlib.sha256(raw).hexdigest(),
        stamp=stamp,
        model_source=_opt_str(data.get("model_source")) or _opt_str(config.get("model")),
        model_name=_opt_str(data.get("model_name")),
        model_args=model_args(config.get("model_args")),
        config=config,
        lm_eval_version=_opt_str(data.get("lm_eval_version")),
        date=_opt_float(data.get("date")),
        total_seconds=_opt_float(data.get("total_evaluation_time_seconds")),
        tasks=tasks,
        extra={k: data[k] for k in _EXTRA_KEYS if data.get(k) is not None},
    )


def model_args(value: Any) -> dict[str, Any]:
    """lm-eval's model args as a dict: 0.4.x writes a dict, older versions ``k=v,k=v``."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        out: dict[str, Any] = {}
        for part in value.split(","):
            key, sep, raw = part.partition("=")
            if sep and key.strip():
                out[key.strip()] = _scalar(raw.strip())
        return out
    return {}


def _scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _read_task(
    results_path: Path, stamp: str, name: str, data: Mapping[str, Any], config: Any
) -> LmevalTask:
    samples_path = results_path.parent / f"samples_{name}_{stamp}.jsonl"
    if not samples_path.is_file():
        raise EvalpipeError(
            f"{results_path.name} has task {name} but {samples_path.name} is missing from "
            f"{results_path.parent}: lm-eval writes per-sample files only with --log_samples; "
            f"{_RERUN}"
        )
    raw = _bytes(samples_path)
    docs, filters = _read_samples(raw, samples_path)
    n_samples = _mapping(
        _mapping(data.get("n-samples"), results_path, "n-samples").get(name),
        results_path,
        f"n-samples.{name}",
    )
    effective = n_samples.get("effective")
    if isinstance(effective, int) and effective != len(docs):
        raise EvalpipeError(
            f"{samples_path.name} holds {len(docs)} documents but {results_path.name} says "
            f"{effective} were evaluated: the samples file is incomplete or from another run; "
            f"{_RERUN}"
        )
    versions = _mapping(data.get("versions"), results_path, "versions")
    n_shot = _mapping(data.get("n-shot"), results_path, "n-shot").get(name)
    hashes = _mapping(data.get("task_hashes"), results_path, "task_hashes")
    metrics: list[str] = []
    for d in docs:
        for values in d.metrics.values():
            metrics += [m for m in values if m not in metrics]
    return LmevalTask(
        name=name,
        version=str(versions.get(name, "unknown")),
        n_shot=n_shot if isinstance(n_shot, int) and not isinstance(n_shot, bool) else None,
        config=_mapping(config, results_path, f"configs.{name}"),
        results=_mapping(
            _mapping(data["results"], results_path, "results").get(name),
            results_path,
            f"results.{name}",
        ),
        task_hash=_opt_str(hashes.get(name)),
        n_samples=n_samples,
        filters=filters,
        metric_names=tuple(metrics),
        docs=docs,
        samples_file=samples_path.name,
        samples_sha256=hashlib.sha256(raw).hexdigest(),
    )


def _read_samples(raw: bytes, path: Path) -> tuple[tuple[LmevalDoc, ...], tuple[str, ...]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvalpipeError(f"{path}: not UTF-8 text ({exc}); {_RERUN}") from exc
    by_doc: dict[int, dict[str, Any]] = {}
    filters: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalpipeError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); the file is "
                f"damaged or truncated: {_RERUN}"
            ) from None
        if not isinstance(row, dict):
            raise EvalpipeError(f"{where}: a sample line must be a JSON object; {_RERUN}")
        missing = [k for k in ("doc_id", "resps", "filtered_resps", "metrics") if k not in row]
        doc_id = row.get("doc_id")
        if missing or not isinstance(doc_id, int) or isinstance(doc_id, bool):
            what = f"is missing {', '.join(missing)}" if missing else "has no integer doc_id"
            raise EvalpipeError(f"{where}: not an lm-eval sample line (it {what}); {_RERUN}")
        name = str(row.get("filter", "none"))
        if name not in filters:
            filters.append(name)
        entry = by_doc.setdefault(doc_id, {"row": row, "filtered": {}, "metrics": {}})
        if name in entry["filtered"]:
            raise EvalpipeError(
                f"{where}: document {doc_id} appears twice for filter {name!r}; {_RERUN}"
            )
        if entry["row"].get("resps") != row.get("resps"):
            raise EvalpipeError(
                f"{where}: document {doc_id} has different responses under filter {name!r} "
                f"than under {next(iter(entry['filtered']))!r}; the file mixes runs: {_RERUN}"
            )
        metric_names = row["metrics"] if isinstance(row["metrics"], list) else []
        entry["filtered"][name] = row["filtered_resps"]
        entry["metrics"][name] = {str(m): row.get(m) for m in metric_names}
    if not by_doc:
        raise EvalpipeError(f"{path} holds no samples; {_RERUN}")
    docs = []
    for doc_id in sorted(by_doc):
        entry = by_doc[doc_id]
        absent = [f for f in filters if f not in entry["filtered"]]
        if absent:
            raise EvalpipeError(
                f"{path}: document {doc_id} has no line for filter(s) {', '.join(absent)}; "
                f"the file is incomplete: {_RERUN}"
            )
        row = entry["row"]
        docs.append(
            LmevalDoc(
                doc_id=doc_id,
                prompt=_prompt(row.get("arguments")),
                responses=tuple(row["resps"]) if isinstance(row["resps"], list) else (),
                target=row.get("target"),
                filtered=entry["filtered"],
                metrics=entry["metrics"],
                doc_hash=_opt_str(row.get("doc_hash")),
                prompt_hash=_opt_str(row.get("prompt_hash")),
                target_hash=_opt_str(row.get("target_hash")),
                doc=row.get("doc"),
            )
        )
    return tuple(docs), tuple(filters)


def _prompt(arguments: Any) -> str | None:
    """The first argument of the first request: the context text lm-eval sent.

    0.4.x logs ``{"gen_args_0": {"arg_0": context, "arg_1": …}, …}``; older versions a list.
    """
    first: Any = None
    if isinstance(arguments, dict) and arguments:
        first = next(iter(arguments.values()))
    elif isinstance(arguments, list) and arguments:
        first = arguments[0]
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    elif isinstance(first, list) and first:
        first = first[0]
    return first if isinstance(first, str) else None


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EvalpipeError(f"cannot read {path}: {exc.strerror}") from exc


def _json(raw: bytes, path: Path) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EvalpipeError(f"{path}: not UTF-8 text ({exc}); {_RERUN}") from exc
    except json.JSONDecodeError as exc:
        raise EvalpipeError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); the file is damaged or "
            f"truncated: {_RERUN}"
        ) from None


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EvalpipeError(f"{path}: {key!r} must be a JSON object; {_RERUN}")
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
