"""The sticky pull-request comment: its hidden marker and the one call that upserts it."""

from __future__ import annotations

import os
import re

from evalpipe.errors import EvalpipeError
from evalpipe.github.client import API_URL_ENV, DEFAULT_API_URL, GitHubClient, check_repo

MARKER_NAME = "evalpipe:sticky"


_MARKER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def marker(key: str | None = None) -> str:
    """The hidden HTML comment that identifies the sticky comment (one per ``key``)."""
    if key is None:
        return f"<!-- {MARKER_NAME} -->"
    if not _MARKER_KEY.fullmatch(key):
        raise EvalpipeError(
            f"marker key {key!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return f"<!-- {MARKER_NAME}:{key} -->"


def post_comment(
    repo: str,
    pr: int,
    body: str,
    *,
    token_env: str = "GITHUB_TOKEN",
    github_url: str | None = None,
    dry_run: bool = False,
    marker_key: str | None = None,
) -> str:
    """Upsert ``body`` as the sticky comment on ``repo`` PR ``pr``; returns what happened.

    The marker for ``marker_key`` is prepended if the body lacks it. With ``dry_run`` nothing
    is sent (no token needed) and the body itself is returned, for the CLI to print.
    The API URL is ``github_url``, else ``$GITHUB_API_URL``, else api.github.com.
    """
    check_repo(repo)
    if int(pr) <= 0:
        raise EvalpipeError(f"--pr must be a pull request number, got {pr}")
    mark = marker(marker_key)
    if mark not in body:
        body = f"{mark}\n{body}"
    if dry_run:
        return body
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise EvalpipeError(
            f"${token_env} is empty: export a token that may write pull-request comments "
            f"(in Actions: `env: {token_env}: ${{{{ secrets.GITHUB_TOKEN }}}}`)"
        )
    base = github_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    client = GitHubClient(base, token, token_name=token_env)
    done = client.upsert_sticky_comment(repo, int(pr), body, mark)
    return f"{done.action} comment {done.comment_id}: {done.url}"
