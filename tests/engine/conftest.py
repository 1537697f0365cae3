"""What the engine tests share beyond tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path, shared_data: Path) -> dict[str, str]:
    """The environment of a command run as a user would, offline, in its own store and runs
    folder, reading GSM8K from the shared data."""
    return {
        "EVALPIPE_STORE": str(tmp_path / "store.db"),
        "EVALPIPE_RUNS_DIR": str(tmp_path / "runs"),
        "EVALPIPE_DATA_DIR": str(shared_data),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
