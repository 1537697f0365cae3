"""Long-context tasks end to end on the real engine: Gemma-3-270M, tp2 against tp1.

DCP cannot run on CPU, so the pair is tp2 against tp1 and the shard period is given
(128 tokens, lengths 112/144/240/272): small enough for CI, and the same machinery a DCP run
gets from its own layout. What it pins down: the engine sees exactly the generated lengths,
both layouts get the same items, and compare and the dashboard place every prompt relative
to the boundaries. Both layouts run on the session's shared servers (tests/engine_servers.py).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from engine_servers import Served
from test_engine_e2e import cli, db_rows

pytestmark = pytest.mark.engine

GRID = ("--param", "period=128", "--param", "multiples=[1, 2]")


@pytest.mark.timeout(1800)  # may launch both shared Gemma servers first
def test_passkey_tp2_against_tp1_at_exact_lengths(
    gemma_tp1: Served,
    gemma_tp2: Served,
    workdir: dict[str, str],
) -> None:
    # Each layout runs on its own server, so the baseline goes first, on the tp1 server, with
    # the items --with-baseline would give it (its shard layout is the run's, tp2); the tp2
    # command then reuses that finished run instead of sending it to the tp2 server.
    base_proc = cli(
        "run", "passkey", *gemma_tp1.run_args(), "--shard-layout", "tp2", *GRID, "--json",
        env=workdir,
    )  # fmt: skip
    assert base_proc.returncode == 0, base_proc.stderr[-3000:]
    proc = cli(
        "run", "passkey", *gemma_tp2.run_args(), "--with-baseline", "--baseline-layout", "tp1",
        *GRID, "--json",
        env=workdir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    run, base = out["runs"][0], out["baseline_runs"][0]
    assert base["run_id"] == json.loads(base_proc.stdout)["run_id"]
    assert f"reusing finished run {base['run_id']}" in proc.stderr
    assert base["provenance"]["engine"]["base_url"] == gemma_tp1.url
    assert run["provenance"]["engine"]["base_url"] == gemma_tp2.url
    for r in (run, base):
        assert r["status"] == "finished" and r["n_samples"] == 12 and r["n_errors"] == 0
        assert r["data_source"].startswith("generator:passkey@1?")
        lengths = db_rows(
            workdir, "select prompt_tokens from samples where run_id = ?", r["run_id"]
        )
        # The engine's own prompt_tokens: exactly the grid, three depths each.
        assert Counter(t for (t,) in lengths) == {112: 3, 144: 3, 240: 3, 272: 3}
    assert run["data_sha256"] == base["data_sha256"]
    (c,) = out["comparisons"]
    assert c["n"] == 12 and c["baseline_run_id"] == base["run_id"]

    cmp = cli(
        "compare", run["run_id"], "--baseline-layout", "tp1", "--shard-period", "128", "--json",
        env=workdir,
    )  # fmt: skip
    assert cmp.returncode == 0, cmp.stderr
    c = json.loads(cmp.stdout)
    assert c["shard_period"] == 128 and c["shard_period_source"] == "given"
    groups = {g["label"]: g for g in c["shard_boundaries"]}
    assert set(groups) == {"1×128-16", "1×128+16", "2×128-16", "2×128+16"}
    assert all(g["n"] == 3 for g in groups.values())
    assert sum(g["run_correct"] for g in groups.values()) == run["n_correct"]
    assert sum(g["baseline_correct"] for g in groups.values()) == base["n_correct"]
    text = cli(
        "compare", run["run_id"], "--baseline-layout", "tp1", "--shard-period", "128",
        env=workdir,
    )  # fmt: skip
    assert "by position vs shard boundaries (period 128 tokens" in text.stdout
    print(text.stdout)  # the figures, for the CI log

    site = Path(workdir["EVALPIPE_RUNS_DIR"]).parent / "site"
    dash = cli(
        "dashboard", "--out", str(site), "--pair", "tp2=tp1", "--shard-period", "128",
        env=workdir,
    )  # fmt: skip
    assert dash.returncode == 0, dash.stderr
    page = (site / "compare" / f"{run['run_id']}.html").read_text()
    assert "By position relative to the shard boundaries" in page and "1×128+16" in page


def test_needle_multi_is_scored_per_needle(
    gemma_tp1: Served,
    workdir: dict[str, str],
) -> None:
    proc = cli(
        "run", "needle-multi", *gemma_tp1.run_args(),
        "--param", "period=256", "--param", "multiples=[1]", "--param", "n=2", "--json",
        env=workdir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout)
    assert run["status"] == "finished" and run["n_samples"] == 4
    rows = db_rows(
        workdir,
        "select prompt_tokens, target, output, correct, correct_by from samples where run_id = ?",
        run["run_id"],
    )
    assert sorted(t for t, *_ in rows) == [240, 240, 272, 272]
    for _, target, output, correct, correct_by in rows:
        verdicts = json.loads(correct_by)
        needles = target.split()
        assert len(needles) == 3
        found = set(re.findall(r"[0-9]+", output))
        assert [verdicts[f"numbers[{i}]"] for i in (1, 2, 3)] == [n in found for n in needles]
        assert bool(correct) == all(verdicts[f"numbers[{i}]"] for i in (1, 2, 3))
