"""``evalpipe run lm-eval:TASK``: any lm-eval task against the engine evalpipe launches.

evalpipe starts vLLM with the layout's flags (or reaches ``--endpoint``), runs lm-eval in a
subprocess (``python -m lm_eval``, so its heavy imports stay out of evalpipe) with its
``local-completions`` model pointed at the server's ``/v1/completions``, ``--log_samples``
into the run directory, and stores the output exactly as ``evalpipe import lm-eval`` would.

The run record is created before the engine starts. If lm-eval fails (a crashed engine,
requests that keep failing, a bad task), the run is marked failed with lm-eval's last log
lines and nothing is scored: an infrastructure error is never a wrong answer.

``--data PATH`` points the task at a local file: a small task YAML in the run directory
``include:``s the task's own YAML and overrides ``dataset_path: json`` and
``dataset_kwargs.data_files.test``; a task that draws few-shot examples from a split draws
them from that file instead (lm-eval leaves the evaluated document out). ``--param K=V``
sets any other key of that YAML (``--param num_fewshot=3``); ``--param gen_kwargs.K=V``
goes to lm-eval's ``--gen_kwargs`` (``--param gen_kwargs.max_gen_toks=128``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalpipe.engine import provenance
from evalpipe.engine.args import EngineArgs
from evalpipe.engine.fingerprint import model_fingerprint
from evalpipe.engine.session import Generation, SessionSpec, http_session
from evalpipe.errors import EvalpipeError
from evalpipe.importers.lmeval.build import TASK_PREFIX, ImportedRun, build_runs
from evalpipe.importers.lmeval.read import read_output
from evalpipe.layout import Layout
from evalpipe.options import RunOptions, parse_params
from evalpipe.records import Run, RunConfig, new_run_id, utcnow
from evalpipe.run.lmeval_task import (
    LOG_FILE,
    OUTPUT_DIR,
    Invocation,
    find_task_yaml,
    lmeval_command,
    run_lmeval,
    task_override,
)
from evalpipe.run.plan import check_engine_options, engine_settings, resolve_layout, runs_dir
from evalpipe.run.plan import session_spec as make_session_spec
from evalpipe.store import Store, open_store

__all__ = [
    "Invocation",
    "execute",
    "find_task_yaml",
    "lmeval_available",
    "lmeval_command",
    "run_lmeval",
    "task_override",
]

GEN_KWARGS_PREFIX = "gen_kwargs."


def lmeval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def execute(options: RunOptions) -> Run:
    """Run lm-eval task ``options.task`` (``lm-eval:NAME``) and store it; return the run.

    Raises :class:`EvalpipeError` for bad options, and after marking the stored run failed
    when the engine or lm-eval fails.
    """
    task = options.task.removeprefix(TASK_PREFIX)
    _check_options(options, task)
    check_engine_options(options)
    layout, platform = resolve_layout(options)
    if not lmeval_available():
        raise EvalpipeError(
            "lm-eval is not installed in this environment: pip install 'evalpipe[lmeval]' "
            "(lm-eval[api] with the versions evalpipe is tested with)"
        )
    weights = _tokenizer_dir(options)
    data = _data_file(options, task)
    overrides, gen_kwargs = _split_params(options.params)
    engine_args, engine_env = engine_settings(options, layout, platform)
    versions = {} if options.engine == "endpoint" else provenance.engine_versions()
    run_id = new_run_id()
    run_dir = runs_dir(options) / run_id
    config = _config(options, layout, platform, weights, data, engine_args, versions)
    run = Run(
        run_id=run_id,
        config=config,
        status="running",
        started_at=utcnow(),
        tags=options.tags,
        provenance={
            **provenance.environment(),
            "packages": {**provenance.package_versions(), **_lmeval_version()},
            "run_dir": str(run_dir),
        },
    )
    invocation = Invocation(
        task=task,
        served_model=options.served_model or options.model,
        tokenizer=weights,
        layout=layout,
        data=data,
        overrides=overrides,
        gen_kwargs=gen_kwargs,
        limit=options.limit,
        concurrency=options.concurrency,
        request_timeout_s=options.request_timeout_s,
    )
    generation = Generation(
        concurrency=options.concurrency, request_timeout_s=options.request_timeout_s
    )
    spec = make_session_spec(options, layout, engine_args, engine_env, run_dir, generation)
    with contextlib.closing(open_store(options.store)) as store:
        store.create_run(run)
        run, command, built = _evaluate(store, run, spec, invocation, run_dir, options.progress)
        extra = {
            **dict(run.provenance),
            "lm_eval_command": command,
            "lm_eval_log": str(run_dir / LOG_FILE),
        }
        stored = [_store(store, item, run, i, extra) for i, item in enumerate(built)]
    if len(stored) > 1:
        others = ", ".join(f"{r.run_id} ({r.config.task})" for r in stored[1:])
        print(f"lm-eval ran {len(stored)} tasks; also stored {others}", file=sys.stderr)
    return stored[0]


def _config(
    options: RunOptions,
    layout: Layout,
    platform: str,
    weights: str,
    data: Path | None,
    engine_args: EngineArgs,
    versions: dict[str, str],
) -> RunConfig:
    """The configuration of the run record stored before the engine starts (lm-eval's
    output, read back, replaces it)."""
    return RunConfig(
        model=options.model,
        model_fingerprint=model_fingerprint(weights),
        task=options.task,
        task_version="unknown",
        prompt_hash="unknown",
        data_source=f"file:{data}" if data else "lm-eval",
        data_sha256=None,
        layout=layout.canonical,
        platform=platform,
        engine_kind="import",
        engine_args=engine_args.values,
        sampling={},
        seed=0,
        limit=options.limit,
        concurrency=options.concurrency,
        engine_versions=versions,
        repeat_index=options.repeat_index,
    )


def _evaluate(
    store: Store,
    run: Run,
    spec: SessionSpec,
    invocation: Invocation,
    run_dir: Path,
    progress: bool,
) -> tuple[Run, list[str], list[ImportedRun]]:
    """lm-eval against one engine session, its output read back as runs; a failure marks
    the stored run failed (Ctrl-C: aborted)."""

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    try:
        with http_session(spec, say) as engine:
            run = run.with_(provenance={**dict(run.provenance), "engine": engine.report()})
            store.update_run(run)
            command = run_lmeval(invocation, engine.base_url, run_dir, progress)
        c = run.config
        built = build_runs(
            read_output(run_dir / OUTPUT_DIR),
            layout=c.layout,
            model_path=invocation.tokenizer,
            platform=c.platform,
            engine_args=spec.args.values,
            engine_versions=engine.versions or dict(c.engine_versions),
            tags=run.tags,
            repeat_index=c.repeat_index,
        )
    except EvalpipeError as exc:
        store.update_run(run.with_(status="failed", message=str(exc), finished_at=utcnow()))
        raise
    except BaseException:
        store.update_run(run.with_(status="aborted", finished_at=utcnow()))
        raise
    return run, command, built


def _store(
    store: Store, item: ImportedRun, placeholder: Run, index: int, extra: dict[str, Any]
) -> Run:
    """The first task takes the run record made at the start; any further task (a group's
    subtasks) gets ``RUN_ID-2``, ``RUN_ID-3``, …"""
    run_id = placeholder.run_id if index == 0 else f"{placeholder.run_id}-{index + 1}"
    item = item.renamed(run_id)
    run = item.run.with_(
        started_at=placeholder.started_at,
        finished_at=utcnow(),
        provenance={**extra, **dict(item.run.provenance)},
    )
    if index == 0:
        store.put_prompts(item.prompts)
        store.put_samples(item.samples)
        store.update_run(run)
    else:
        store.create_run(run, item.samples, item.prompts)
    return run


def _check_options(options: RunOptions, task: str) -> None:
    if not task:
        raise EvalpipeError("name the lm-eval task after the prefix, e.g. lm-eval:gsm8k")
    unsupported = [
        (options.engine == "offline", "--engine offline (lm-eval talks to a server)"),
        (options.resume is not None, "--resume (start a new run)"),
        (options.seed != 0, "--seed (lm-eval uses its own seeds, recorded with the run)"),
        (options.data_dir is not None and options.data is None, "--data-dir (pass --data FILE)"),
    ]
    named = [what for bad, what in unsupported if bad]
    if named:
        raise EvalpipeError(f"lm-eval tasks do not support {'; '.join(named)}")
    if options.limit is not None and options.limit < 1:
        raise EvalpipeError(f"--limit must be a positive integer, not {options.limit}")


def _tokenizer_dir(options: RunOptions) -> str:
    """lm-eval needs the tokenizer locally (hubs may be unreachable); also the weights that
    are fingerprinted."""
    candidate = options.model_path or options.model
    if not Path(candidate).expanduser().is_dir():
        raise EvalpipeError(
            f"lm-eval needs the model's tokenizer from a local folder, and {candidate!r} is "
            "not one: pass --model-path DIR (the model's local HF folder)"
        )
    return str(Path(candidate).expanduser().resolve())


def _data_file(options: RunOptions, task: str) -> Path | None:
    if options.data is None:
        return None
    path = Path(options.data).expanduser().resolve()
    if not path.is_file():
        raise EvalpipeError(f"--data {options.data}: no such file")
    return path


def _split_params(pairs: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--param`` → (task YAML overrides, lm-eval ``--gen_kwargs``)."""
    overrides: dict[str, Any] = {}
    gen: dict[str, Any] = {}
    for key, value in parse_params(pairs).items():
        if key.startswith(GEN_KWARGS_PREFIX):
            gen[key.removeprefix(GEN_KWARGS_PREFIX)] = value
        elif key in ("task", "include"):
            raise EvalpipeError(f"--param {key}=…: the task is the one after lm-eval:")
        else:
            overrides[key] = value
    return overrides, gen


def _lmeval_version() -> dict[str, str]:
    from evalpipe.engine.provenance import dist_version

    version = dist_version("lm-eval") or dist_version("lm_eval")
    return {"lm-eval": version} if version else {}
