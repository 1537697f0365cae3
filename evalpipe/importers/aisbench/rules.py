"""What AISBench's configs and files mean for evalpipe records; pure functions.

Verdicts come from the results' ``details`` (``--dump-eval-details``). Without details the
GSM8K family is re-scored with AISBench's own rule, mirrored here from ais-bench-benchmark
3.1.20260630 (``datasets/gsm8k.py`` ``gsm8k_postprocess``, ``gsm8k_dataset_postprocess``,
``Gsm8kEvaluator.is_equal``; ``utils/postprocess/model_postprocessors.py``
``extract_non_reasoning_content``) and accepted only if it reproduces the results file's
accuracy; any other dataset is refused with the command that adds the details.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.importers.aisbench.model import AisDataset
from evalpipe.records import canonical_json, sha256_text
from evalpipe.tasks.scoring import ExtractorSpec, Scoring, score

VERDICT = "aisbench"
FLEXIBLE = "flexible"
_FLEXIBLE = Scoring((ExtractorSpec(FLEXIBLE, "last_number"),), primary=FLEXIBLE)
_RANGE = re.compile(r"\[\s*(\d*)\s*:\s*-?\d*\s*(?::\s*([1-9]\d*)\s*)?\]")


@dataclass(frozen=True)
class Verdict:
    """One sample's verdicts: AISBench's (primary) and evalpipe's flexible one for GSM8K."""

    correct: bool
    reference: str | None
    extracted: dict[str, str | None] = field(default_factory=dict)
    correct_by: dict[str, bool] = field(default_factory=dict)


def eval_command(folder: str | None) -> str:
    """The AISBench command that re-runs only the evaluation, with per-sample details."""
    return (
        "`ais_bench --models … --datasets … [--work-dir …] -m eval --reuse "
        f"{folder or '<timestamp>'} --dump-eval-details`, no inference needed"
    )


def dataset_abbr(cfg: Mapping[str, Any]) -> str:
    """``utils/core/abbr.py`` ``dataset_abbr_from_cfg``: the name of the dataset's files."""
    if isinstance(cfg.get("abbr"), str) and cfg["abbr"]:
        return str(cfg["abbr"])
    abbr = str(cfg.get("path", "dataset"))
    if "name" in cfg:
        abbr += f"_{cfg['name']}"
    return abbr.replace("/", "_")


def check_layout(layout: str | None, platform: str | None) -> str:
    """The canonical layout; AISBench never records one, so it must be given."""
    from evalpipe.layout import parse, validate

    if not layout:
        raise EvalpipeError(
            "AISBench does not record the server's parallel layout (its model config only "
            "holds the server's address): pass --layout with the sizes the vLLM server ran "
            "with, e.g. --layout dp2tp8dcp8",
            exit_code=2,
        )
    parsed = parse(layout)
    errors = validate(parsed, platform)
    if errors:
        raise EvalpipeError(
            f"layout {parsed.canonical} cannot run on platform {platform or 'any'}:\n  - "
            + "\n  - ".join(errors)
        )
    return parsed.canonical


# --- verdicts -------------------------------------------------------------------------


def verdicts(pair: AisDataset, folder: str) -> tuple[dict[int, Verdict], str | None]:
    """Each sample's verdict by AISBench id, and a note when they were recomputed.

    Raises :class:`EvalpipeError` when the results file's accuracy disagrees with the
    per-sample verdicts, and when there are no details and the GSM8K rule does not apply.
    """
    where = f"results/{pair.model_abbr}/{pair.dataset_abbr}.json"
    family = _gsm8k_reason(pair) is None
    if not pair.has_details:
        reason = _gsm8k_reason(pair)
        if reason is not None:
            raise EvalpipeError(
                f"{where} has no per-sample verdicts (AISBench ran without "
                f"--dump-eval-details) and {reason}, so they cannot be recomputed here; add "
                f"them with {eval_command(folder)}"
            )
    out: dict[int, Verdict] = {}
    for s in pair.samples:
        if pair.has_details:
            correct = s.correct is True
            reference, extracted = s.reference, s.extracted
        else:
            reference = gsm8k_reference(s.gold) if s.gold is not None else None
            extracted = gsm8k_extract(_model_post(pair.model_cfg, s.prediction or ""))
            correct = reference is not None and gsm8k_equal(extracted, reference)
        answers: dict[str, str | None] = {VERDICT: extracted}
        by: dict[str, bool] = {VERDICT: correct}
        if family and s.prediction is not None and reference is not None:
            flex = _flexible(s.prediction, reference)
            if flex is not None:
                answers[FLEXIBLE], by[FLEXIBLE] = flex
        out[s.index] = Verdict(correct, reference, answers, by)
    computed = _check_accuracy(pair, out, where, folder)
    if pair.has_details:
        return out, None
    return out, (
        f"{where} has no per-sample details: verdicts recomputed with AISBench's own GSM8K "
        f"rule (gsm8k_postprocess + Gsm8kEvaluator), which reproduces its accuracy of "
        f"{computed:.2f}%"
    )


def _check_accuracy(pair: AisDataset, out: Mapping[int, Verdict], where: str, folder: str) -> float:
    """AISBench's accuracy from the verdicts (failed requests count as wrong there)."""
    computed = 100.0 * sum(v.correct for v in out.values()) / len(out) if out else 0.0
    stated = pair.metrics.get("accuracy")
    if not isinstance(stated, (int, float)) or isinstance(stated, bool):
        if pair.has_details:
            return computed
        raise EvalpipeError(f"{where} has no 'accuracy' to check recomputed verdicts against")
    if not math.isclose(computed, float(stated), rel_tol=1e-9, abs_tol=1e-9):
        if pair.has_details:
            raise EvalpipeError(
                f"{where}: its details give {computed:.4f}% correct but its 'accuracy' is "
                f"{stated}: the file was edited or mixes two evaluations; rerun the "
                f"evaluation ({eval_command(folder)})"
            )
        raise EvalpipeError(
            f"{where}: AISBench's GSM8K rule re-applied to the predictions gives "
            f"{computed:.4f}% but the file says {stated}% (the evaluation used other "
            f"settings); add per-sample details instead: {eval_command(folder)}"
        )
    return computed


def _flexible(output: str, reference: str) -> tuple[str | None, bool] | None:
    try:
        result = score(_FLEXIBLE, output, reference)
    except EvalpipeError:
        return None  # a non-numeric reference: no flexible verdict
    return result.extracted[FLEXIBLE], result.correct


def _gsm8k_reason(pair: AisDataset) -> str | None:
    """None when AISBench's GSM8K rule is exactly what scored this pair, else why not."""
    ev = pair.dataset_cfg.get("eval_cfg")
    ev = ev if isinstance(ev, dict) else {}
    evaluator = ev.get("evaluator")
    if not _named(evaluator, ("Gsm8kEvaluator",)):
        kind = evaluator.get("type") if isinstance(evaluator, dict) else evaluator
        return f"its evaluator is {kind}, not Gsm8kEvaluator (the one rule evalpipe mirrors)"
    checks = (
        ("pred_postprocessor", ("gsm8k_postprocess", "gsm8k")),
        ("dataset_postprocessor", ("gsm8k_dataset_postprocess", "gsm8k_dataset")),
    )
    for key, names in checks:
        if not _named(ev.get(key), names):
            return f"its {key} is not {names[0]}"
    for key in ("model_postprocessor", "sc_size"):
        if key in ev:
            return f"its eval_cfg sets {key}"
    post = pair.model_cfg.get("pred_postprocessor")
    tokens = ("think_start_token", "think_end_token")
    if post is not None and not _named(post, ("extract_non_reasoning_content",), tokens):
        return "the model config sets a pred_postprocessor other than extract_non_reasoning_content"
    return None


def _named(cfg: Any, names: tuple[str, ...], kwargs: tuple[str, ...] = ()) -> bool:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("type"), str):
        return False
    return cfg["type"].rsplit(".", 1)[-1] in names and set(cfg) - {"type"} <= set(kwargs)


def _model_post(model_cfg: Mapping[str, Any], text: str) -> str:
    post = model_cfg.get("pred_postprocessor")
    if not isinstance(post, dict):
        return text
    return non_reasoning(
        text, post.get("think_start_token", "<think>"), post.get("think_end_token", "</think>")
    )


