"""A local stand-in for an OpenAI-compatible completions server (no engine).

Serves ``GET /v1/models`` (one model id) and ``POST /v1/completions``, answering every prompt
with ``answer`` — or with HTTP ``status`` (e.g. 500, an engine that died) when set. Requests
are counted so tests can tell whether anything was sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-answer (lm-eval giving up) is not a test failure


class FakeOpenAI:
    """``with FakeOpenAI(model="m") as srv: …`` — ``srv.url`` is the base URL."""

    def __init__(self, model: str, answer: str = " #### 0", status: int = 200) -> None:
        self.model = model
        self.answer = answer
        self.status = status
        self.completions = 0
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
                if self.path != "/v1/completions":
                    self._send(404, {"error": "not found"})
                    return
                fake.completions += 1
                if fake.status != 200:
                    self._send(fake.status, {"error": "the engine died"})
                    return
                prompts = body.get("prompt")
                n = len(prompts) if isinstance(prompts, list) else 1
                choices = [
                    {"index": i, "text": fake.answer, "finish_reason": "stop"} for i in range(n)
                ]
                self._send(200, {"choices": choices, "usage": {}})

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
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
