"""The sticky-comment bot against a local fake of the GitHub endpoints it uses."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.github import GitHubClient, marker, post_comment, redact
from tests.fake_github import FakeGitHub

TOKEN = "s3cret-Token-0123456789abcdef"
REPO, PR = "octo/evalpipe", 7
NOW = 1_800_000_000.0
MARK = marker()


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN) as gh:
        gh.add_pr(REPO, PR)
        yield gh


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeGitHub) -> FakeGitHub:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    return fake


def client(fake: FakeGitHub, sleeps: list[float] | None = None, **kw: object) -> GitHubClient:
    sleep = sleeps.append if sleeps is not None else _no_sleep
    return GitHubClient(fake.url, TOKEN, sleep=sleep, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def calls(fake: FakeGitHub) -> list[str]:
    return [f"{r.method} {r.path.split('?')[0]}" for r in fake.requests]


def assert_token_only_in_auth_header(fake: FakeGitHub, *outputs: str) -> None:
    assert fake.requests
    for r in fake.requests:
        assert TOKEN not in r.path
        assert TOKEN.encode() not in r.body
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
        assert all(TOKEN not in v for k, v in r.headers.items() if k != "authorization")
    for out in outputs:
        assert TOKEN not in out


# --- the sticky comment -------------------------------------------------------------------


def test_first_run_creates_second_run_updates_the_same_comment(env: FakeGitHub) -> None:
    first = post_comment(REPO, PR, f"{MARK}\nfirst\n{MARK}")
    second = post_comment(REPO, PR, f"{MARK}\nsecond\n{MARK}")

    comments = env.comments[(REPO, PR)]
    assert len(comments) == 1
    cid = comments[0]["id"]
    assert first == f"created comment {cid}: {comments[0]['html_url']}"
    assert second == f"updated comment {cid}: {comments[0]['html_url']}"
    assert "second" in comments[0]["body"]
    base = f"/repos/{REPO}/issues"
    assert calls(env) == [
        "GET /user", f"GET {base}/{PR}/comments", f"POST {base}/{PR}/comments",
        "GET /user", f"GET {base}/{PR}/comments", f"PATCH {base}/comments/{cid}",
    ]  # fmt: skip
    assert_token_only_in_auth_header(env, first, second)


def test_marker_is_added_when_the_body_lacks_it(env: FakeGitHub) -> None:
    post_comment(REPO, PR, "plain body")
    post_comment(REPO, PR, "plain body, again")
    [only] = env.comments[(REPO, PR)]
    assert only["body"] == f"{MARK}\nplain body, again"


def test_marker_keys_keep_one_comment_per_key(env: FakeGitHub) -> None:
    for key in ("cuda", "ascend", "cuda"):
        post_comment(REPO, PR, f"report {key}", marker_key=key)
    bodies = sorted(c["body"] for c in env.comments[(REPO, PR)])
    assert bodies == [f"{marker('ascend')}\nreport ascend", f"{marker('cuda')}\nreport cuda"]


def test_sticky_comment_on_page_two_is_found_and_others_are_left_alone(
    fake: FakeGitHub,
) -> None:
    for i in range(130):
        fake.add_comment(REPO, PR, f"chatter {i}")
    # A person quoting the marker must not be taken for the bot's comment.
    quoted = fake.add_comment(REPO, PR, f"look: {MARK}", login="reviewer")
    ours = fake.add_comment(REPO, PR, f"{MARK}\nold", login="evalpipe-bot")
    for i in range(30):
        fake.add_comment(REPO, PR, f"more chatter {i}")

    done = client(fake).upsert_sticky_comment(REPO, PR, f"{MARK}\nnew", MARK)

    assert done == ("updated", ours["id"], ours["html_url"])
    assert ours["body"] == f"{MARK}\nnew"
    assert quoted["body"] == f"look: {MARK}"
    assert len(fake.comments[(REPO, PR)]) == 162
    gets = [r.path for r in fake.requests if r.method == "GET" and "comments" in r.path]
    assert gets == [
        f"/repos/{REPO}/issues/{PR}/comments?per_page=100",
        f"/repos/{REPO}/issues/{PR}/comments?per_page=100&page=2",
    ]
    assert not any(r.method == "POST" for r in fake.requests)


def test_actions_token_without_user_endpoint_matches_bot_comments_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeGitHub(
        token=TOKEN, login="github-actions[bot]", user_type="Bot", user_status=403
    ) as gh:
        gh.add_pr(REPO, PR)
        human = gh.add_comment(REPO, PR, f"{MARK} copied by hand", login="reviewer")
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        first = post_comment(REPO, PR, "v1", github_url=gh.url)
        second = post_comment(REPO, PR, "v2", github_url=gh.url)
        bot = [c for c in gh.comments[(REPO, PR)] if c["user"]["type"] == "Bot"]
    assert first.startswith("created") and second.startswith("updated")
    assert len(bot) == 1 and bot[0]["body"] == f"{MARK}\nv2"
    assert human["body"] == f"{MARK} copied by hand"


def test_comment_deleted_between_list_and_edit_is_recreated(fake: FakeGitHub) -> None:
    fake.add_comment(REPO, PR, f"{MARK}\nold", login="evalpipe-bot")
    fake.fail(404, method="PATCH")
    done = client(fake).upsert_sticky_comment(REPO, PR, f"{MARK}\nnew", MARK)
    assert done.action == "created"


# --- rate limits and retries --------------------------------------------------------------


def test_primary_rate_limit_waits_until_the_reset_header(fake: FakeGitHub) -> None:
    fake.fail(
        403,
        path_contains="/comments",
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 30)},
        body={"message": "API rate limit exceeded for user ID 1."},
    )
    sleeps: list[float] = []
    done = client(fake, sleeps).upsert_sticky_comment(REPO, PR, MARK, MARK)
    assert done.action == "created"
    assert sleeps == [31.0]  # to the reset, plus the second the header rounds away


def test_429_waits_for_retry_after(fake: FakeGitHub) -> None:
    fake.fail(429, method="POST", headers={"retry-after": "7"})
    sleeps: list[float] = []
    client(fake, sleeps).upsert_sticky_comment(REPO, PR, MARK, MARK)
    assert sleeps == [7.0]
    assert len(fake.comments[(REPO, PR)]) == 1


def test_secondary_rate_limit_without_headers_waits_a_minute(fake: FakeGitHub) -> None:
    fake.fail(403, body={"message": "You have exceeded a secondary rate limit."})
    sleeps: list[float] = []
    client(fake, sleeps).upsert_sticky_comment(REPO, PR, MARK, MARK)
    assert sleeps == [60.0]


def test_rate_limit_beyond_max_wait_fails_saying_when_to_retry(fake: FakeGitHub) -> None:
    fake.fail(
        403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 3600)}
    )
    with pytest.raises(EvalpipeError) as err:
        client(fake, [], max_wait_s=300).upsert_sticky_comment(REPO, PR, MARK, MARK)
    assert "2027-01-15 09:00:01 UTC" in err.value.message
    assert "again" in err.value.message
    assert fake.comments[(REPO, PR)] == []


def test_server_errors_are_retried_with_backoff(fake: FakeGitHub) -> None:
    fake.fail(500)
    fake.fail(502)
    sleeps: list[float] = []
    done = client(fake, sleeps).upsert_sticky_comment(REPO, PR, MARK, MARK)
    assert done.action == "created"
    assert sleeps == [1.0, 2.0]


def test_persistent_server_error_fails_without_leaking_the_echoed_token(
    fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        fake.fail(500, echo_auth=True)
    caplog.set_level(logging.DEBUG)
    c = client(fake, [], max_retries=2)
    with pytest.raises(EvalpipeError) as err:
        c.upsert_sticky_comment(REPO, PR, MARK, MARK)
    message = err.value.message
    assert "500" in message and "3 times" in message
    assert "Authorization: Bearer ***" in message  # the echo is there, scrubbed
    assert_token_only_in_auth_header(fake, message, str(err.value), repr(err.value))
    assert_token_only_in_auth_header(fake, caplog.text, repr(c), str(vars(c)))


def test_create_that_landed_despite_a_5xx_is_not_posted_twice(fake: FakeGitHub) -> None:
    fake.fail(502, method="POST", commit=True)
    sleeps: list[float] = []
    done = client(fake, sleeps).upsert_sticky_comment(REPO, PR, f"{MARK}\nbody", MARK)
    assert len(fake.comments[(REPO, PR)]) == 1
    assert done.action == "created"
    assert [r.method for r in fake.requests].count("POST") == 1
    assert sleeps == [1.0]


def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    sleeps: list[float] = []
    c = GitHubClient(f"http://127.0.0.1:{port}", TOKEN, max_retries=1, sleep=sleeps.append)
    with pytest.raises(EvalpipeError, match="cannot reach GitHub"):
        c.upsert_sticky_comment(REPO, PR, MARK, MARK)
    assert sleeps == [1.0]


# --- errors the user must fix -------------------------------------------------------------


def test_rejected_token_says_which_variable_and_permission(
    fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOT_TOKEN", "wrong-token")
    with pytest.raises(EvalpipeError) as err:
        post_comment(REPO, PR, "x", token_env="BOT_TOKEN", github_url=fake.url)
    assert "401" in err.value.message and "BOT_TOKEN" in err.value.message
    assert "pull-requests: write" in err.value.message
    assert "wrong-token" not in err.value.message


def test_unknown_pr_is_not_found(env: FakeGitHub) -> None:
    with pytest.raises(EvalpipeError, match=r"repo or PR not found \(or the token cannot see it\)"):
        post_comment(REPO, 999, "x")
    with pytest.raises(EvalpipeError, match="not found"):
        post_comment("octo/missing", PR, "x")


def test_forbidden_write_explains_permissions(fake: FakeGitHub) -> None:
    fake.fail(403, method="POST", body={"message": "Resource not accessible by integration"})
    with pytest.raises(EvalpipeError) as err:
        client(fake).upsert_sticky_comment(REPO, PR, MARK, MARK)
    assert "403" in err.value.message and "pull-requests: write" in err.value.message
    assert "Resource not accessible by integration" in err.value.message


def test_missing_token_names_the_variable(
    fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(EvalpipeError, match=r"\$GITHUB_TOKEN is empty"):
        post_comment(REPO, PR, "x", github_url=fake.url)
    assert fake.requests == []


@pytest.mark.parametrize("repo", ["octo", "octo/evalpipe/x", "../etc", "octo/ev al"])
def test_bad_repo_is_rejected_before_any_request(env: FakeGitHub, repo: str) -> None:
    with pytest.raises(EvalpipeError, match="OWNER/NAME"):
        post_comment(repo, PR, "x")
    assert env.requests == []


def test_dry_run_sends_nothing_and_returns_the_body(
    fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    out = post_comment(REPO, PR, "body", github_url=fake.url, dry_run=True, marker_key="k")
    assert out == f"{marker('k')}\nbody"
    assert fake.requests == []


# --- where the token may go ---------------------------------------------------------------


def test_enterprise_base_url_with_path_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGitHub(token=TOKEN, prefix="/api/v3") as gh:
        gh.add_pr(REPO, PR)
        for i in range(101):
            gh.add_comment(REPO, PR, f"chatter {i}")
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("GITHUB_API_URL", gh.url + "/")
        assert gh.url.endswith("/api/v3")
        first = post_comment(REPO, PR, "v1")
        second = post_comment(REPO, PR, "v2")
    assert first.startswith("created") and second.startswith("updated")
    assert all(r.path.startswith("/api/v3/") for r in gh.requests)
    assert any("page=2" in r.path for r in gh.requests)
    assert_token_only_in_auth_header(gh, first, second)


def test_pagination_link_to_another_host_is_refused(fake: FakeGitHub) -> None:
    for i in range(101):
        fake.add_comment(REPO, PR, f"chatter {i}")
    fake.link_base = "http://127.0.0.2:9"
    with pytest.raises(EvalpipeError, match="refusing to send the token"):
        client(fake).upsert_sticky_comment(REPO, PR, MARK, MARK)
    assert not any("page=2" in r.path for r in fake.requests)


def test_renamed_repo_redirect_is_followed_on_the_same_host_only(fake: FakeGitHub) -> None:
    fake.redirects["/repos/octo/old-name/"] = f"{fake.url}/repos/{REPO}/"
    done = client(fake).upsert_sticky_comment("octo/old-name", PR, MARK, MARK)
    assert done.action == "created" and len(fake.comments[(REPO, PR)]) == 1
    assert_token_only_in_auth_header(fake)

    fake.redirects["/repos/octo/old-name/"] = f"http://127.0.0.2:9/repos/{REPO}/"
    with pytest.raises(EvalpipeError, match="refusing to send the token"):
        client(fake).upsert_sticky_comment("octo/old-name", PR, MARK, MARK)


def test_plain_http_is_refused_except_on_loopback() -> None:
    with pytest.raises(EvalpipeError, match="plain http"):
        GitHubClient("http://github.example.com/api/v3", TOKEN)
    with pytest.raises(EvalpipeError, match="https://HOST"):
        GitHubClient("ftp://github.example.com", TOKEN)
    GitHubClient("http://localhost:8080/api/v3", TOKEN)


def test_client_repr_hides_the_token() -> None:
    c = GitHubClient("https://ghe.example.com/api/v3", TOKEN)
    assert TOKEN not in repr(c) and TOKEN not in str(vars(c))


def test_redact_scrubs_the_token_and_token_shapes() -> None:
    text = f"a {TOKEN} b Bearer xyz token {'f' * 40} ghp_{'A' * 36} the token expired"
    assert redact(text, TOKEN) == "a *** b Bearer *** token *** *** the token expired"
