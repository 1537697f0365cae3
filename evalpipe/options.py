"""The options of one ``evalpipe run``: a config dataclass instead of a long keyword list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENGINE_KINDS = ("serve", "endpoint", "offline")


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for. Defaults are the CLI's defaults.

    ``platform`` None means "the platform evalpipe runs on" (detected without importing
    torch); ``served_model`` is the name to request from an ``--endpoint`` (defaults to
    ``model``); ``model_path`` lets an endpoint run still fingerprint local weights;
    ``reuse_finished`` returns an already finished run of the same config instead of
    running it again (``--with-baseline``, ``--repeat``).
    """

    task: str
    model: str
    layout: str = "tp1"
    platform: str | None = None
    attention: str | None = None
    engine: str = "serve"
    endpoint: str | None = None
    served_model: str | None = None
    model_path: str | None = None
    engine_args: tuple[str, ...] = ()
    data: str | None = None
    data_dir: str | None = None
    limit: int | None = None
    concurrency: int = 256
    request_timeout_s: float = 3600.0
    health_timeout_s: float = 900.0
    max_error_rate: float = 0.0
    seed: int = 0
    store: str | None = None
    runs_dir: Path | None = None
    resume: str | None = None
    tags: tuple[str, ...] = ()
    repeat_index: int = 0
    progress: bool = True
    api_key_env: str | None = None
    reuse_finished: bool = False