def non_reasoning(text: str, start: str = "<think>", end: str = "</think>") -> str:
    """``extract_non_reasoning_content`` for one string (its tokens are used as regex)."""
    if start not in text and end in text:
        return text.split(end)[-1].strip()
    return re.sub(rf"{start}(.*?){end}", "", text, flags=re.DOTALL).strip()


def gsm8k_extract(text: str) -> str:
    """``gsm8k_postprocess``: the last number before any 'Question:', or 'NULL'."""
    numbers = re.findall(r"\-?\d+\.\d+|\-?\d+", text.split("Question:")[0])
    return numbers[-1] if numbers else "NULL"


def gsm8k_reference(gold: str) -> str | None:
    """``gsm8k_dataset_postprocess``: the final answer after '#### ', commas dropped."""
    parts = gold.split("#### ")
    return parts[1].replace(",", "") if len(parts) > 1 else None


def gsm8k_equal(pred: str, refer: str) -> bool:
    """``Gsm8kEvaluator.is_equal``."""
    try:
        return pred == refer or abs(float(pred) - int(refer)) < 1e-6
    except (ValueError, TypeError):
        return False


# --- configuration --------------------------------------------------------------------


def item_ids(pair: AisDataset) -> tuple[list[str], str | None]:
    """evalpipe item ids (dataset indices) for AISBench's ids (positions in the selection).

    A slice ``test_range`` (``--num-prompts N`` sets ``[:N]``) maps back exactly; a random
    one (a number) cannot, and the ids then stay positions, which the note says.
    """
    reader = pair.dataset_cfg.get("reader_cfg")
    test_range = reader.get("test_range") if isinstance(reader, dict) else None
    indices = [s.index for s in pair.samples]
    if test_range is None:
        return [str(i) for i in indices], None
    m = _RANGE.fullmatch(test_range.strip()) if isinstance(test_range, str) else None
    if m is None:
        where = f"item ids are positions in AISBench's test_range {test_range!r} selection"
        return [str(i) for i in indices], where
    start, step = int(m.group(1) or 0), int(m.group(2) or 1)
    mapped = None if (start, step) == (0, 1) else f"item ids are dataset indices ({test_range})"
    return [str(start + i * step) for i in indices], mapped


def task_version(pair: AisDataset) -> str:
    """A hash of everything in the configs that shapes prompts and verdicts, but not of
    the data's path or the selected range (``limit`` and the data hash record those)."""
    d = pair.dataset_cfg
    reader = d.get("reader_cfg")
    reader = reader if isinstance(reader, dict) else {}
    basis = {
        "type": d.get("type"),
        "reader_cfg": {k: v for k, v in reader.items() if k != "test_range"},
        "infer_cfg": d.get("infer_cfg"),
        "eval_cfg": d.get("eval_cfg"),
        "model_pred_postprocessor": pair.model_cfg.get("pred_postprocessor"),
    }
    return "aisbench-" + sha256_text(canonical_json(basis))[:12]


def sampling(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The request's generation settings: ``generation_kwargs`` + ``max_out_len`` as
    ``max_tokens`` (``VLLMCustomAPIChat.get_request_body``)."""
    gen = model_cfg.get("generation_kwargs")
    out = dict(gen) if isinstance(gen, dict) else {}
    max_out_len = _int(model_cfg.get("max_out_len"))
    if max_out_len is not None:
        out["max_tokens"] = max_out_len
    return out


def seed(model_cfg: Mapping[str, Any]) -> int:
    gen = model_cfg.get("generation_kwargs")
    value = _int(gen.get("seed")) if isinstance(gen, dict) else None
    return 0 if value is None else value


def limit(config: Mapping[str, Any]) -> int | None:
    args = config.get("cli_args")
    return _int(args.get("num_prompts")) if isinstance(args, dict) else None


def concurrency(model_cfg: Mapping[str, Any]) -> int:
    """An API model's ``batch_size`` is its number of requests in flight."""
    value = _int(model_cfg.get("batch_size"))
    return value if value is not None and value >= 1 else 1


def failure_note(pair: AisDataset) -> str | None:
    failed = sum(s.error is not None for s in pair.samples)
    if not failed:
        return None
    return (
        f"{failed} request(s) failed in AISBench ({pair.dataset_abbr}_failed.jsonl): AISBench "
        "scored them as wrong, evalpipe stores them as errors, outside its accuracy."
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
