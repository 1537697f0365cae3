"""Async OpenAI-compatible client that keeps every request in flight up to a concurrency cap.

Failures are data, not exceptions: a timeout, an HTTP error or a dropped connection comes back
as a :class:`Completion` with ``error`` set, so the runner can count it as an infrastructure
error and never score it as a wrong answer. Only connection-level failures are retried
(the request never reached the engine); an HTTP error or a timeout is not, because the
engine may have seen it and a retry would hide an engine fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import aiohttp

from evalpipe.engine import logprobs
from evalpipe.traces import FORCE_KEY, TokenTrace


@dataclass(frozen=True)
class Request:
    """One prompt to send: ``text`` for a completion, ``messages`` for a chat request, or
    ``prompt_ids`` (token ids) for a completion.

    ``forced_from`` makes it a teacher-forced scoring request: the engine returns the logprobs
    of ``prompt_ids[forced_from:]`` given what precedes each (prompt logprobs) and generates
    one token; the completion's ``trace`` is that of the forced tokens. ``force_ids`` makes
    it one on the decode path instead: the engine generates exactly those ids after the
    prompt ``prompt_ids``, one step at a time (evalpipe's logits processor,
    :mod:`evalpipe.engine.plugin.forcing`), returning its own top-k at every step.
    """

    item_id: str
    text: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    prompt_ids: tuple[int, ...] | None = None
    forced_from: int | None = None
    force_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Completion:
    item_id: str
    text: str | None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    latency_s: float | None = None
    error: str | None = None
    trace: TokenTrace | None = None
    """The generated tokens' (or, for a forced request, the forced tokens') trace, when
    logprobs were asked for and the engine returned them."""
    trace_error: str | None = None
    """Why logprobs that were returned could not be read (the answer itself is good)."""


@dataclass(frozen=True)
class ClientSettings:
    base_url: str  # e.g. http://127.0.0.1:8000 (no /v1)
    model: str
    sampling: Mapping[str, Any]
    stop: Sequence[str] = ()
    concurrency: int = 256
    request_timeout_s: float = 3600.0
    connect_retries: int = 3
    api_key: str | None = None
    logprobs: int = 0
    """Top-k logprobs asked for every generated (or forced) position; 0: none."""


OnResult = Callable[[Completion], Awaitable[None] | None]


class OpenAIClient:
    """Sends completion/chat requests to ``{base_url}/v1``; use as an async context manager."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OpenAIClient:
        headers = {"Content-Type": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        # The connector limit must not throttle below the requested concurrency.
        connector = aiohttp.TCPConnector(limit=max(1, self.settings.concurrency))
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_s),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _body(self, request: Request) -> tuple[str, dict[str, Any]]:
        s = self.settings
        body: dict[str, Any] = {"model": s.model, **dict(s.sampling)}
        if s.stop:
            body["stop"] = list(s.stop)
        if request.forced_from is not None:
            body.update(max_tokens=1, prompt_logprobs=max(1, s.logprobs))
            body["prompt"] = list(request.prompt_ids or ())
            return "/v1/completions", body
        if request.force_ids is not None:
            return "/v1/completions", self._forced_decode(body, request)
        body.update(logprobs.request_fields(s.logprobs, request.messages is not None))
        if request.messages is not None:
            body["messages"] = [dict(m) for m in request.messages]
            return "/v1/chat/completions", body
        body["prompt"] = request.text if request.prompt_ids is None else list(request.prompt_ids)
        return "/v1/completions", body

    def _forced_decode(self, body: dict[str, Any], request: Request) -> dict[str, Any]:
        """Exactly ``force_ids`` after the prompt: as many tokens as forced, none stopping it
        early (no stop strings or ids, the end-of-sequence token ignored)."""
        ids = list(request.force_ids or ())
        for key in ("stop", "stop_token_ids", "min_tokens"):
            body.pop(key, None)
        body.update(logprobs.request_fields(max(1, self.settings.logprobs), chat=False))
        body.update(
            prompt=list(request.prompt_ids or ()),
            max_tokens=len(ids),
            ignore_eos=True,
            vllm_xargs={FORCE_KEY: ids},
        )
        return body

    async def complete(self, request: Request) -> Completion:
        assert self._session is not None, "use OpenAIClient as an async context manager"
        path, body = self._body(request)
        url = self.settings.base_url.rstrip("/") + path
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                async with self._session.post(url, json=body) as resp:
                    if resp.status != 200:
                        detail = (await resp.text())[:500]
                        return _failed(request, started, f"HTTP {resp.status}: {detail}")
                    payload = await resp.json()
                return _parse(request, payload, started, self.settings.logprobs)
            except asyncio.TimeoutError:
                limit = self.settings.request_timeout_s
                return _failed(request, started, f"timeout after {limit:.0f}s")
            except (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError) as exc:
                attempt += 1
                if attempt > self.settings.connect_retries:
                    return _failed(request, started, f"connection error: {exc}")
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
            except (aiohttp.ClientError, ValueError, KeyError, TypeError) as exc:
                return _failed(request, started, f"bad response: {type(exc).__name__}: {exc}")


