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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Request:
    """One prompt to send: ``text`` for a completion, ``messages`` for a chat request."""

    item_id: str
    text: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None


@dataclass(frozen=True)
class Completion:
    item_id: str
    text: str | None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    latency_s: float | None = None
    error: str | None = None


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
        if request.messages is not None:
            body["messages"] = [dict(m) for m in request.messages]
            return "/v1/chat/completions", body
        body["prompt"] = request.text
        return "/v1/completions", body

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
                return _parse(request, payload, started)
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


def _parse(request: Request, payload: Mapping[str, Any], started: float) -> Completion:
    choice = payload["choices"][0]
    text = choice["message"]["content"] if request.messages is not None else choice["text"]
    usage = payload.get("usage") or {}
    return Completion(
        item_id=request.item_id,
        text=text if text is not None else "",
        prompt_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        finish_reason=choice.get("finish_reason"),
        latency_s=time.perf_counter() - started,
    )


async def run_all(
    client: OpenAIClient,
    requests: Iterable[Request],
    on_result: OnResult,
    concurrency: int,
) -> None:
    """Send all requests, at most ``concurrency`` at once, calling ``on_result`` as each ends.

    A fixed pool of workers pulling from one iterator keeps exactly ``concurrency`` requests
    in flight without creating a task per item up front (1 319 or 100 000 items alike).
    """
    iterator = iter(requests)

    async def worker() -> None:
        for request in iterator:
            result = await client.complete(request)
            maybe = on_result(result)
            if maybe is not None:
                await maybe

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def get_json(base_url: str, path: str, timeout_s: float = 10.0) -> Any:
    """GET a JSON document from the server (``/v1/models``, ``/version``)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(base_url.rstrip("/") + path) as resp,
    ):
        resp.raise_for_status()
        return await resp.json()
