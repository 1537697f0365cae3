"""Parse an AISBench run folder (``outputs/default/<YYYYMMDD_HHMMSS>``); no store, no records.

The files and their shapes (ais-bench-benchmark 3.1.20260630):

- ``configs/<time>_<pid>.py``: the merged config (``models``, ``datasets``, ``cli_args``) as
  Python literals (``cli/config_manager.py`` ``ConfigManager._dump_and_reload_config``);
- ``predictions/<model_abbr>/<dataset_abbr>.jsonl``: one line per answered request, in
  completion order: ``data_abbr``, ``id``, ``success``, ``uuid``, ``origin_prompt``,
  ``prediction``, ``gold`` (``openicl/icl_inferencer/output_handler/base_handler.py``
  ``run_cache_consumer`` + ``write_to_json``); failed requests go to
  ``<dataset_abbr>_failed.jsonl`` (``id``, ``input``, ``error_info``);
- ``results/<model_abbr>/<dataset_abbr>.json``: metrics (``accuracy`` in percent) and, with
  ``--dump-eval-details``, ``details`` = ``{"0": {prompt, origin_prediction, predictions,
  references, correct}, …}`` in id order (``tasks/openicl_eval.py`` ``OpenICLEvalTask._score``,
  ``format_details``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.importers.aisbench import rules
from evalpipe.importers.aisbench.config import read_config
from evalpipe.importers.aisbench.model import AisDataset, AisOutput, AisSample

_STAMP = re.compile(r"(\d{8}_\d{6})")


# --- reading -----------------------------------------------------------------


def read_output(path: str | Path, datasets: Sequence[str] | None = None) -> AisOutput:
    """Parse the AISBench run folder ``path``; ``datasets`` keeps only those dataset abbrs.

    Raises :class:`EvalpipeError` naming the file and what to do for a folder that is not an
    AISBench run, a missing step (inference, evaluation) or a corrupt file.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EvalpipeError(
            f"{root} is not a folder; pass one AISBench run folder, outputs/default/<timestamp>"
        )
    config_path = _config_file(root)
    config = read_config(config_path)
    models = _dicts(config.get("models"), config_path, "models")
    dataset_cfgs = _dicts(config.get("datasets"), config_path, "datasets")
    abbrs = [rules.dataset_abbr(d) for d in dataset_cfgs]
    if datasets:
        unknown = sorted(set(datasets) - set(abbrs))
        if unknown:
            raise EvalpipeError(
                f"{config_path}: no dataset {', '.join(unknown)} in this run "
                f"(it has {', '.join(abbrs)})"
            )
    results = []
    for model_cfg in models:
        model_abbr = model_cfg.get("abbr")
        if not isinstance(model_abbr, str) or not model_abbr:
            raise EvalpipeError(f"{config_path}: a model config has no 'abbr'")
        for abbr, dataset_cfg in zip(abbrs, dataset_cfgs, strict=True):
            if not datasets or abbr in datasets:
                results.append(_read_pair(root, model_abbr, abbr, model_cfg, dataset_cfg))
    stamp = _STAMP.fullmatch(root.name) or _STAMP.match(config_path.name)
    return AisOutput(
        folder=root.name,
        config_file=config_path.relative_to(root).as_posix(),
        config_sha256=_sha256(config_path),
        config=config,
        version=_version(config),
        started=_iso(stamp.group(1)) if stamp else None,
        results=tuple(results),
    )


def _config_file(root: Path) -> Path:
    found = sorted((root / "configs").glob("*.py")) if (root / "configs").is_dir() else []
    if found:
        # A re-evaluation (--reuse) dumps another config next to the first; the newest wins.
        return found[-1]
    runs = sorted(p.name for p in root.iterdir() if p.is_dir() and _STAMP.fullmatch(p.name))
    hint = (
        f"; it holds AISBench runs: pass one of them, e.g. {root / runs[-1]}"
        if runs
        else "; pass the folder AISBench printed as 'Current exp folder' "
        "(outputs/default/<timestamp>)"
    )
    raise EvalpipeError(f"{root} is not an AISBench run folder (no configs/*.py){hint}")


