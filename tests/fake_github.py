"""A local HTTP stand-in for the GitHub REST endpoints evalpipe.github uses.

Implements ``GET /user``, listing issue comments with ``per_page``/``page`` and absolute
``Link`` headers, creating and editing comments (only the author may edit, as on GitHub),
behind an optional path prefix as on GitHub Enterprise (``/api/v3``). Failures can be
queued (rate limits, 5xx, 401, …), and every request is recorded with its headers and body
so tests can check exactly what left the client, token included.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NOT_FOUND = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: bytes


@dataclass
class Failure:
    """An injected answer for the next request matching ``method`` and ``path_contains``.

    ``echo_auth`` puts the request's Authorization header in the body (a leaky proxy);
    ``commit`` performs the request first, then answers with the failure anyway.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    method: str | None = None
    path_contains: str | None = None
    echo_auth: bool = False
    commit: bool = False


class FakeGitHub:
    """``with FakeGitHub(token="t") as gh: gh.add_pr("o/r", 1); …`` — ``gh.url`` is the base."""

    def __init__(
        self,
        token: str = "test-token",
        prefix: str = "",
        login: str = "evalpipe-bot",
        user_type: str = "User",
        user_status: int = 200,
    ) -> None:
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.login = login
        self.user_type = user_type
        self.user_status = user_status  # 403 mimics Actions' GITHUB_TOKEN on /user
        self.link_base: str | None = None  # to make Link headers point elsewhere
        # Path prefix (after the API prefix) → absolute URL prefix answered with a 301,
        # as GitHub does for a renamed repository.
        self.redirects: dict[str, str] = {}
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self.comments: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.fake = self  # type: ignore[attr-defined]
        # A short poll so shutdown() at the end of each test does not cost half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.origin}{self.prefix}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- state ------------------------------------------------------------------------

    def add_pr(self, repo: str, pr: int) -> None:
        self.comments.setdefault((repo, pr), [])

    def add_comment(
        self, repo: str, pr: int, body: str, login: str = "someone", user_type: str = "User"
    ) -> dict[str, Any]:
        with self._lock:
            return self._create(repo, pr, body, login, user_type)

    def fail(self, status: int, **kwargs: Any) -> None:
        self.failures.append(Failure(status, **kwargs))

    def _create(self, repo: str, pr: int, body: str, login: str, user_type: str) -> dict[str, Any]:
        cid = self._next_id
        self._next_id += 1
        comment = {
            "id": cid,
            "node_id": f"IC_{cid}",
            "url": f"{self.url}/repos/{repo}/issues/comments/{cid}",
            "html_url": f"https://github.example/{repo}/pull/{pr}#issuecomment-{cid}",
            "issue_url": f"{self.url}/repos/{repo}/issues/{pr}",
            "body": body,
            "user": {"login": login, "id": hash(login) % 10**6, "type": user_type},
            "created_at": "2026-11-28T00:00:00Z",
            "updated_at": "2026-11-28T00:00:00Z",
            "author_association": "NONE",
        }
        self.comments[(repo, pr)].append(comment)
        return comment

    # --- serving ----------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.requests.append(Recorded(method, raw_path, headers, body))
            failure = self._take_failure(method, raw_path)
            if failure is not None and not failure.commit:
                return self._failure_answer(failure, headers)
            answer = self._route(method, raw_path, headers, body)
            return answer if failure is None else self._failure_answer(failure, headers)

    def _take_failure(self, method: str, path: str) -> Failure | None:
        for i, f in enumerate(self.failures):
            if (f.method in (None, method)) and (
                f.path_contains is None or f.path_contains in path
            ):
                return self.failures.pop(i)
        return None

    def _failure_answer(
        self, f: Failure, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        body = f.body if f.body is not None else {"message": f"injected {f.status}"}
        if f.echo_auth:
            body = {"message": f"upstream said: Authorization: {headers.get('authorization')}"}
        return f.status, dict(f.headers), body

    def _route(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        parts = urllib.parse.urlsplit(raw_path)
        if not parts.path.startswith(self.prefix + "/"):
            return 404, {}, NOT_FOUND
        path = parts.path[len(self.prefix) :]
        for old, new in self.redirects.items():
            if path.startswith(old):
                query = f"?{parts.query}" if parts.query else ""
                return 301, {"Location": new + path[len(old) :] + query}, {"message": "Moved"}
        if headers.get("authorization") not in (f"Bearer {self.token}", f"token {self.token}"):
            return 401, {}, {"message": "Bad credentials"}
        segs = path.strip("/").split("/")
        if method == "GET" and segs == ["user"]:
            if self.user_status != 200:
                return self.user_status, {}, {"message": "Resource not accessible by integration"}
            return 200, {}, {"login": self.login, "id": 1, "type": self.user_type}
        if len(segs) == 6 and segs[0] == "repos" and segs[3] == "issues" and segs[5] == "comments":
            key = (f"{segs[1]}/{segs[2]}", int(segs[4]))
            if key not in self.comments:
                return 404, {}, NOT_FOUND
            if method == "GET":
                return self._page(key, parts.path, urllib.parse.parse_qs(parts.query))
            if method == "POST":
                text = json.loads(body)["body"]
                return 201, {}, self._create(key[0], key[1], text, self.login, self.user_type)
        if len(segs) == 6 and segs[:1] == ["repos"] and segs[3:5] == ["issues", "comments"]:
            repo = f"{segs[1]}/{segs[2]}"
            for (r, _), comments in self.comments.items():
                for c in comments:
                    if r == repo and c["id"] == int(segs[5]) and method == "PATCH":
                        if c["user"]["login"] != self.login:
                            return 403, {}, {"message": "Must have admin rights to Repository."}
                        c["body"] = json.loads(body)["body"]
                        c["updated_at"] = "2026-11-28T01:00:00Z"
                        return 200, {}, c
        return 404, {}, NOT_FOUND

    def _page(
        self, key: tuple[str, int], path: str, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], Any]:
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = int(query.get("page", ["1"])[0])
        items = self.comments[key]
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        base = self.link_base or self.origin
        links = []
        if page < last:
            links.append(f'<{base}{path}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}{path}?per_page={per_page}&page={last}>; rel="last"')
        return 200, ({"Link": ", ".join(links)} if links else {}), chunk


class _Handler(BaseHTTPRequestHandler):
    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake: FakeGitHub = self.server.fake  # type: ignore[attr-defined]
        status, extra, payload = fake.handle(self.command, self.path, headers, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-RateLimit-Limit", "5000")
        if "x-ratelimit-remaining" not in {k.lower() for k in extra}:
            self.send_header("X-RateLimit-Remaining", "4999")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass
