"""What lm-eval is asked to do and how: its command line, the task YAML that points a task at
local data, and the subprocess that runs it against a server's ``/v1/completions``.

lm-eval runs as ``python -m lm_eval`` so its heavy imports stay out of evalpipe; its log and
output go to the run directory, and a failure raises with the log's last lines (nothing is
scored: an engine or lm-eval failure is not a wrong answer).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evalpipe.errors import EvalpipeError
from evalpipe.importers.lmeval.build import LAYOUT_ARGS
from evalpipe.layout import Layout
from evalpipe.paths import write_atomic

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
        write_atomic(
            include / f"{_safe(inv.task)}.yaml", yaml.safe_dump(spec, sort_keys=False).encode()
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