def _dicts(value: Any, where: Path, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise EvalpipeError(
            f"{where}: '{key}' must be a non-empty list of dicts; the config dump is damaged "
            "(AISBench writes it as the run starts: rerun, or restore the file)"
        )
    return value


def _version(config: Mapping[str, Any]) -> str | None:
    # AISBench 3.1 records no version in its outputs; accept one if a later version does.
    for holder in (config, config.get("cli_args") or {}):
        for key in ("ais_bench_version", "version"):
            value = holder.get(key) if isinstance(holder, dict) else None
            if isinstance(value, str):
                return value
    return None


def _iso(stamp: str) -> str | None:
    try:
        return datetime.strptime(stamp, "%Y%m%d_%H%M%S").isoformat(timespec="seconds")
    except ValueError:  # digits in the right shape that are no date
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_pair(
    root: Path,
    model_abbr: str,
    dataset_abbr: str,
    model_cfg: dict[str, Any],
    dataset_cfg: dict[str, Any],
) -> AisDataset:
    pred_path = root / "predictions" / model_abbr / f"{dataset_abbr}.jsonl"
    failed_path = pred_path.with_name(f"{dataset_abbr}_failed.jsonl")
    result_path = root / "results" / model_abbr / f"{dataset_abbr}.json"
    rerun = rules.eval_command(root.name)
    if not result_path.is_file():
        raise EvalpipeError(
            f"{result_path} is missing: AISBench's evaluation step did not run for "
            f"{model_abbr}/{dataset_abbr}; run it on the predictions ({rerun})"
        )
    predictions = _jsonl(pred_path) if pred_path.is_file() else []
    failed = _jsonl(failed_path) if failed_path.is_file() else []
    if not predictions and not failed:
        raise EvalpipeError(
            f"{pred_path} is missing or empty: AISBench's inference step wrote no predictions "
            f"for {model_abbr}/{dataset_abbr}; rerun it (`ais_bench … -m infer --reuse "
            f"{root.name}`) and then the evaluation"
        )
    result = _json(result_path)
    if "error" in result:
        raise EvalpipeError(
            f"{result_path}: AISBench's evaluation failed ({result['error']}); fix it and "
            f"rerun it ({rerun})"
        )
    files = {
        p.relative_to(root).as_posix(): _sha256(p)
        for p in (pred_path, failed_path, result_path)
        if p.is_file()
    }
    details = result.get("details")
    metrics = {k: v for k, v in result.items() if k != "details"}
    samples = _join(pred_path, predictions, failed_path, failed, result_path, details)
    has_details = details is not None and all(
        s.correct is not None for s in samples if s.error is None
    )
    return AisDataset(
        model_abbr, dataset_abbr, model_cfg, dataset_cfg, samples, metrics, has_details, files
    )


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalpipeError(
                f"{path}:{number}: not valid JSON ({exc.msg}): the file is truncated or "
                "corrupt; restore it from the AISBench run, or rerun that step"
            ) from None
        if not isinstance(value, dict) or not _is_index(value.get("id")):
            raise EvalpipeError(
                f"{path}:{number}: not an AISBench prediction line (expected an object with "
                "an integer 'id'); restore the file from the AISBench run"
            )
        rows.append((number, value))
    return rows


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise EvalpipeError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}): the file is truncated or "
            f"corrupt; restore it, or rerun AISBench's evaluation ({rules.eval_command(None)})"
        ) from None
    if not isinstance(value, dict):
        raise EvalpipeError(f"{path}: an AISBench results file holds a JSON object")
    return value


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalpipeError(f"{path}: not UTF-8 text ({exc.reason}); the file is corrupt") from None
    except OSError as exc:
        raise EvalpipeError(f"cannot read {path}: {exc.strerror}") from None


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _join(
    pred_path: Path,
    predictions: list[tuple[int, dict[str, Any]]],
    failed_path: Path,
    failed: list[tuple[int, dict[str, Any]]],
    result_path: Path,
    details: Any,
) -> tuple[AisSample, ...]:
    """One sample per id: predictions (any order) + failures + details (id order)."""
    by_id: dict[int, AisSample] = {}
    for number, row in predictions:
        index = row["id"]
        if index in by_id:
            raise EvalpipeError(
                f"{pred_path}:{number}: id {index} again: several samples per question "
                "(num_return_sequences or n > 1) cannot be imported; run AISBench with n=1"
            )
        output = row.get("prediction")
        if not isinstance(output, str):
            raise EvalpipeError(
                f"{pred_path}:{number}: 'prediction' must be text (one sample per question)"
            )
        by_id[index] = AisSample(
            index=index,
            prompt=row.get("origin_prompt"),
            prediction=output,
            gold=_opt_text(row.get("gold")),
            uuid=_opt_text(row.get("uuid")),
        )
    for _, row in failed:
        index = row["id"]
        if index not in by_id:
            error = row.get("error_info") or "request failed (no error_info)"
            by_id[index] = AisSample(
                index=index, prompt=row.get("input"), prediction=None, gold=None, error=str(error)
            )
    if details is not None:
        by_id = _with_details(by_id, details, result_path)
    return tuple(by_id[i] for i in sorted(by_id))


def _with_details(
    by_id: dict[int, AisSample], details: Any, result_path: Path
) -> dict[int, AisSample]:
    if not isinstance(details, dict) or not all(k.isdigit() for k in details):
        raise EvalpipeError(
            f"{result_path}: 'details' is not in the shape --dump-eval-details writes "
            '({"0": {…}, "1": {…}}); rerun AISBench\'s evaluation with --dump-eval-details'
        )
    # Predictions past the evaluated items (AISBench drops them too) are left out.
    out: dict[int, AisSample] = {}
    for key, d in details.items():
        index = int(key)
        where = f"{result_path}: details[{key!r}]"
        if not isinstance(d, dict):
            raise EvalpipeError(f"{where} is not an object")
        got = by_id.get(index)
        if got is None:
            got = AisSample(index, None, None, None, error="no prediction recorded")
        elif got.error is None and (
            d.get("origin_prediction") != got.prediction or d.get("prompt") != got.prompt
        ):
            raise EvalpipeError(
                f"{where} does not match the prediction with id {index}: the predictions "
                "changed after the evaluation; rerun AISBench's evaluation "
                f"({rules.eval_command(None)})"
            )
        correct = _one(d.get("correct"), where)
        if correct is not None and not isinstance(correct, bool):
            raise EvalpipeError(f"{where}: 'correct' must be true/false, not {correct!r}")
        out[index] = replace(
            got,
            reference=_opt_text(_one(d.get("references"), where)),
            extracted=_opt_text(_one(d.get("predictions"), where)),
            correct=correct,
        )
    return out


def _one(value: Any, where: str) -> Any:
    # BaseEvaluator.evaluate groups details per question: with n=1 each field is a 1-list.
    if isinstance(value, list):
        if len(value) != 1:
            raise EvalpipeError(
                f"{where}: {len(value)} samples for one question (n > 1) cannot be imported"
            )
        return value[0]
    return value


def _opt_text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)
