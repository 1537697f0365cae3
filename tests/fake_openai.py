"""A local stand-in for an OpenAI-compatible completions server (no engine).

Serves ``GET /v1/models`` (one model id) and ``POST /v1/completions``, answering every prompt
with ``answer`` — or with HTTP ``status`` (e.g. 500, an engine that died) when set. Requests
are counted so tests can tell whether anything was sent, and their bodies kept.

Asked for ``logprobs`` (``logprobs_mode="ids"``), it answers in vLLM's shape with one token per
character of the answer (id = the character's code point, logprob −0.1) and a runner-up
(id 0, −2.5) in every top list; ``"ignore"`` leaves them out as a server that ignores the
field would, ``"strings"`` returns token strings although ids were asked for. ``usage``
reports one prompt token per prompt character.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

_S = TypeVar("_S", bound="JsonServer")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-answer (lm-eval giving up) is not a test failure


class JsonServer:
    """A loopback HTTP server in a thread speaking JSON: ``GET /v1/models`` lists ``model``,
    and every POST goes to :meth:`post` (``(status, body)``; 404 for a path it does not
    serve). ``with Server(…) as srv: …`` — ``srv.url`` is the base URL."""

    def __init__(self, model: str) -> None:
        self.model = model
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": fake.model}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                self._send(*fake.post(self.path, body))

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return 404, {"error": "not found"}

    def __enter__(self: _S) -> _S:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeOpenAI(JsonServer):
    """``with FakeOpenAI(model="m") as srv: …`` — ``srv.url`` is the base URL."""

    def __init__(
        self,
        model: str,
        answer: str = " #### 0",
        status: int = 200,
        logprobs_mode: str = "ids",
        delay_s: float = 0.0,
    ) -> None:
        super().__init__(model)
        self.delay_s = delay_s
        self.answer = answer
        self.status = status
        self.logprobs_mode = logprobs_mode
        self.completions = 0
        self.bodies: list[dict[str, Any]] = []

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path != "/v1/completions":
            return 404, {"error": "not found"}
        if self.delay_s:
            time.sleep(self.delay_s)
        self.completions += 1
        self.bodies.append(body)
        if self.status != 200:
            return self.status, {"error": "the engine died"}
        prompts = body.get("prompt")
        n = len(prompts) if isinstance(prompts, list) else 1
        choices = [{"index": i, "text": self.answer, "finish_reason": "stop"} for i in range(n)]
        usage: dict[str, Any] = {}
        if isinstance(prompts, str):
            usage = {"prompt_tokens": len(prompts), "completion_tokens": len(self.answer)}
        if body.get("logprobs") and self.logprobs_mode != "ignore":
            for choice in choices:
                choice["logprobs"] = self.logprobs(self.answer)
        return 200, {"choices": choices, "usage": usage}

    def logprobs(self, text: str) -> dict[str, Any]:
        """vLLM's completion ``logprobs`` for ``text``, one token per character."""
        names = [
            f"tok{c}" if self.logprobs_mode == "strings" else f"token_id:{ord(c)}" for c in text
        ]
        runner_up = "!" if self.logprobs_mode == "strings" else "token_id:0"
        return {
            "tokens": names,
            "token_logprobs": [-0.1] * len(text),
            "top_logprobs": [{name: -0.1, runner_up: -2.5} for name in names],
            "text_offset": list(range(len(text))),
        }
