"""The HTTP transport to GitHub's REST API: the client, its retries and its secrets.

Four REST calls (``GET /user``, list issue comments, create, update) over the standard
library's ``urllib``, on purpose. The maintained clients were weighed:

* githubkit (typed, retries, Enterprise base URL): the closest fit, but it installs
  ~25 MB / 3 400 generated pydantic modules (githubkit-schemas) plus pydantic, httpx, hishel
  and msgpack, none of them evalpipe dependencies; its retry loop sleeps inside the library
  (no injectable clock, a zero wait becomes 60 s) and waits for a rate-limit reset however
  far away it is, where a CI job should rather fail saying when to retry.
* PyGithub: LGPL-3.0, pulls PyNaCl and cryptography; its urllib3 ``Retry`` sleeps on its own
  and it throttles every write by default.
* ghapi: no retry or rate-limit handling, and its methods are generated at run time, so
  nothing is typed under ``mypy --strict``.

So ``evalpipe comment`` works on the core install, and this module owns every string that
can leave it: the token is never in a repr, is sent only in the ``Authorization`` header,
only to the configured host (links or redirects elsewhere and plain http except to
loopback are refused), and every message quoting a response is scrubbed by :func:`redact`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, NamedTuple

from evalpipe import __version__
from evalpipe.errors import EvalpipeError

DEFAULT_API_URL = "https://api.github.com"
API_URL_ENV = "GITHUB_API_URL"  # what GitHub Actions sets, Enterprise Server included
API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 100
SECONDARY_LIMIT_WAIT_S = 60.0  # GitHub: "wait at least one minute" when it gives no header
_REDIRECTS = (301, 302, 303, 307, 308)
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Credentials an echoing proxy or server could send back: "Bearer x", "token <40 chars>",
# and the shapes of GitHub's tokens. Scrubbed even when they are not ours.
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_TOKENISH = re.compile(
    r"(?i)\b(bearer|token)\s+[A-Za-z0-9_.\-]{20,}|\b(bearer)\s+\S+"
    r"|\bgh[pousr]_[A-Za-z0-9]{16,}|\bgithub_pat_\w{16,}"
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Secret:
    """Holds the token so that no repr, str or log of the client can show it."""

    value: str = field(repr=False)


def redact(text: str, secret: str | None = None) -> str:
    """``text`` without ``secret`` or anything shaped like a GitHub token."""
    if secret:
        text = text.replace(secret, "***")
    return _TOKENISH.sub(lambda m: f"{m.group(1) or m.group(2) or ''} ***".lstrip(), text)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def message(self) -> str:
        """GitHub's error ``message`` (or the start of the body), on one line."""
        try:
            data = self.json()
        except ValueError:
            data = self.body.decode("utf-8", "replace")
        text = str(data.get("message", "")) if isinstance(data, dict) else str(data)
        return " ".join(text.split())[:300]


class Upserted(NamedTuple):
    action: Literal["created", "updated"]
    comment_id: int
    url: str


