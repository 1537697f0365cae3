"""The HTTP client against a local OpenAI-protocol server that misbehaves on purpose.

The real engine is exercised in test_engine_e2e.py; here a tiny aiohttp server produces the
failures a real one rarely shows on demand (500s, dropped connections, slow answers) and
counts requests in flight, so retry and concurrency rules are checked exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from evalpipe.engine.client import ClientSettings, Completion, OpenAIClient, Request, run_all


class FakeServer:
    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: dict[str, int] = {}
        self.bodies: list[dict[str, Any]] = []
        self.behaviour: Callable[[str, int], str] = lambda prompt, n: "ok"

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        prompt = body.get("prompt") or body["messages"][-1]["content"]
        n = self.calls[prompt] = self.calls.get(prompt, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            mode = self.behaviour(prompt, n)
            if mode == "500":
                return web.Response(status=500, text="engine exploded")
            if mode == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=200)
            if mode == "slow":
                await asyncio.sleep(2)
            text = f"answer to {prompt}. The answer is 4."
            choice: dict[str, Any] = {"finish_reason": "stop"}
            if "messages" in body:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return web.json_response(
                {"choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}
            )
        finally:
            self.in_flight -= 1


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeServer, str]]:
    fake = FakeServer()
    app = web.Application()
    app.router.add_post("/v1/completions", fake.completions)
    app.router.add_post("/v1/chat/completions", fake.completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def settings(base: str, **kw: Any) -> ClientSettings:
    defaults: dict[str, Any] = {
        "base_url": base,
        "model": "m",
        "sampling": {"temperature": 0.0, "max_tokens": 16, "seed": 0},
        "stop": ["Q:"],
        "concurrency": 4,
        "request_timeout_s": 5.0,
    }
    defaults.update(kw)
    return ClientSettings(**defaults)


async def collect(s: ClientSettings, requests: list[Request]) -> dict[str, Completion]:
    results: dict[str, Completion] = {}

    def on_result(c: Completion) -> None:
        results[c.item_id] = c

    async with OpenAIClient(s) as client:
        await run_all(client, requests, on_result, s.concurrency)
    return results


async def test_keeps_exactly_concurrency_requests_in_flight(
    server: tuple[FakeServer, str],
) -> None:
    fake, base = server
    reqs = [Request(str(i), text=f"q{i}") for i in range(40)]
    results = await collect(settings(base, concurrency=8), reqs)
    assert len(results) == 40
    assert fake.max_in_flight == 8
    assert all(r.error is None and r.output_tokens == 7 for r in results.values())
    body = fake.bodies[0]
    assert body["stop"] == ["Q:"] and body["temperature"] == 0.0 and body["seed"] == 0


async def test_http_error_is_an_error_not_an_answer_and_not_retried(
    server: tuple[FakeServer, str],
) -> None:
    fake, base = server
    fake.behaviour = lambda prompt, n: "500" if prompt == "bad" else "ok"
    results = await collect(settings(base), [Request("0", text="bad"), Request("1", text="ok")])
    assert results["0"].text is None
    assert results["0"].error is not None and results["0"].error.startswith("HTTP 500")
    assert fake.calls["bad"] == 1
    assert results["1"].error is None


async def test_dropped_connection_is_retried(server: tuple[FakeServer, str]) -> None:
    fake, base = server
    fake.behaviour = lambda prompt, n: "drop" if n == 1 else "ok"
    results = await collect(settings(base), [Request("0", text="flaky")])
    assert results["0"].error is None
    assert fake.calls["flaky"] == 2


async def test_timeout_is_an_infrastructure_error(server: tuple[FakeServer, str]) -> None:
    fake, base = server
    fake.behaviour = lambda prompt, n: "slow"
    results = await collect(settings(base, request_timeout_s=0.5), [Request("0", text="x")])
    assert results["0"].error is not None and "timeout" in results["0"].error
    assert fake.calls["x"] == 1


async def test_chat_requests_use_messages(server: tuple[FakeServer, str]) -> None:
    fake, base = server
    msgs = ({"role": "user", "content": "2+2?"},)
    results = await collect(settings(base), [Request("0", messages=msgs)])
    assert results["0"].text == "answer to 2+2?. The answer is 4."
    assert fake.bodies[0]["messages"] == [{"role": "user", "content": "2+2?"}]


async def test_unreachable_server_reports_connection_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    s2 = settings(f"http://127.0.0.1:{port}", connect_retries=1)
    results = await collect(s2, [Request("0", text="x")])
    assert results["0"].error is not None and "connection error" in results["0"].error