def _failed(request: Request, started: float, message: str) -> Completion:
    return Completion(
        item_id=request.item_id,
        text=None,
        latency_s=time.perf_counter() - started,
        error=message,
    )


def _parse(request: Request, payload: Mapping[str, Any], started: float, k: int) -> Completion:
    choice = payload["choices"][0]
    text = choice["message"]["content"] if request.messages is not None else choice["text"]
    usage = payload.get("usage") or {}
    trace, trace_error = None, None
    if request.forced_from is not None:
        # The forced trace is the whole answer: a malformed one is an infrastructure error.
        ids = request.prompt_ids or ()
        trace = logprobs.prompt_trace(choice.get("prompt_logprobs"), ids, request.forced_from, k)
    elif request.force_ids is not None:
        trace = logprobs.completion_trace(choice, max(1, k))
    elif k > 0:
        parse = logprobs.chat_trace if request.messages is not None else logprobs.completion_trace
        try:
            trace = parse(choice, k)
        except (ValueError, KeyError, TypeError) as exc:  # the answer itself is still good
            trace_error = f"{type(exc).__name__}: {exc}"
    return Completion(
        item_id=request.item_id,
        text=text if text is not None else "",
        prompt_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        finish_reason=choice.get("finish_reason"),
        latency_s=time.perf_counter() - started,
        trace=trace,
        trace_error=trace_error,
    )


async def run_all(
    client: OpenAIClient,
    requests: Iterable[Request],
    on_result: OnResult,
    concurrency: int,
) -> None:
    """Send all requests, at most ``concurrency`` at once, calling ``on_result`` as each ends.

    A fixed pool of workers pulling from one iterator keeps exactly ``concurrency`` requests
    in flight without creating a task per item up front (1 319 or 100 000 items alike); never
    more workers than requests (a concurrency of 10^8 for 3 items starts 3).
    """
    if isinstance(requests, Sized):
        concurrency = min(concurrency, len(requests))
    iterator = iter(requests)

    async def worker() -> None:
        for request in iterator:
            result = await client.complete(request)
            maybe = on_result(result)
            if maybe is not None:
                await maybe

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def tokenize_all(
    base_url: str,
    model: str,
    requests: Sequence[Request],
    concurrency: int,
    headers: Mapping[str, str] | None = None,
) -> dict[str, list[int] | str]:
    """Each request's prompt through the server's ``/tokenize``: token ids, or why not.

    Completions encode with special tokens (``add_special_tokens`` true, /tokenize's default
    for a prompt); a chat request's messages get the generation prompt, as the chat endpoint
    adds it."""
    url = base_url.rstrip("/") + "/tokenize"
    out: dict[str, list[int] | str] = {}
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(session: aiohttp.ClientSession, r: Request) -> None:
        body: dict[str, Any] = {"model": model}
        if r.messages is not None:
            body.update(messages=[dict(m) for m in r.messages], add_generation_prompt=True)
        else:
            body["prompt"] = r.text or ""
        async with gate:
            try:
                async with session.post(url, json=body) as resp:
                    if resp.status != 200:
                        detail = (await resp.text())[:300]
                        out[r.item_id] = f"/tokenize: HTTP {resp.status}: {detail}"
                        return
                    out[r.item_id] = [int(t) for t in (await resp.json())["tokens"]]
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as exc:
                out[r.item_id] = f"/tokenize: {type(exc).__name__}: {exc}"

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        await asyncio.gather(*(one(session, r) for r in requests))
    return out


async def get_json(base_url: str, path: str, timeout_s: float = 10.0) -> Any:
    """GET a JSON document from the server (``/v1/models``, ``/version``)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(base_url.rstrip("/") + path) as resp,
    ):
        resp.raise_for_status()
        return await resp.json()
