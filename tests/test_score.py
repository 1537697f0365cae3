"""``evalpipe score`` (teacher-forced scoring) against a fake vLLM server that returns prompt
logprobs (tests/fake_forced.py): the requests sent, the traces stored, resumption, the floor,
errors stored with their reason, and the refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders import run_config
from fake_forced import (
    BOS,
    FakeForced,
    alternatives,
    fake_chat_tokens,
    fake_logprob,
    fake_tokens,
)

from evalpipe import api
from evalpipe.cli import main
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run, RunConfig, Sample
from evalpipe.run.forcing import prompt_request
from evalpipe.store import Store, open_store
from evalpipe.store.traces import put_traces, read_trace_errors, read_traces
from evalpipe.tasks.prompts import Prompt
from evalpipe.traces import DECODE, StoredTrace, trace_of

MODEL = "m"
PROMPTS = {"0": "What is 2+2?", "1": "Name a colour.", "2": "Count to three."}
FORCED = {"0": [60, 61, 62], "1": [70, 71], "2": [80, 81, 82, 83]}


def _config(layout: str, **changes: Any) -> RunConfig:
    fields: dict[str, Any] = {
        "model": MODEL,
        "engine_kind": "endpoint",
        "platform": "generic",
        "engine_args": {},
        "prompt_hash": "ph",
    }
    return run_config(layout, **{**fields, **changes})


def _decode(run_id: str, item: str, ids: list[int], start: int, k: int = 3) -> StoredTrace:
    tops = [[(t, -0.1), *((a, -2.0) for a in range(2, 1 + k))] for t in ids]
    return StoredTrace(run_id, item, DECODE, start, trace_of(ids, [-0.1] * len(ids), tops, k))


def add_run(
    store: Store,
    run_id: str,
    config: RunConfig,
    *,
    traces: bool = True,
    failed: tuple[str, ...] = (),
    status: str = "finished",
    starts: dict[str, int] | None = None,
) -> Run:
    """A finished run of the three prompts, with decode traces of ``FORCED`` (items in
    ``failed`` are infrastructure errors without a trace)."""
    run = Run(run_id, config, status, "2026-12-01T00:00:00+00:00", n_items=len(PROMPTS))
    prompts = {i: Prompt(i, text) for i, text in PROMPTS.items()}
    samples = [
        Sample(
            run_id,
            i,
            prompts[i].prompt_hash,
            None if i in failed else "out",
            "4",
            None if i in failed else True,
            prompt_tokens=len(fake_tokens(PROMPTS[i])),
            error="HTTP 500" if i in failed else None,
        )
        for i in PROMPTS
    ]
    texts = {q.prompt_hash: q.canonical_text() for q in prompts.values()}
    store.create_run(run, samples, texts)
    if traces:
        starts = starts or {}
        put_traces(
            store,
            [
                _decode(run_id, i, FORCED[i], starts.get(i, len(fake_tokens(PROMPTS[i]))))
                for i in PROMPTS
                if i not in failed
            ],
        )
    return run


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "s.db")


def _score(db: str, run: str, against: str, **kw: Any) -> Any:
    """``score`` on the prefill path unless ``path`` says otherwise: most of these tests are
    about prompt-logprob scoring (the default path, forced-decode, has its own tests)."""
    return api.score(run, against, store=db, progress=False, **{"path": "prefill", **kw})


def _forced_bodies(fake: FakeForced) -> dict[str, dict[str, Any]]:
    """The completion bodies sent, by the item whose forced ids end them."""
    out = {}
    for body in fake.bodies:
        for item, ids in FORCED.items():
            if body["prompt"] == fake_tokens(PROMPTS[item]) + ids:
                out[item] = body
    return out


def test_requests_carry_prompt_and_forced_ids_and_traces_are_stored(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
        add_run(s, "cand", _config("tp2"))
    with FakeForced(MODEL, shift=0.5) as cand_srv, FakeForced(MODEL) as base_srv:
        report = _score(db, "cand", "base", endpoint=cand_srv.url, baseline_endpoint=base_srv.url)
        sent = _forced_bodies(cand_srv)
        assert len(cand_srv.bodies) == 3 and set(sent) == set(PROMPTS)
        for body in sent.values():
            assert body["max_tokens"] == 1 and body["prompt_logprobs"] == 3
        assert len(base_srv.bodies) == 3
    assert [(t.run_id, t.role, t.scored, t.already) for t in report.targets] == [
        ("cand", "run", 3, 0),
        ("base", "baseline", 3, 0),
    ]
    assert report.k == 3 and report.n_errors == 0
    with open_store(db) as s:
        got = read_traces(s, "cand", "base")
        own = read_traces(s, "base", "base")
    assert set(got) == set(own) == set(PROMPTS)
    for item, ids in FORCED.items():
        start = len(fake_tokens(PROMPTS[item]))
        t = got[item]
        assert t.start == start and t.source == "base"
        assert t.trace.token_ids.tolist() == ids
        want = [fake_logprob(start + j, tok, 0.5) for j, tok in enumerate(ids)]
        assert np.allclose(t.trace.logprobs, want, atol=1e-6)
        assert t.trace.top_ids[:, 0].tolist() == ids  # the fake ranks the forced token first
        assert t.trace.top_ids[0, 1] == alternatives(start, 3)[0]
        assert np.allclose(
            own[item].trace.logprobs, [fake_logprob(start + j, x) for j, x in enumerate(ids)]
        )
    text = api.format_score(report)
    assert "next: evalpipe compare cand --baseline base" in text
    assert "run cand (tp2): 3 of 3 items scored now" in text


def test_a_second_call_resumes_and_sends_only_what_is_missing(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
        add_run(s, "cand", _config("tp1", repeat_index=1))
        # A crash after one stored trace: only the other two are sent.
        put_traces(s, [dataclasses.replace(_decode("cand", "1", FORCED["1"], 15), source="base")])
    with FakeForced(MODEL) as srv:
        report = _score(db, "cand", "base", endpoint=srv.url)
        assert len(srv.bodies) == 2 + 3  # cand's two left, then base's own three
        assert set(_forced_bodies(srv)) == set(PROMPTS)
        tokenized = len(srv.tokenized)
        again = _score(db, "cand", "base", endpoint=srv.url)
        assert len(srv.bodies) == 5 and len(srv.tokenized) == tokenized  # no session at all
    # RUN is a repeat of BASELINE: one session (no --baseline-endpoint needed) scores both.
    assert [(t.run_id, t.scored, t.already) for t in report.targets] == [
        ("cand", 2, 1),
        ("base", 3, 0),
    ]
    assert [(t.scored, t.already) for t in again.targets] == [(0, 3), (0, 3)]


def test_items_the_baseline_errored_on_are_left_out(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"), failed=("2",))
    with FakeForced(MODEL) as srv:
        report = _score(db, "base", "base", endpoint=srv.url)
        assert set(_forced_bodies(srv)) == {"0", "1"}
    assert [(t.role, t.items, t.scored) for t in report.targets] == [("run", 2, 2)]


def test_a_request_longer_than_the_context_is_an_error_with_the_reason(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
    # Item 2's prompt is 16 tokens + 4 forced + 1 new: past a 19-token context.
    with FakeForced(MODEL, max_model_len=19) as srv:
        with pytest.raises(EvalpipeError, match=r"1 of 3 teacher-forced items failed"):
            _score(db, "base", "base", endpoint=srv.url)
        report = _score(db, "base", "base", endpoint=srv.url, max_error_rate=0.5)
    with open_store(db) as s:
        assert set(read_traces(s, "base", "base")) == {"0", "1"}
        errors = read_trace_errors(s, "base", "base")
    assert set(errors) == {"2"}
    assert "maximum context length is 19" in errors["2"]
    assert "prompt 16 + 4 forced tokens" in errors["2"]
    # The retry sent only item 2 again, and it failed again the same way.
    assert [(t.scored, t.already, list(t.errors)) for t in report.targets] == [(0, 2, ["2"])]


def test_a_prompt_that_tokenizes_differently_is_never_sent(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"), starts={"0": 5})
    with FakeForced(MODEL) as srv:
        report = _score(db, "base", "base", endpoint=srv.url, max_error_rate=1.0)
        assert set(_forced_bodies(srv)) == {"1", "2"} and len(srv.bodies) == 2
    reason = report.targets[0].errors["0"]
    assert "tokenizes the prompt to 13 tokens" in reason and "generated from 5" in reason


def test_the_floor_scores_the_baselines_tokens_on_each_repeat(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
        add_run(s, "rep", _config("tp1", repeat_index=1), traces=False)
        add_run(s, "cand", _config("tp2"))
    with FakeForced(MODEL) as cand_srv, FakeForced(MODEL) as base_srv:
        no_floor = _score(
            db,
            "cand",
            "base",
            endpoint=cand_srv.url,
            baseline_endpoint=base_srv.url,
            floor=False,
        )
        assert [t.role for t in no_floor.targets] == ["run", "baseline"]
        report = _score(db, "cand", "base", endpoint=cand_srv.url, baseline_endpoint=base_srv.url)
        assert len(cand_srv.bodies) == 3 and len(base_srv.bodies) == 6
    assert [(t.run_id, t.role, t.scored) for t in report.targets] == [
        ("cand", "run", 0),
        ("base", "baseline", 0),
        ("rep", "repeat", 3),
    ]
    with open_store(db) as s:
        assert set(read_traces(s, "rep", "base")) == set(PROMPTS)
        assert read_traces(s, "rep") == {}  # the repeat's own decode traces are not made up


def test_refusals_say_why(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
        add_run(s, "other", _config("tp2", model_fingerprint="sha256:other"))
        add_run(s, "prompts", _config("tp2", prompt_hash="ph2"))
        add_run(s, "bare", _config("tp1", seed=3), traces=False)
        add_run(s, "busy", _config("tp2", seed=4), status="running")
        add_run(s, "served", _config("tp2", seed=5))
    with FakeForced(MODEL) as srv:
        with pytest.raises(EvalpipeError, match=r"different models.*across tokenizers"):
            _score(db, "other", "base", endpoint=srv.url)
        with pytest.raises(EvalpipeError, match="did not answer the same prompts"):
            _score(db, "prompts", "base", endpoint=srv.url)
        with pytest.raises(
            EvalpipeError, match="baseline bare has no token traces: rerun it with --logprobs 5"
        ):
            _score(db, "base", "bare", endpoint=srv.url)
        with pytest.raises(EvalpipeError, match="run busy is running, not finished"):
            _score(db, "busy", "base", endpoint=srv.url)
        # An endpoint run's engine cannot be started by evalpipe: each side needs its URL.
        with pytest.raises(EvalpipeError, match="pass --endpoint URL"):
            _score(db, "served", "base")
        # Checked before any engine starts: nothing is sent for RUN either.
        with pytest.raises(EvalpipeError, match="pass --baseline-endpoint URL"):
            _score(db, "served", "base", endpoint=srv.url)
        assert srv.bodies == [] and srv.tokenized == []
        with pytest.raises(EvalpipeError, match="--logprobs must be a whole number from 1 to 64"):
            _score(db, "served", "base", endpoint=srv.url, logprobs=0)
        with pytest.raises(EvalpipeError, match="above vLLM's default cap of 20"):
            _score(db, "served", "base", endpoint=srv.url, logprobs=21)


def test_a_server_that_ignores_prompt_logprobs_stores_nothing(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
    with (
        FakeForced(MODEL, prompt_logprobs=False) as srv,
        pytest.raises(EvalpipeError, match="without prompt logprobs"),
    ):
        _score(db, "base", "base", endpoint=srv.url)
    with open_store(db) as s:
        assert read_traces(s, "base", "base") == {}
        assert read_trace_errors(s, "base", "base") == {}


def test_logprobs_option_sets_k(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
    with FakeForced(MODEL) as srv:
        report = _score(db, "base", "base", endpoint=srv.url, logprobs=5)
        assert {b["prompt_logprobs"] for b in srv.bodies} == {5}
    assert report.k == 5
    with open_store(db) as s:
        assert read_traces(s, "base", "base")["0"].trace.k == 5


def test_chat_prompts_are_sent_as_messages() -> None:
    messages = ({"role": "user", "content": "hi"},)
    stored = Prompt("0", None, messages).canonical_text()
    request = prompt_request("0", stored)
    assert request.messages == messages and request.text is None
    assert prompt_request("1", "[1, 2]").text == "[1, 2]"
    assert prompt_request("2", "plain").text == "plain"
    assert fake_chat_tokens(messages)[0] == BOS


def test_the_cli_prints_the_summary_and_the_next_command(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
    with FakeForced(MODEL) as srv:
        code = main(
            ["score", "base", "--against", "base", "--endpoint", srv.url, "--store", db, "--quiet"]
        )
    out = capsys.readouterr().out
    assert code == 0
    # RUN = BASELINE: one target, the run scoring its own tokens.
    assert [line for line in out.splitlines() if line.startswith("  ")] == [
        "  run base (tp1): 3 of 3 items scored now, 0 already stored, 0 errors"
    ]
    # Nothing to compare a run with itself: no `compare base --baseline base`, which compare
    # refuses (a hint must work when followed), but what to do instead.
    assert "evalpipe compare" not in out
    assert out.rstrip().endswith("score a run of another layout against it")


def test_concurrency_defaults_to_the_runs_and_can_be_lowered(db: str, tmp_path: Path) -> None:
    from evalpipe.run.score_engine import engine_spec

    owner = Run("r", _config("tp1", concurrency=64, engine_kind="serve"), "finished", "t")
    assert engine_spec(owner, None, "--endpoint", 5).generation.concurrency == 64
    lowered = engine_spec(owner, None, "--endpoint", 5, concurrency=4, base_dir=tmp_path)
    assert lowered.generation.concurrency == 4 and lowered.generation.logprobs == 5
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
    with pytest.raises(EvalpipeError, match="--concurrency must be a whole number from 1 to 1024"):
        _score(db, "base", "base", endpoint="http://127.0.0.1:9", concurrency=0)


def test_limit_scores_the_first_items_in_dataset_order_on_every_side(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
    with FakeForced(MODEL) as srv:
        report = _score(db, "base", "base", endpoint=srv.url, limit=2)
        first = len(srv.bodies)
        with open_store(db) as s:
            assert sorted(read_traces(s, "base", "base")) == ["0", "1"]
        _score(db, "base", "base", endpoint=srv.url)  # the rest, later
        assert len(srv.bodies) > first
    with open_store(db) as s:
        assert sorted(read_traces(s, "base", "base")) == sorted(PROMPTS)
    assert report.targets[0].scored == 2
    with pytest.raises(EvalpipeError, match="--limit must be a whole number from 1 to"):
        _score(db, "base", "base", endpoint="http://127.0.0.1:9", limit=0)


def test_engine_args_apply_to_every_scoring_session_and_layout_keys_are_refused(
    tmp_path: Path,
) -> None:
    from evalpipe.run.score_engine import engine_spec

    config = _config("tp1", engine_kind="serve", engine_args={"dtype": "float32"})
    owner = Run("r", config, "finished", "t")
    spec = engine_spec(owner, None, "--endpoint", 5, extra_args=("max_num_batched_tokens=1024",))
    assert spec.args.values["max_num_batched_tokens"] == 1024
    assert spec.args.values["dtype"] == "float32"  # the stored ones stay
    with pytest.raises(EvalpipeError, match="layout sets it"):
        engine_spec(owner, None, "--endpoint", 5, extra_args=("tensor_parallel_size=2",))


def test_scoring_a_faulted_run_re_creates_its_fault_and_a_clean_one_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A canary run's engine is re-created with its fault (its forced scores would otherwise
    be a clean engine's); a clean run's never inherits one from the shell."""
    from evalpipe.run.score_engine import engine_spec

    fault = "key-scale:size=0.2,period=128,offset=127,width=1,threshold=0,target=k"
    monkeypatch.setenv("EVALPIPE_FAULT", "out-mix:size=0.5")
    faulted = Run("f", _config("tp1", engine_kind="serve", fault=fault), "finished", "t")
    assert engine_spec(faulted, None, "--endpoint", 5).env["EVALPIPE_FAULT"] == fault
    clean = Run("c", _config("tp1", engine_kind="serve"), "finished", "t")
    assert engine_spec(clean, None, "--endpoint", 5).env["EVALPIPE_FAULT"] == ""


