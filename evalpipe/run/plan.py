"""What a run decides before any engine starts: layout and platform, task, data, prompts,
engine arguments, and the session that will serve it.

Everything here can fail without an engine, so it fails first and clearly: :func:`precheck`
before a run is created (the model is there, vLLM accepts the configuration), :func:`plan`
once it is being run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalpipe.engine import models
from evalpipe.engine.args import EngineArgs, platform_env, with_interleave
from evalpipe.engine.fingerprint import model_fingerprint
from evalpipe.engine.session import Generation, SessionSpec
from evalpipe.engine.tokens import token_counter
from evalpipe.engine.vllm_check import LaunchConfig, check_before_launch
from evalpipe.errors import EvalpipeError
from evalpipe.faults import ENV_VAR as FAULT_ENV
from evalpipe.faults import FaultSpec, check_architecture, check_layout, parse_fault
from evalpipe.layout import Layout, current_platform, parse, shard_period, validate
from evalpipe.limits import (
    INT64_MAX,
    MAX_CONCURRENCY,
    MAX_LOGPROBS,
    check_fraction,
    check_int,
    check_seconds,
)
from evalpipe.options import ENGINE_KINDS, REQUEST_ORDERS, RunOptions, parse_params
from evalpipe.records import RunConfig
from evalpipe.run import cpu_dcp
from evalpipe.tasks import generators
from evalpipe.tasks.data import load_dataset
from evalpipe.tasks.load import load_task
from evalpipe.tasks.prompts import Prompt, prompts_hash, render
from evalpipe.tasks.spec import Dataset, TaskSpec


@dataclass(frozen=True)
class Plan:
    """Everything decided before the engine starts."""

    options: RunOptions
    layout: Layout
    platform: str
    task: TaskSpec
    dataset: Dataset
    prompts: tuple[Prompt, ...]
    engine_args: EngineArgs
    engine_env: dict[str, str]
    sampling: dict[str, Any]


def check_engine_options(options: RunOptions) -> None:
    """The options every run path checks before anything else."""
    if options.engine not in ENGINE_KINDS:
        raise EvalpipeError(f"--engine must be one of {', '.join(ENGINE_KINDS)}")
    if options.engine == "endpoint" and not options.endpoint:
        raise EvalpipeError("--engine endpoint needs --endpoint URL")
    check_run_sizes(options)
    if options.request_order not in REQUEST_ORDERS:
        raise EvalpipeError(
            f"--request-order must be one of {', '.join(REQUEST_ORDERS)}, not "
            f"{options.request_order!r}"
        )
    check_logprobs(options.logprobs, options.engine_args)
    fault_of(options)


def fault_of(options: RunOptions) -> FaultSpec | None:
    """The run's canary fault, parsed and checked against the model's architecture (a local
    folder's ``config.json``; an endpoint's or hub model's run is only labelled)."""
    if options.fault is None:
        return None
    spec = parse_fault(options.fault)
    launched = options.engine != "endpoint"
    platform = (options.platform or current_platform()) if launched else None
    check_layout(spec, parse(options.layout).dcp, platform)
    if launched:
        found = models.architectures(options.model)
        if found is not None:
            check_architecture(spec, found, options.model)
    return spec


def check_run_sizes(o: RunOptions) -> None:
    """Every number a run is given, within its bound (:mod:`evalpipe.limits`; exit 2)."""
    check_int("--concurrency", o.concurrency, 1, MAX_CONCURRENCY)
    check_int("--limit", o.limit, 1, INT64_MAX)
    check_int("--seed", o.seed, -INT64_MAX - 1, INT64_MAX)
    check_seconds("--request-timeout", o.request_timeout_s)
    check_seconds("--health-timeout", o.health_timeout_s)
    check_fraction("--max-error-rate", o.max_error_rate)


SERVER_MAX_LOGPROBS = 20
"""vLLM's default ``max_logprobs``: a server refuses a request for more."""


def check_logprobs(k: int, engine_args: tuple[str, ...]) -> None:
    """``--logprobs K`` is 0 (off) to the engine's cap, which ``max_logprobs`` raises."""
    check_int("--logprobs", k, 0, MAX_LOGPROBS)
    raised = any(a.replace("-", "_").startswith("max_logprobs=") for a in engine_args)
    if k > SERVER_MAX_LOGPROBS and not raised:
        raise EvalpipeError(
            f"--logprobs {k} is above vLLM's default cap of {SERVER_MAX_LOGPROBS} logprobs a "
            f"token: add --engine-arg max_logprobs={k}, or ask for fewer"
        )


def resolve_layout(options: RunOptions) -> tuple[Layout, str]:
    """The run's layout and platform, checked against the platform's rules."""
    layout = parse(options.layout)
    # An endpoint's layout is declared, not enforced here; the platform evalpipe runs on is
    # irrelevant to a remote server, so only the declared (or generic) rules apply.
    platform = options.platform or (
        "generic" if options.engine == "endpoint" else current_platform()
    )
    rules = None if platform == "generic" else platform
    _refuse(layout, platform, validate(layout, rules, options.attention))
    return layout, platform


def _refuse(layout: Layout, platform: str, errors: list[str]) -> None:
    if errors:
        raise EvalpipeError(
            f"layout {layout.canonical} cannot run on platform {platform}:\n  - "
            + "\n  - ".join(errors)
            + "\n(`evalpipe layout explain LAYOUT --platform P` shows the rules)"
        )


def engine_settings(
    options: RunOptions, layout: Layout, platform: str
) -> tuple[EngineArgs, dict[str, str]]:
    """The engine's arguments (layout + user extras + platform defaults, and on the CPU DCP
    backend the sliding-window override) and environment, checked against the rules of the
    backend the layout runs on; an endpoint gets only the user's extras and no environment
    (it is not ours to start)."""
    remote = options.engine == "endpoint"
    args = EngineArgs.build(layout, options.engine_args, platform, remote=remote)
    if remote:
        return args, {}
    _refuse(layout, platform, cpu_dcp.backend_errors(layout, platform, args))
    args = cpu_dcp.with_override(args, layout, platform, options.model)
    fault = fault_of(options)
    env = {**platform_env(layout, platform), **cpu_dcp.engine_env(layout, platform)}
    return args, {**env, **fault_env(fault)}


def fault_env(fault: FaultSpec | None) -> dict[str, str]:
    """The engine environment of a run's canary fault: its spec, or for a clean run an empty
    value when the shell has one set (a clean run never inherits a fault)."""
    if fault is not None:
        return {FAULT_ENV: fault.canonical}
    return {FAULT_ENV: ""} if os.environ.get(FAULT_ENV) else {}


def precheck(*runs: RunOptions) -> None:
    """What must hold before a run is created, so a bad input stores no failed run and costs
    no engine launch: the options, the layout on the platform, the task and its parameters,
    the model (a path that exists, no typo of a built-in name), and last, as the slow one
    (seconds: it imports vLLM), vLLM's own config check (head counts and the like). Give a
    run and its baseline together: vLLM is imported once for both.

    An endpoint is not checked here: its model is a served name (it may be anything) and its
    layout is declared, so vLLM is not even imported. Without vLLM installed, or for a model
    the engine will download, vLLM's check is left to the engine's launch.
    """
    launches: list[LaunchConfig] = []
    for options in runs:
        check_engine_options(options)
        layout, platform = resolve_layout(options)
        if not options.task.startswith("lm-eval:"):
            # The task file and --param values: cheap, so they fail before the slow check.
            load_task(options.task, params=parse_params(options.params))
        if options.engine == "endpoint":
            continue
        if models.where(options.model) == "hub" or platform != current_platform():
            # Reading a hub model's config would download it; the installed vLLM cannot
            # speak for another platform's (--platform ascend on this box).
            continue
        args, _ = engine_settings(options, layout, platform)
        launches.append(LaunchConfig(layout, options.model, args.values))
    for launch, verdict in zip(launches, check_before_launch(launches), strict=True):
        if verdict.available and not verdict.ok:
            name, model = launch.layout.canonical, launch.model
            raise EvalpipeError(
                f"vLLM refuses layout {name} for model {model}: {verdict.message}\n"
                f"(nothing was started or stored; `evalpipe layout explain {name} --model "
                f"{model}` shows the rules)"
            )


def plan(options: RunOptions) -> Plan:
    """Validate everything that can be checked without an engine; fail early and clearly."""
    check_engine_options(options)
    if not 0.0 <= options.max_error_rate <= 1.0:
        raise EvalpipeError("--max-error-rate is a fraction between 0 and 1 (e.g. 0.01)")
    layout, platform = resolve_layout(options)
    task = load_task(options.task, params=parse_params(options.params))
    engine_args, engine_env = engine_settings(options, layout, platform)
    dataset = load_dataset(
        task,
        data_path=options.data,
        data_dir=options.data_dir,
        limit=options.limit,
        generator_context=_generator_context(options, task, layout, platform, engine_args),
    )
    if not dataset.items:
        raise EvalpipeError(f"task {task.name}: the data source {dataset.source} has no items")
    prompts = tuple(render(task, dataset.items))
    sampling = dict(task.sampling)
    sampling["seed"] = options.seed
    return Plan(
        options, layout, platform, task, dataset, prompts, engine_args, engine_env, sampling
    )


def _generator_context(
    options: RunOptions, task: TaskSpec, layout: Layout, platform: str, args: EngineArgs
) -> dict[str, Any] | None:
    """What a generated task needs from the run: the model's token counter, the shard
    period of ``--shard-layout`` (default: the run's layout) with ``--shard-interleave``
    (default: the run's)."""
    if task.data.generator is None or options.data:
        return None
    needs = generators.get(task.data.generator).requires
    context: dict[str, Any] = {}
    if "count_tokens" in needs:
        context["count_tokens"] = token_counter(options.model_path or options.model)
    if "shard_period" in needs:
        grid_layout = parse(options.shard_layout) if options.shard_layout else layout
        grid_args = args.values
        if options.shard_interleave is not None:
            if options.shard_interleave < 1:
                raise EvalpipeError(
                    f"--shard-interleave must be at least 1, not {options.shard_interleave}"
                )
            grid_args = with_interleave(grid_args, options.shard_interleave)
        try:
            context["shard_period"] = shard_period(grid_layout, grid_args, platform)
        except ValueError as exc:
            raise EvalpipeError(f"--engine-arg: {exc}") from exc
    return context


def run_config(p: Plan, engine_versions: dict[str, str]) -> RunConfig:
    """The stored configuration of the run ``p`` plans."""
    o = p.options
    return RunConfig(
        model=o.model,
        model_fingerprint=model_fingerprint(o.model_path or o.model),
        task=p.task.name,
        task_version=p.task.version,
        prompt_hash=prompts_hash(p.prompts),
        data_source=p.dataset.source,
        data_sha256=p.dataset.sha256,
        layout=p.layout.canonical,
        platform=p.platform,
        engine_kind=o.engine,
        engine_args=p.engine_args.values,
        sampling=p.sampling,
        seed=o.seed,
        limit=o.limit,
        concurrency=o.concurrency,
        engine_versions=engine_versions,
        repeat_index=o.repeat_index,
        fault=None if o.fault is None else parse_fault(o.fault).canonical,
        request_order=o.request_order,
    )


def runs_dir(options: RunOptions) -> Path:
    """Where run directories (engine logs, lm-eval output) go."""
    base = options.runs_dir or Path(os.environ.get("EVALPIPE_RUNS_DIR", "evalpipe-runs"))
    return base.expanduser().resolve()


def session_spec(
    options: RunOptions,
    layout: Layout,
    args: EngineArgs,
    env: dict[str, str],
    run_dir: Path,
    generation: Generation,
) -> SessionSpec:
    """The engine session a run uses, its log in ``run_dir``."""
    return SessionSpec(
        kind=options.engine,
        model=options.model,
        args=args,
        label=layout.canonical,
        log_path=run_dir / "vllm.log",
        generation=generation,
        env=env,
        health_timeout_s=options.health_timeout_s,
        endpoint=options.endpoint,
        served_model=options.served_model,
    )


def generation(p: Plan) -> Generation:
    """How the native run generates: the task's sampling and stops, the run's batching."""
    o = p.options
    api_key = os.environ.get(o.api_key_env) if o.api_key_env else None
    return Generation(
        sampling=p.sampling,
        stop=p.task.stop,
        concurrency=o.concurrency,
        request_timeout_s=o.request_timeout_s,
        api_key=api_key,
        logprobs=o.logprobs,
    )
