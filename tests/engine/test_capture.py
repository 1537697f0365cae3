"""Token capture (``--logprobs``): parsing what engines return, storing it with each sample,
saying so when an engine ignores it, and completing a run answered without it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from fake_openai import FakeOpenAI

from evalpipe import api
from evalpipe.engine import logprobs
from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions
from evalpipe.run.plan import check_logprobs
from evalpipe.store import open_store
from evalpipe.store.traces import read_traces, traced_items

# --- parsing ------------------------------------------------------------------------------


def test_a_completion_choice_becomes_a_trace_keeping_the_top_k_most_likely_first() -> None:
    choice = {
        "logprobs": {
            "tokens": ["token_id:7", "token_id:9"],
            "token_logprobs": [-0.5, -3.0],
            # The chosen token may be listed beside the top k (here 9 at rank 3 of k=2).
            "top_logprobs": [
                {"token_id:7": -0.5, "token_id:8": -1.2},
                {"token_id:1": -0.2, "token_id:2": -1.9, "token_id:9": -3.0},
            ],
        }
    }
    trace = logprobs.completion_trace(choice, k=2)
    assert trace is not None
    assert trace.token_ids.tolist() == [7, 9]
    assert trace.logprobs.tolist() == pytest.approx([-0.5, -3.0])
    assert trace.top_ids.tolist() == [[7, 8], [1, 2]]
    assert trace.top_logprobs.ravel().tolist() == pytest.approx([-0.5, -1.2, -0.2, -1.9])
    assert logprobs.completion_trace({"text": "x"}, 2) is None  # logprobs ignored


def test_a_chat_choice_and_padding_when_fewer_than_k_come_back() -> None:
    choice = {
        "logprobs": {
            "content": [
                {
                    "token": "token_id:5",
                    "logprob": -0.1,
                    "top_logprobs": [{"token": "token_id:5", "logprob": -0.1}],
                },
            ]
        }
    }
    trace = logprobs.chat_trace(choice, k=3)
    assert trace is not None and trace.k == 3
    assert trace.top_ids.tolist() == [[5, -1, -1]]
    assert np.isneginf(trace.top_logprobs[0, 1:]).all()


def test_token_strings_instead_of_ids_are_refused_by_name() -> None:
    choice = {"logprobs": {"tokens": [" The"], "token_logprobs": [-1.0], "top_logprobs": [{}]}}
    with pytest.raises(ValueError, match="instead of a token id"):
        logprobs.completion_trace(choice, 1)


def test_prompt_logprobs_give_the_forced_tokens_trace_whatever_their_rank() -> None:
    entries = [
        None,
        {"4": {"logprob": -0.3, "rank": 1}, "6": {"logprob": -1.5, "rank": 2}},
        {
            "1": {"logprob": -0.1, "rank": 1},
            "2": {"logprob": -2.8, "rank": 2},
            "3": {"logprob": -6.0, "rank": 40},
        },
    ]
    trace = logprobs.prompt_trace(entries, [10, 4, 3], start=1, k=2)
    assert trace is not None
    assert trace.token_ids.tolist() == [4, 3]
    assert trace.logprobs.tolist() == pytest.approx([-0.3, -6.0])
    assert trace.top_ids.tolist() == [[4, 6], [1, 2]]  # rank 40 is not in the top 2
    with pytest.raises(ValueError, match="positions"):
        logprobs.prompt_trace(entries, [10, 4], start=1, k=2)
    with pytest.raises(ValueError, match="own token"):
        logprobs.prompt_trace(entries, [10, 4, 99], start=1, k=2)


@dataclass
class _Logprob:  # vLLM's Logprob: attributes, not keys
    logprob: float
    rank: int | None


def test_vllm_output_objects_become_a_trace() -> None:
    per_token = [{3: _Logprob(-0.2, 1), 4: _Logprob(-1.7, 2)}, {9: _Logprob(-0.05, 1)}]
    trace = logprobs.output_trace(per_token, [3, 9], k=2)
    assert trace is not None and trace.token_ids.tolist() == [3, 9]
    assert trace.top_ids.tolist() == [[3, 4], [9, -1]]
    assert logprobs.output_trace(None, [3], 2) is None


def test_logprobs_option_is_checked() -> None:
    check_logprobs(0, ())
    check_logprobs(20, ())
    check_logprobs(32, ("max_logprobs=32",))
    with pytest.raises(EvalpipeError, match="max_logprobs=32"):
        check_logprobs(32, ())
    with pytest.raises(EvalpipeError, match="--logprobs must be a whole number from 0 to 64"):
        check_logprobs(-1, ())
    with pytest.raises(EvalpipeError, match="from 0 to 64, not 65"):
        check_logprobs(65, ("max_logprobs=65",))  # a stored trace's k is bounded too


# --- runs -----------------------------------------------------------------------------------


def _options(tmp_path: Path, url: str, **changes: object) -> RunOptions:
    options = RunOptions(
        task="arith",
        model="m",
        engine="endpoint",
        endpoint=url,
        limit=3,
        store=str(tmp_path / "s.db"),
        runs_dir=tmp_path / "runs",
        progress=False,
    )
    return replace(options, **changes)  # type: ignore[arg-type]


def test_a_run_stores_each_answers_token_ids_and_logprobs(tmp_path: Path) -> None:
    with FakeOpenAI(model="m", answer=" #### 7") as srv:
        run = api.run(_options(tmp_path, srv.url))
        assert all(b["logprobs"] == 5 and b["return_tokens_as_token_ids"] for b in srv.bodies)
    assert run.provenance["capture"] == {"logprobs": 5}
    with open_store(tmp_path / "s.db") as s:
        traces = read_traces(s, run.run_id)
        samples = {x.item_id: x for x in s.samples(run.run_id)}
    assert set(traces) == set(samples) and len(traces) == 3
    for item_id, stored in traces.items():
        assert stored.trace.token_ids.tolist() == [ord(c) for c in " #### 7"]
        assert stored.trace.top_ids[:, 1].tolist() == [0] * 7
        assert stored.start == samples[item_id].prompt_tokens  # positions in the whole sequence


def test_logprobs_0_asks_for_none_and_stores_none(tmp_path: Path) -> None:
    with FakeOpenAI(model="m") as srv:
        run = api.run(_options(tmp_path, srv.url, logprobs=0))
        assert all("logprobs" not in b for b in srv.bodies)
    with open_store(tmp_path / "s.db") as s:
        assert read_traces(s, run.run_id) == {}


@pytest.mark.parametrize("mode", ["ignore", "strings"])
def test_an_engine_without_usable_logprobs_is_said_once_and_nothing_is_stored(
    tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAI(model="m", logprobs_mode=mode) as srv:
        run = api.run(_options(tmp_path, srv.url))
    assert run.status == "finished" and run.n_errors == 0  # the answers are good
    err = capsys.readouterr().err
    assert err.count("notice: item") == 1  # one notice, then one count at the end
    assert "3 answers came back without token logprobs" in err
    with open_store(tmp_path / "s.db") as s:
        assert read_traces(s, run.run_id) == {}


def test_a_finished_run_without_traces_is_completed_by_generating_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAI(model="m", answer=" #### 7") as srv:
        first = api.run(_options(tmp_path, srv.url, logprobs=0))
        # Reused as a baseline is (--with-baseline): capture is not part of the config.
        again = api.run(_options(tmp_path, srv.url, reuse_finished=True))
        assert again.run_id == first.run_id and srv.completions == 6
    assert "generating them again with --logprobs 5" in capsys.readouterr().err
    with open_store(tmp_path / "s.db") as s:
        assert len(traced_items(s, first.run_id)) == 3
        assert s.get_run(first.run_id) == first  # the run and its answers are as they were


def test_a_regenerated_answer_that_differs_is_not_kept_as_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAI(model="m", answer=" #### 7") as srv:
        first = api.run(_options(tmp_path, srv.url, logprobs=0))
        srv.answer = " #### 8"  # a non-deterministic engine
        api.run(_options(tmp_path, srv.url, reuse_finished=True))
    assert "3 regenerated answers differed from the stored ones" in capsys.readouterr().err
    with open_store(tmp_path / "s.db") as s:
        assert traced_items(s, first.run_id) == set()
        assert {x.output for x in s.samples(first.run_id)} == {" #### 7"}