def test_forced_decode_generates_the_baselines_ids_and_compare_reads_them(db: str) -> None:
    """The decode path of teacher forcing: each item's prompt ids with the baseline's ids to
    force (never appended to the prompt), traces under decode:BASELINE, every position
    compared by compare's forced-decode path."""
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
        add_run(s, "run", _config("tp2"))
    with FakeForced(MODEL) as srv, FakeForced(MODEL, shift=0.01) as other:
        report = _score(
            db, "run", "base", endpoint=other.url, baseline_endpoint=srv.url, path="forced-decode"
        )
        bodies = other.bodies
    assert report.source == "decode:base" and report.n_errors == 0
    sent = {tuple(b["vllm_xargs"]["evalpipe_force"]): b["prompt"] for b in bodies}
    assert sent == {tuple(FORCED[i]): fake_tokens(PROMPTS[i]) for i in PROMPTS}
    with open_store(db) as s:
        traces = read_traces(s, "run", "decode:base")
        assert read_traces(s, "run", "base") == {}  # nothing on the prefill path
    assert {i: t.trace.token_ids.tolist() for i, t in traces.items()} == FORCED
    (c,) = api.compare(db, ["run"], baseline="base", force=True)
    assert c.tokens is not None
    path = c.tokens.paths["forced-decode"]
    assert path.n_tokens == sum(map(len, FORCED.values()))  # every position, no cascade
    assert "forced" in c.tokens.unavailable  # the prefill path was not scored


