"""What an lm-eval output says about the run behind it: layout, model, data, sampling,
times and provenance. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.importers.lmeval.read import LmevalDoc, LmevalOutput, LmevalTask
from evalpipe.layout import Layout, LayoutError, parse

LAYOUT_ARGS = {
    "data_parallel_size": "dp",
    "tensor_parallel_size": "tp",
    "pipeline_parallel_size": "pp",
    "prefill_context_parallel_size": "pcp",
    "decode_context_parallel_size": "dcp",
}


EP_ARG = "enable_expert_parallel"


SECRET_ARGS = {"api_key", "auth_token", "token", "header", "headers"}


def layout_from_model_args(args: Mapping[str, Any], given: str | None = None) -> str:
    """The canonical layout: from the parallel sizes in ``args``, else ``given``.

    Both present must agree. Neither is an error telling the user to pass ``--layout``.
    """
    sizes: dict[str, int] = {}
    for arg, key in LAYOUT_ARGS.items():
        if arg not in args or args[arg] is None:
            continue
        value = args[arg]
        if isinstance(value, str) and value.isdecimal():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EvalpipeError(
                f"lm-eval model arg {arg}={value!r} is not a positive integer; pass --layout"
            )
        sizes[key] = value
    ep = str(args.get(EP_ARG, "")).lower() in ("true", "1")
    derived = Layout(**sizes, ep=ep).canonical if sizes or ep else None
    if given is not None:
        try:
            canonical = parse(given).canonical
        except LayoutError as exc:
            raise EvalpipeError(f"--layout: {exc.message}") from None
        if derived is not None and derived != canonical:
            raise EvalpipeError(
                f"--layout {canonical} contradicts lm-eval's model args, which give "
                f"{derived} ({sizes_text(args)}); drop --layout or fix it"
            )
        return canonical
    if derived is None:
        raise EvalpipeError(
            "lm-eval's model args name no parallel sizes ("
            + ", ".join(LAYOUT_ARGS)
            + "), so the layout that produced these results is unknown: pass --layout "
            "(e.g. --layout tp8 or dp2tp8dcp8)"
        )
    return derived


def sizes_text(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{a}={args[a]}" for a in (*LAYOUT_ARGS, EP_ARG) if a in args)


def model_name(out: LmevalOutput) -> str:
    for key in ("model", "pretrained"):
        value = out.model_args.get(key)
        if isinstance(value, str) and value:
            return value
    return out.model_name or "unknown"


def data_source(task: LmevalTask) -> tuple[str, str | None, str]:
    """(data_source, data_sha256, note). The sha256 is that of a local data file, and only
    when every logged document equals the file's record at its doc_id (the same check an
    evalpipe run's data hash stands for); hub data gets none."""
    cfg = task.config
    split = cfg.get("test_split") or cfg.get("validation_split") or "test"
    kwargs = cfg.get("dataset_kwargs") or {}
    files = kwargs.get("data_files") if isinstance(kwargs, Mapping) else None
    file = files.get(split) if isinstance(files, Mapping) else files
    if isinstance(file, str):
        path = Path(file).expanduser()
        return f"file:{path}", *file_sha256(path, task.docs)
    name = cfg.get("dataset_name") or "default"
    return f"hf:{cfg.get('dataset_path')}@{name}/{split}", None, "hub data: not hashed"


def file_sha256(path: Path, docs: Sequence[LmevalDoc]) -> tuple[str | None, str]:
    from evalpipe.tasks.data import read_rows

    if not path.is_file():
        return None, f"{path} is not on this machine: data not hashed"
    try:
        rows, digest = read_rows(path)
    except EvalpipeError as exc:
        return None, f"data not hashed: {exc.message}"
    for doc in docs:
        if doc.doc_id >= len(rows) or rows[doc.doc_id][1] != doc.doc:
            return None, f"document {doc.doc_id} differs from {path}: data not hashed"
    return digest, f"every document equals its record in {path}"


def sampling(task: LmevalTask, out: LmevalOutput) -> dict[str, Any]:
    sampling = dict(task.config.get("generation_kwargs") or {})
    cli = out.config.get("gen_kwargs")
    if isinstance(cli, Mapping):
        sampling.update(cli)
    for key in ("max_gen_toks", "seed"):
        if key not in sampling and key in out.model_args:
            sampling[key] = out.model_args[key]
    return sampling


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return None


def limit_of(value: Any) -> int | None:
    # lm-eval's --limit is a count, or a fraction of the task when below 1 (kept in provenance).
    n = int_or_none(value)
    return n if n is not None and n >= 1 else None


def times(out: LmevalOutput) -> tuple[str, str]:
    if out.date is not None:
        start = datetime.fromtimestamp(out.date, timezone.utc)
        end = datetime.fromtimestamp(out.date + (out.total_seconds or 0.0), timezone.utc)
        return start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")
    try:  # results_2026-11-28T06-53-27.925180
        stamp = datetime.strptime(out.stamp, "%Y-%m-%dT%H-%M-%S.%f").replace(tzinfo=timezone.utc)
    except ValueError:
        return "unknown", "unknown"
    text = stamp.isoformat(timespec="seconds")
    return text, text


def provenance(
    out: LmevalOutput,
    task: LmevalTask,
    primary: str,
    metric: str,
    accuracy: Mapping[str, float | None],
    data_note: str,
) -> dict[str, Any]:
    args = {k: ("<redacted>" if k in SECRET_ARGS else v) for k, v in out.model_args.items()}
    invocation = {k: v for k, v in out.config.items() if k != "model_args"}
    return {
        "importer": "lm-eval",
        "task": task.name,
        "n_shot": task.n_shot,
        "lm_eval": {
            "version": out.lm_eval_version,
            "task": task.name,
            "task_version": task.version,
            "n_shot": task.n_shot,
            "task_hash": task.task_hash,
            "task_config": dict(task.config),
            "results": dict(task.results),
            "n_samples": dict(task.n_samples),
            "filters": list(task.filters),
            "primary_filter": primary,
            "metric": metric,
            "accuracy_by_filter": dict(accuracy),
            "model_source": out.model_source,
            "model_args": args,
            "invocation": invocation,
            "date": out.date,
            "total_evaluation_time_seconds": out.total_seconds,
            "results_file": out.results_file,
            "results_sha256": out.results_sha256,
            "samples_file": task.samples_file,
            "samples_sha256": task.samples_sha256,
            **dict(out.extra),
        },
        "data": {"check": data_note},
    }
