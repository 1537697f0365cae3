"""The evalpipe CLI in a subprocess, as the engine tests call it: exit 0 asserted (stderr's tail
shown otherwise) and its last output line read as the JSON it printed (``--json`` prints one
line per run, so with ``--repeat`` the last is the last run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def evalpipe_json(*args: str, env: dict[str, str], timeout: float = 900) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "evalpipe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.splitlines()[-1]))