def test_a_server_without_the_forcing_processor_is_refused_with_the_flag(db: str) -> None:
    with open_store(db) as s:
        add_run(s, "base", _config("tp1"))
    with FakeForced(MODEL, forcing=False) as srv, pytest.raises(EvalpipeError) as exc:
        _score(db, "base", "base", endpoint=srv.url, path="forced-decode")
    assert "--logits-processors evalpipe.engine.plugin.forcing:ForceTokens" in str(exc.value)
    with open_store(db) as s:
        assert read_traces(s, "base", "decode:base") == {}  # nothing half-made stored


def test_forced_ids_outside_the_vocabulary_are_refused_never_scored(
    db: str, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"vocab_size": 70}')  # items 1 and 2 force ids >= 70
    with open_store(db) as s:
        add_run(s, "base", _config("tp1", model=str(model)))
    with FakeForced(str(model)) as srv:
        report = _score(
            db, "base", "base", endpoint=srv.url, path="forced-decode", max_error_rate=1.0
        )
        sent = [b["vllm_xargs"]["evalpipe_force"] for b in srv.bodies]
    assert sent == [FORCED["0"]]
    (target,) = report.targets
    assert set(target.errors) == {"1", "2"}
    assert "outside the scoring model's vocabulary of 70" in target.errors["1"]


def test_the_prefill_chunk_fits_the_vocabulary_rows_in_memory() -> None:
    """Gemma-3's 262 144-token vocabulary costs 3 MiB of prompt logprobs a position: 20 GiB
    available give 2 560 positions, tp2 half of it; a vocabulary too large even for 256
    positions is refused with the forced-decode path to use instead."""
    from evalpipe.run.score_engine import prefill_chunk

    gib = 2**30
    assert prefill_chunk(262_144, 20 * gib) == 2560
    assert prefill_chunk(262_144, 20 * gib, ranks=2) == 1280
    assert prefill_chunk(49_152, 64 * gib) == 8192  # capped
    assert prefill_chunk(None, 20 * gib) is None and prefill_chunk(262_144, None) is None
    with pytest.raises(EvalpipeError, match="--path forced-decode"):
        prefill_chunk(262_144, gib)
