"""The engine session that re-creates a stored run's engine for teacher-forced scoring.

A run stores what its engine was: model, layout, engine arguments (EngineArgs field names →
values), platform and how it was reached (``engine_kind``). A ``serve`` or ``offline`` run is
re-created from those, as :mod:`evalpipe.run.plan` made it (same arguments, same platform
environment, same request concurrency, since batch makeup moves numerics); its log goes to
``vllm-score.log`` beside the run's own. A run made on an endpoint stored only the user's
extras (the server's flags were never evalpipe's to state) and an imported run stored none,
so those are scored only through a server the user names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalpipe.engine import models
from evalpipe.engine.args import EngineArgs, parse_pairs, platform_env
from evalpipe.engine.session import Engine, Generation, SessionSpec
from evalpipe.errors import EvalpipeError
from evalpipe.faults import parse_fault
from evalpipe.layout import LAYOUT_ENGINE_KEYS, parse
from evalpipe.options import RunOptions
from evalpipe.records import Run
from evalpipe.run import cpu_dcp
from evalpipe.run.plan import fault_env, runs_dir, session_spec

LAUNCHABLE = ("serve", "offline")


def engine_kind(owner: Run, endpoint: str | None, flag: str, engine: str | None) -> str:
    """How to reach ``owner``'s engine: the server at ``endpoint`` when given, else as the
    run was made (or as ``engine`` overrides); ``flag`` names the option that gives the URL."""
    if endpoint:
        return "endpoint"
    if engine is not None and engine not in LAUNCHABLE:
        raise EvalpipeError(f"--engine must be one of {', '.join(LAUNCHABLE)}")
    made = owner.config.engine_kind
    if made not in LAUNCHABLE:
        how = "made on an endpoint" if made == "endpoint" else f"made by engine kind {made!r}"
        raise EvalpipeError(
            f"run {owner.run_id} was {how}, whose engine flags evalpipe never knew, so it "
            f"cannot start that engine: pass {flag} URL, a server running "
            f"{owner.config.model} as layout {owner.config.layout}"
        )
    return engine or made


def engine_spec(
    owner: Run,
    endpoint: str | None,
    flag: str,
    k: int,
    *,
    engine: str | None = None,
    served_model: str | None = None,
    concurrency: int | None = None,
    extra_args: Sequence[str] = (),
    request_timeout_s: float = 3600.0,
    health_timeout_s: float = 900.0,
    base_dir: Path | None = None,
    forced_decode: bool = False,
) -> SessionSpec:
    """The session that scores with ``owner``'s engine, asking for ``k`` prompt logprobs a
    position (``base_dir``: where run directories go, as ``run --runs-dir``; ``concurrency``:
    requests in flight, by default as ``owner`` was run; ``extra_args``: ``KEY=VALUE`` engine
    arguments over the stored ones, the same for every side, e.g. a smaller
    ``max_num_batched_tokens`` to bound prompt-logprob memory; layout keys are refused)."""
    c = owner.config
    kind = engine_kind(owner, endpoint, flag, engine)
    layout = parse(c.layout)
    options = RunOptions(
        task=c.task,
        model=c.model,
        layout=c.layout,
        engine=kind,
        endpoint=endpoint,
        served_model=served_model,
        health_timeout_s=health_timeout_s,
        runs_dir=base_dir,
    )
    # The scored run's engine as it was, its canary fault included.
    fault = None if c.fault is None else parse_fault(c.fault)
    env = {} if kind == "endpoint" else {**platform_env(layout, c.platform), **fault_env(fault)}
    if kind != "endpoint":  # a DCP run on CPU scores on the backend it ran on
        env.update(cpu_dcp.engine_env(layout, c.platform))
    generation = Generation(
        sampling=c.sampling,
        concurrency=concurrency or c.concurrency,
        request_timeout_s=request_timeout_s,
        logprobs=k,
    )
    run_dir = runs_dir(options) / owner.run_id
    extras = parse_pairs(extra_args)
    clash = sorted(set(extras) & LAYOUT_ENGINE_KEYS)
    if clash:
        raise EvalpipeError(
            f"--engine-arg {clash[0]}: the scored run's layout sets it ({c.layout}); scoring "
            "re-creates each run's own layout"
        )
    values = {**c.engine_args, **extras}
    if not forced_decode and kind != "endpoint" and "max_num_batched_tokens" not in values:
        chunk = prefill_chunk(models.vocab_size(c.model), available_memory(), layout.tp)
        if chunk is not None:
            values["max_num_batched_tokens"] = chunk
    args = EngineArgs(values)
    spec = session_spec(options, layout, args, env, run_dir, generation)
    if forced_decode and kind == "offline":
        raise EvalpipeError(
            "--path forced-decode needs a server (its logits processor is loaded by "
            "`vllm serve`): score with --engine serve, or --path prefill"
        )
    return dataclasses.replace(spec, log_path=run_dir / "vllm-score.log")


BYTES_PER_LOGIT = 12
"""What one prompt position's vocabulary row of prompt logprobs costs in an engine worker, a
float32 per token three times over (logits, log-softmax, the gathered copy): measured here as
12.8 GB for one 4 096-token chunk of Gemma-3's 262 144-token vocabulary (4 096 × 262 144 × 12
= 12.9 GB)."""
PREFILL_SHARE = 0.4
"""The share of the machine's available memory the prompt logprobs of one chunk may take, the
rest left to the weights, the KV cache and the other engine of a pair."""
MIN_CHUNK, MAX_CHUNK = 256, 8192


def prefill_chunk(vocab: int | None, available: int | None, ranks: int = 1) -> int | None:
    """The ``max_num_batched_tokens`` of a prefill-path scoring engine: the most positions
    whose vocabulary rows of prompt logprobs (:data:`BYTES_PER_LOGIT` each per token) fit in
    :data:`PREFILL_SHARE` of the ``available`` memory shared by ``ranks`` workers, in steps of
    256, at most :data:`MAX_CHUNK`; None when the vocabulary or the memory is unknown. A
    vocabulary too large for one :data:`MIN_CHUNK`-token chunk is refused with what to do."""
    if vocab is None or available is None:
        return None
    per_token = BYTES_PER_LOGIT * vocab * max(1, ranks)
    fits = int(PREFILL_SHARE * available // per_token)
    if fits < MIN_CHUNK:
        need = MIN_CHUNK * per_token / PREFILL_SHARE / 2**30
        raise EvalpipeError(
            f"the prefill path needs about {need:.1f} GiB free for the prompt logprobs of one "
            f"{MIN_CHUNK}-token chunk of a {vocab}-token vocabulary, and "
            f"{available / 2**30:.1f} GiB are available: score with --path forced-decode "
            "(top-k per position, whatever the vocabulary)"
        )
    return min(MAX_CHUNK, fits // 256 * 256)


def available_memory() -> int | None:
    """The machine's available memory in bytes (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def version_notice(engine: Engine, owner: Run) -> str | None:
    """What differs between the engine versions now and those ``owner`` was made with."""
    then: Mapping[str, Any] = owner.config.engine_versions
    now = engine.versions
    moved = [f"{k} {then[k]} → {now[k]}" for k in sorted(then) if k in now and now[k] != then[k]]
    if not moved:
        return None
    return (
        f"the engine is not the one run {owner.run_id} was made with ({', '.join(moved)}): "
        "its forced scores measure the engine of today"
    )
