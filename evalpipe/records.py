"""What evalpipe stores: frozen records for runs and samples, and the schema version.

Everything a number depends on is a field here (task version + prompt hash, data sha256,
layout, engine args and versions, sampling, seed, batching), so every figure can be recomputed
from what was stored. The store maps these records to tables; nothing else defines the shape.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

SCHEMA_VERSION = 5
"""Version of the store's tables. Bumped with a migration.

2 added the ``gate_decisions`` table (migration ``m002_gate_decisions``); 3 stores a run's
engine arguments as a mapping instead of a flag list (``m003_structured_engine_args``); 4 adds
the ``token_traces`` table (``m004_token_traces``); 5 binds a trace to the answer it describes
(``token_traces.answer_sha256``) and adds ``run_holders``, the one process running a run
(``m005_trace_answers_and_run_holders``)."""

EXCHANGE_VERSION = 4
"""Version of the JSONL run format (``runs export``/``import``, ``store copy``); moves only when
that format changes, so a store migration does not make exports unreadable to older evalpipes.

2 writes ``engine_args`` as an object (field name → value); version 1 files, with a list of
``vllm serve`` flags, still import. 3 adds a ``{"trace": {...}}`` line per stored token trace
after the samples (:mod:`evalpipe.importers.tracelines`); version 1 and 2 files, which have
none, still import. 4 ends the file with ``{"end": {"samples", "traces", "sha256"}}``
(:mod:`evalpipe.importers.endline`), so a file cut short is refused, and gives a decode-path
trace the digest of its answer (``answer_sha256``); version 1–3 files still import, with a
notice that a cut could not be detected."""

RUN_STATUSES = ("running", "finished", "failed", "aborted")

JsonDict = Mapping[str, Any]


def utcnow() -> str:
    """UTC timestamp in ISO 8601 with seconds precision, the only time format stored."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the form hashed for config keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def new_run_id() -> str:
    """A fresh run id like ``20261128-031642-ab12cd``: UTC start time, then 24 random bits.

    Time first so ids sort (and prefix-match) by when runs started; the random tail keeps
    runs started in the same second on different hosts apart.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def engine_arg_value(raw: str) -> Any:
    """An engine argument's text read as YAML (``4096`` a number, ``true`` a boolean), as
    ``--engine-arg KEY=VALUE`` values are; text that YAML reads as something JSON cannot hold
    (a date) stays text, so every stored value is JSON. A mapping with a key twice is refused:
    plain YAML would keep the last value silently."""
    from evalpipe.errors import EvalpipeError
    from evalpipe.yamlload import YamlInputError, load_yaml

    try:
        value = load_yaml(raw)
        json.dumps(value)
    except YamlInputError as exc:
        if "duplicate key" in exc.problem:
            raise EvalpipeError(f"--engine-arg value {raw!r}: {exc.message}") from exc
        return raw
    except (TypeError, ValueError):
        return raw
    return value


def engine_args_from_flags(flags: Sequence[str]) -> dict[str, Any]:
    """The flag-list form of engine arguments stored before schema 3 (and in version 1 JSONL
    files) as the mapping stored now; the only reader of that form.

    ``--max-model-len 4096`` → ``max_model_len: 4096``; a bare ``--enforce-eager`` → ``True``;
    ``--no-enable-prefix-caching`` → ``enable_prefix_caching: False``; ``--key=value`` too.
    Never raises: a stray token becomes ``token: True`` rather than make a store unreadable.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(flags):
        token = flags[i]
        i += 1
        name, sep, inline = token.partition("=")
        key = name.strip().lstrip("-").replace("-", "_")
        if sep:
            out[key] = engine_arg_value(inline)
        elif i < len(flags) and not flags[i].startswith("--"):
            out[key] = engine_arg_value(flags[i])
            i += 1
        elif key.startswith("no_") and token.startswith("--"):
            out[key.removeprefix("no_")] = False
        else:
            out[key] = True
    return {k: out[k] for k in sorted(out)}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's outputs; two runs with equal configs are repeats.

    ``config_hash`` over these fields finds an unfinished run to resume automatically. Fields
    that identify *what was asked* live here; what was observed (timings, server-reported
    config) lives on :class:`Run`.

    ``engine_args`` maps EngineArgs field names to JSON values, sorted by key (see
    :class:`evalpipe.engine.args.EngineArgs`).
    """

    model: str
    model_fingerprint: str
    task: str
    task_version: str
    prompt_hash: str
    data_source: str
    data_sha256: str | None
    layout: str
    platform: str
    engine_kind: str  # "serve" | "endpoint" | "offline" | "import"
    engine_args: JsonDict
    sampling: JsonDict
    seed: int
    limit: int | None
    concurrency: int
    engine_versions: JsonDict = field(default_factory=dict)
    repeat_index: int = 0
    fault: str | None = None
    """A canary fault's canonical spec (:mod:`evalpipe.faults`) injected into the engine, or
    None for a clean run. Part of the key, so a faulted run never resumes, repeats or pairs
    as a clean one."""
    request_order: str = "dataset"
    """The order requests were sent in (``dataset`` or ``reversed``): the batches an engine
    forms, and so its numerics, follow arrival order."""

    def __post_init__(self) -> None:
        args = self.engine_args
        object.__setattr__(self, "engine_args", {k: args[k] for k in sorted(args)})

    @property
    def layout_name(self) -> str:
        """The layout as every report names a run: with its canary fault and request order
        when set (``tp1 [fault: key-scale 0.2]``), so a faulted run is never read as clean."""
        from evalpipe.faults import fault_label

        marks = [f"fault: {fault_label(self.fault)}"] if self.fault else []
        if self.request_order != "dataset":
            marks.append(f"{self.request_order} order")
        return self.layout + "".join(f" [{m}]" for m in marks)

    def key(self) -> dict[str, Any]:
        return {
            "model_fingerprint": self.model_fingerprint,
            "task": self.task,
            "task_version": self.task_version,
            "prompt_hash": self.prompt_hash,
            "data_sha256": self.data_sha256,
            "layout": self.layout,
            "platform": self.platform,
            "engine_kind": self.engine_kind,
            "engine_args": dict(self.engine_args),
            "sampling": dict(self.sampling),
            "seed": self.seed,
            "limit": self.limit,
            "concurrency": self.concurrency,
            "engine_versions": dict(self.engine_versions),
            "repeat_index": self.repeat_index,
            # Only when set: every run stored before these fields keeps its hash.
            **_optional(self),
        }

    def config_hash(self) -> str:
        return sha256_text(canonical_json(self.key()))[:16]


OPTIONAL_CONFIG = {"fault": None, "request_order": "dataset"}
"""Config fields written (to the key, the store, exports) only when they differ from these
defaults, so clean runs in dataset order hash, store and export as before the fields existed."""


def _optional(config: RunConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k, v in OPTIONAL_CONFIG.items() if getattr(config, k) != v}


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Every field of ``config`` as plain JSON values, in field order (tuples → lists); the
    optional fields only when set (:data:`OPTIONAL_CONFIG`)."""
    out = {
        f.name: getattr(config, f.name)
        for f in fields(RunConfig)
        if f.name not in OPTIONAL_CONFIG or getattr(config, f.name) != OPTIONAL_CONFIG[f.name]
    }
    out["engine_args"] = dict(config.engine_args)
    out["sampling"] = dict(config.sampling)
    out["engine_versions"] = dict(config.engine_versions)
    return out


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Inverse of :func:`config_to_dict`; unknown or missing keys raise ``TypeError``.

    ``engine_args`` may also be the flag list of version 1 JSONL files (the form stored before
    schema 3), read with :func:`engine_args_from_flags`."""
    args = data.get("engine_args", {})
    if not isinstance(args, Mapping):
        args = engine_args_from_flags(args)
    return RunConfig(**{**data, "engine_args": args})


@dataclass(frozen=True)
class Run:
    """One evaluation of one task on one model and layout.

    ``provenance`` holds what was observed about the environment (host, python, evalpipe
    version, vLLM/vllm-ascend/torch_npu versions, what the server reported, log path).
    Summary counts are filled when the run ends and can always be recomputed from samples.
    """

    run_id: str
    config: RunConfig
    status: str
    started_at: str
    finished_at: str | None = None
    n_items: int = 0
    n_samples: int = 0
    n_correct: int = 0
    n_correct_flexible: int = 0
    n_errors: int = 0
    accuracy: float | None = None
    accuracy_flexible: float | None = None
    duration_s: float | None = None
    output_tokens: int = 0
    throughput_tok_s: float | None = None
    tags: tuple[str, ...] = ()
    provenance: JsonDict = field(default_factory=dict)
    message: str | None = None

    def with_(self, **changes: Any) -> Run:
        return replace(self, **changes)


@dataclass(frozen=True)
class Sample:
    """One item's result in one run.

    ``correct`` is the primary extractor's verdict and is ``None`` when the request failed
    (``error`` set): infrastructure errors are never wrong answers. ``extracted`` and
    ``correct_by`` hold every extractor's answer and verdict (e.g. strict and flexible).
    The prompt text is stored once per hash in the store's prompt table.
    """

    run_id: str
    item_id: str
    prompt_hash: str
    output: str | None
    target: str | None
    correct: bool | None
    extracted: Mapping[str, str | None] = field(default_factory=dict)
    correct_by: Mapping[str, bool] = field(default_factory=dict)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    latency_s: float | None = None
    error: str | None = None
    completed_at: str | None = None
    meta: JsonDict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the engine answered (the sample can be scored and paired)."""
        return self.error is None


