"""Where evalpipe keeps files it builds once per machine (models, data): the user cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$EVALPIPE_CACHE_DIR``, else the platform's user cache dir (``~/.cache/evalpipe``)."""
    env = os.environ.get("EVALPIPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("evalpipe"))


def cached_data_dir() -> Path:
    """Data built by ``evalpipe data fetch``; searched after ``EVALPIPE_DATA_DIR``."""
    return cache_dir() / "data"