class _RetryablePost(EvalpipeError):
    """A create lost to a 5xx or a dropped connection: it may have landed, so look again."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would forward the Authorization header to wherever a redirect points.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str]:
    return parts.scheme.lower(), parts.netloc.lower()


def _next_link(header: str | None) -> str | None:
    for part in (header or "").split(","):
        m = re.match(r"\s*<([^>]+)>\s*;(.*)", part)
        if m and re.search(r'\brel="?next"?', m.group(2)):
            return m.group(1)
    return None


class GitHubClient:
    """A small GitHub REST client: retries 5xx with backoff, waits out rate limits.

    ``sleep`` and ``clock`` are injectable so tests check the waits without waiting.
    A rate-limit wait longer than ``max_wait_s`` fails at once, saying when to retry.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        token: str | None = None,
        *,
        token_name: str = "GITHUB_TOKEN",
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_wait_s: float = 300.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base = base_url.strip().rstrip("/")
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise EvalpipeError(f"GitHub API URL must look like https://HOST[/api/v3]: {base!r}")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise EvalpipeError(f"refusing to send the token over plain http to {parts.netloc}")
        self._token = _Secret(token or "")
        self.token_name, self.max_retries, self.backoff_s = token_name, max_retries, backoff_s
        self.max_wait_s, self.timeout_s, self.sleep, self.clock = (
            max_wait_s,
            timeout_s,
            sleep,
            clock,
        )
        self._opener = urllib.request.build_opener(_NoRedirect)

    # --- transport --------------------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        if not path_or_url.startswith(("http://", "https://")):
            return self.base_url + path_or_url
        # Links and redirects come from the server: only follow them on our own host.
        base, url = urllib.parse.urlsplit(self.base_url), urllib.parse.urlsplit(path_or_url)
        if _origin(url) != _origin(base) or not url.path.startswith(base.path):
            raise EvalpipeError(
                f"GitHub pointed to {url.netloc}, outside {self.base_url}; "
                "refusing to send the token there"
            )
        return path_or_url

    def _send(self, method: str, url: str, payload: Any) -> Response:
        headers = {
            "Accept": "application/vnd.github+json",
            "Content-Type": "application/json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": f"evalpipe/{__version__}",
        }
        if self._token.value:
            headers["Authorization"] = f"Bearer {self._token.value}"
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as resp:
                return Response(resp.status, _lower(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read() if exc.fp is not None else b""
            return Response(exc.code, _lower(exc.headers.items()), body)

    def request(
        self,
        method: str,
        path_or_url: str,
        payload: Any = None,
        *,
        ok: tuple[int, ...] = (200, 201),
        retry_server_errors: bool = True,
    ) -> Response:
        """One API call with retries; a status outside ``ok`` becomes an EvalpipeError."""
        url = self._url(path_or_url)
        path = urllib.parse.urlsplit(url).path
        retries = redirects = 0
        while True:
            try:
                resp: Response | None = self._send(method, url, payload)
            except OSError as exc:  # URLError, refused connections and timeouts
                resp, reason = None, str(getattr(exc, "reason", exc))
            if resp is not None and resp.status < 500:
                wait = self._rate_limit_wait(resp)
                if wait is None and resp.status in ok:
                    return resp
                if wait is None and resp.status in _REDIRECTS and redirects < 3:
                    url = self._url(urllib.parse.urljoin(url, resp.headers.get("location", "")))
                    redirects += 1
                    continue
                if wait is None:
                    raise self._error(method, path, resp)
                if wait > self.max_wait_s or retries >= self.max_retries:
                    raise self._rate_limited(wait)
                logger.warning("GitHub rate limit on %s %s; waiting %.0f s", method, path, wait)
                self.sleep(wait)
                retries += 1
                continue
            what = redact(
                f"cannot reach GitHub at {self.base_url} ({method} {path}): {reason}"
                if resp is None
                else f"GitHub answered {resp.status} to {method} {path} ({resp.message()})",
                self._token.value,
            )
            if not retry_server_errors:  # a create that failed this way may have landed
                raise _RetryablePost(what) from None
            if retries >= self.max_retries:
                raise EvalpipeError(
                    f"{what}, {retries + 1} times: GitHub may be degraded or unreachable; "
                    "run `evalpipe comment` again later"
                ) from None
            self._backoff(retries, what)
            retries += 1

    def _backoff(self, retries: int, what: str) -> None:
        delay = min(self.backoff_s * 2**retries, 60.0)
        logger.warning("%s; retrying in %.0f s", what, delay)
        self.sleep(delay)

    def _rate_limit_wait(self, resp: Response) -> float | None:
        """Seconds to wait if ``resp`` says the rate limit is hit, else None."""
        if resp.status not in (403, 429):
            return None
        h = resp.headers
        if "retry-after" in h:  # secondary limits: seconds or an HTTP date
            value = h["retry-after"].strip()
            if value.isdigit():
                return float(value)
            try:
                return max(parsedate_to_datetime(value).timestamp() - self.clock(), 0.0)
            except (TypeError, ValueError):
                return SECONDARY_LIMIT_WAIT_S
        if h.get("x-ratelimit-remaining") == "0" and h.get("x-ratelimit-reset", "").isdigit():
            # The reset is in whole seconds: one more so the retry never lands just before it.
            return max(int(h["x-ratelimit-reset"]) - self.clock(), 0.0) + 1.0
        if resp.status == 429 or "rate limit" in resp.message().lower():
            return SECONDARY_LIMIT_WAIT_S
        return None

    def _rate_limited(self, wait: float) -> EvalpipeError:
        at = datetime.fromtimestamp(self.clock() + wait, tz=timezone.utc)
        return EvalpipeError(
            f"GitHub rate limit reached for this token; it lifts at {at:%Y-%m-%d %H:%M:%S} UTC "
            f"(in {wait:.0f} s, longer than the {self.max_wait_s:.0f} s evalpipe waits). "
            "Run `evalpipe comment` again after that."
        )

    def _error(self, method: str, path: str, resp: Response) -> EvalpipeError:
        message = redact(resp.message(), self._token.value)
        said = f" (GitHub: {message})" if message else ""
        hint = {
            401: f"GitHub rejected the token (401){said}: check that {self.token_name} holds a "
            "valid, unexpired token with `pull-requests: write` (or `issues: write`)",
            403: f"GitHub refused {method} {path} (403){said}: the token lacks permission. In "
            "Actions grant `permissions: pull-requests: write`; pull requests from forks get a "
            "read-only token",
            404: f"repo or PR not found (or the token cannot see it): {method} {path} (404). "
            "Check --repo OWNER/NAME and --pr N, and the token's access to private repos",
        }
        return EvalpipeError(
            hint.get(resp.status, f"GitHub answered {resp.status} to {method} {path}{said}")
        )

    # --- endpoints --------------------------------------------------------------------

    def current_user(self) -> str | None:
        """The token's login, or None for tokens that may not ask (Actions' GITHUB_TOKEN)."""
        resp = self.request("GET", "/user", ok=(200, 403, 404))
        login = resp.json().get("login") if resp.status == 200 else None
        return str(login) if login else None

    def list_issue_comments(self, repo: str, pr: int) -> Iterator[dict[str, Any]]:
        """Comments on the PR's conversation, oldest first, following ``Link: rel="next"``."""
        url = f"/repos/{check_repo(repo)}/issues/{int(pr)}/comments?per_page={PER_PAGE}"
        for _ in range(MAX_PAGES):
            resp = self.request("GET", url, ok=(200,))
            if not isinstance(page := resp.json(), list):
                raise EvalpipeError(f"GitHub sent no comment list for {repo}#{pr}")
            yield from page
            if (next_url := _next_link(resp.headers.get("link"))) is None:
                return
            url = next_url
        raise EvalpipeError(f"{repo}#{pr} has over {MAX_PAGES * PER_PAGE} comments; giving up")

    def find_sticky(
        self, repo: str, pr: int, marker: str, author: str | None
    ) -> dict[str, Any] | None:
        """The oldest comment carrying ``marker`` that this token may edit.

        With a known login, only that user's comments count; without one (an Actions
        token cannot read ``/user``), only bots' — never a person's comment that quotes it.
        """
        for c in self.list_issue_comments(repo, pr):
            user = c.get("user") or {}
            mine = user.get("login") == author if author else user.get("type") == "Bot"
            if mine and marker in (c.get("body") or ""):
                return c
        return None

    def upsert_sticky_comment(self, repo: str, pr: int, body: str, marker: str) -> Upserted:
        """Edit this bot's comment marked ``marker`` on the PR, or create it."""
        if marker not in body:
            raise EvalpipeError(f"the comment body lacks its marker {marker}")
        check_repo(repo)
        author, posted, attempt = self.current_user(), False, 0
        while True:
            found = self.find_sticky(repo, pr, marker, author)
            if found is not None:
                path = f"/repos/{repo}/issues/comments/{int(found['id'])}"
                resp = self.request("PATCH", path, {"body": body}, ok=(200, 404))
                if resp.status == 200:  # 404: deleted since we listed it, so create anew
                    return _upserted("created" if posted else "updated", resp)
            path, posted = f"/repos/{repo}/issues/{int(pr)}/comments", True
            try:
                resp = self.request("POST", path, {"body": body}, retry_server_errors=False)
                return _upserted("created", resp)
            except _RetryablePost as exc:
                # A create that failed with 5xx may have landed: re-list before posting
                # again, or a flaky GitHub would leave two sticky comments.
                if attempt >= self.max_retries:
                    raise EvalpipeError(f"{exc.message}; run `evalpipe comment` again") from None
                self._backoff(attempt, exc.message)
                attempt += 1


def _upserted(action: Literal["created", "updated"], resp: Response) -> Upserted:
    data = resp.json()
    return Upserted(action, int(data["id"]), str(data["html_url"]))


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def check_repo(repo: str) -> str:
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise EvalpipeError(f"--repo must be OWNER/NAME, got {repo!r}")
    return repo