@dataclass(frozen=True)
class GateRecord:
    """One stored release-gate decision (see :mod:`evalpipe.gate.decide`).

    The policy's settings are stored as columns, not only inside ``decision``, so the next
    decision for the same ``scope_key`` can say which of them were loosened since. ``margin``
    is in points, as written in the policy. ``decision_id`` is ``None`` until stored.
    """

    decided_at: str
    scope_key: str
    policy_name: str
    policy_hash: str
    margin: float
    alpha: float
    min_n: int
    max_error_rate: float
    inconclusive_blocks: bool
    status: str
    decision: JsonDict = field(default_factory=dict)
    decision_id: int | None = None


FLEXIBLE = "flexible"
"""The ``Sample.correct_by`` key whose verdicts give ``Run.accuracy_flexible``."""

SUMMARY_FIELDS = (
    "n_samples",
    "n_correct",
    "n_correct_flexible",
    "n_errors",
    "accuracy",
    "accuracy_flexible",
    "output_tokens",
)
"""The :class:`Run` fields that :func:`summary_of` recomputes from samples."""


def summary_of(samples: Iterable[Sample]) -> dict[str, Any]:
    """The summary fields of a run, from its samples; keys are :class:`Run` field names.

    Errored samples (infrastructure failures) are counted in ``n_errors`` and left out of
    both accuracies' denominators: a failed request is not a wrong answer. Accuracies are
    ``None`` when nothing was scored; ``accuracy_flexible`` is ``None`` when no sample has a
    ``"flexible"`` verdict.
    """
    n_samples = n_errors = n_correct = n_flex = n_flex_scored = tokens = 0
    for s in samples:
        n_samples += 1
        tokens += s.output_tokens or 0
        if s.error is not None:
            n_errors += 1
            continue
        n_correct += s.correct is True
        if FLEXIBLE in s.correct_by:
            n_flex_scored += 1
            n_flex += s.correct_by[FLEXIBLE] is True
    n_scored = n_samples - n_errors
    return {
        "n_samples": n_samples,
        "n_correct": n_correct,
        "n_correct_flexible": n_flex,
        "n_errors": n_errors,
        "accuracy": n_correct / n_scored if n_scored else None,
        "accuracy_flexible": n_flex / n_flex_scored if n_flex_scored else None,
        "output_tokens": tokens,
    }
