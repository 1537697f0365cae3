"""A local sweep on the real CPU engine: one vLLM start serves every task of its (model,
layout), each cell stores the configuration `evalpipe run` would, and a rerun reuses it all
without starting an engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalpipe.engine.provenance import engine_versions
from evalpipe.options import RunOptions
from evalpipe.run.plan import plan, run_config
from evalpipe.store import open_store

pytestmark = pytest.mark.engine


def _sweep(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", "sweep", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **env},
    )


@pytest.mark.timeout(1500)
def test_one_engine_start_serves_every_task_and_a_rerun_starts_none(
    smollm2: str, shared_data: Path, workdir: dict[str, str]
) -> None:
    env = workdir
    args = ["--models", smollm2, "--tasks", "arith,gsm8k", "--layouts", "tp1"]
    args += ["--limit", "4", "--concurrency", "4", "--quiet", "--json"]
    first = _sweep(env, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.count("starting vLLM") == 1
    doc = json.loads(first.stdout)
    (group,) = doc["groups"]
    assert group["server_start_s"] > 0 and group["attempts"] == 1
    assert [(c["key"].split("/")[1], c["state"], c["n_samples"]) for c in group["cells"]] == [
        ("arith", "finished", 4),
        ("gsm8k", "finished", 4),
    ]
    # Each cell is the run `evalpipe run TASK --model M --layout tp1 --limit 4
    # --concurrency 4` would make: the same configuration hash, so they pair and reuse.
    with open_store(env["EVALPIPE_STORE"]) as store:
        for cell in group["cells"]:
            stored = store.get_run(cell["run_id"])
            alone = RunOptions(
                task=stored.config.task,
                model=smollm2,
                layout="tp1",
                limit=4,
                concurrency=4,
                data_dir=str(shared_data),
            )
            assert stored.status == "finished" and stored.config.engine_kind == "serve"
            assert run_config(plan(alone), engine_versions()).config_hash() == (
                stored.config.config_hash()
            )
            assert len(store.done_item_ids(stored.run_id)) == 4

    again = _sweep(env, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "starting vLLM" not in again.stderr
    redo = json.loads(again.stdout)
    assert [c["state"] for c in redo["groups"][0]["cells"]] == ["reused", "reused"]
    assert redo["groups"][0]["server_start_s"] is None
