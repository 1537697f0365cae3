"""Engine arguments parsed once (EngineArgs), rendered at the edge, stored as a mapping; runs
stored before (flag lists) migrate, pair with runs stored now, and still resume."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from legacy_store import as_schema_2

from evalpipe import api
from evalpipe.compare.pairing import find_baseline, non_layout_args, pairing_key
from evalpipe.engine.args import EngineArgs
from evalpipe.engine.session import Generation, SessionSpec, connect, http_session
from evalpipe.errors import EvalpipeError
from evalpipe.importers.jsonl import export_run, import_run
from evalpipe.layout import parse
from evalpipe.options import RunOptions
from evalpipe.records import (
    EXCHANGE_VERSION,
    engine_args_from_flags,
)
from evalpipe.store import open_store, schema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OLD_STORE = FIXTURES / "store-schema2.db"  # written by evalpipe at schema 2 (flag lists)
OLD_EXPORT = FIXTURES / "exchange-v1.jsonl"  # `runs export` of run old-tp1 from that store


# --- built once, rendered at the edge ------------------------------------------------------


def test_build_joins_layout_user_extras_and_cpu_defaults() -> None:
    args = EngineArgs.build(parse("tp2"), ["max-model-len=4096", "dtype=float32"], "cpu")
    assert args.values == {
        "distributed_executor_backend": "mp",
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 4096,
        "tensor_parallel_size": 2,
    }
    assert list(args.values) == sorted(args.values)
    # The user's choice wins over a platform default; no default off CPU.
    assert EngineArgs.build(parse("tp1"), ["enforce_eager=false"], "cpu").values == {
        "enforce_eager": False,
        "tensor_parallel_size": 1,
    }
    assert EngineArgs.build(parse("tp2"), [], "cuda").values == {"tensor_parallel_size": 2}
    # An endpoint is not evalpipe's to configure: only what the user stated.
    assert EngineArgs.build(parse("tp8"), ["dtype=half"], "generic", remote=True).values == {
        "dtype": "half"
    }


def test_bad_pairs_and_layout_keys_are_refused() -> None:
    with pytest.raises(EvalpipeError, match="KEY=VALUE"):
        EngineArgs.build(parse("tp1"), ["dtype"], "cpu")
    with pytest.raises(EvalpipeError, match="the layout sets it"):
        EngineArgs.build(parse("tp2"), ["tensor_parallel_size=4"], "cpu")


def test_rendered_as_serve_flags_and_llm_kwargs() -> None:
    args = EngineArgs.build(
        parse("tp2ep"),
        ["enable_prefix_caching=false", "max_model_len=4096", "kv_cache_dtype=fp8"],
        "cuda",
    )
    assert args.to_flags() == [
        "--enable-expert-parallel",
        "--no-enable-prefix-caching",
        "--kv-cache-dtype",
        "fp8",
        "--max-model-len",
        "4096",
        "--tensor-parallel-size",
        "2",
    ]
    assert args.to_kwargs() == {
        "enable_expert_parallel": True,
        "enable_prefix_caching": False,
        "kv_cache_dtype": "fp8",
        "max_model_len": 4096,
        "tensor_parallel_size": 2,
    }
    # The serve flags read back by the legacy reader give the same mapping (one format).
    assert engine_args_from_flags(args.to_flags()) == args.values


def test_non_layout_part_and_suggested_pairs() -> None:
    args = EngineArgs.build(parse("tp2"), ["dtype=float32", "revision='0123'"], "cpu")
    assert args.non_layout() == {"dtype": "float32", "enforce_eager": True, "revision": "0123"}
    # Eager is the CPU default, so a suggested command leaves it out; "0123" stays text.
    assert args.user_pairs() == ["dtype=float32", 'revision="0123"']
    assert args.as_pairs() == [
        "distributed_executor_backend=mp",
        "dtype=float32",
        "enforce_eager=true",
        'revision="0123"',
        "tensor_parallel_size=2",
    ]


def test_legacy_flag_lists_are_read_into_the_mapping() -> None:
    flags = ["--tensor-parallel-size", "2", "--enforce-eager", "--no-enable-prefix-caching"]
    flags += ["--cp-kv-cache-interleave-size=16", "--distributed-executor-backend", "mp"]
    assert engine_args_from_flags(flags) == {
        "cp_kv_cache_interleave_size": 16,
        "distributed_executor_backend": "mp",
        "enable_prefix_caching": False,
        "enforce_eager": True,
        "tensor_parallel_size": 2,
    }
    assert engine_args_from_flags([]) == {}


# --- sessions ------------------------------------------------------------------------------


def test_an_endpoint_session_exposes_its_base_url_and_generates(tmp_path: Path) -> None:
    from evalpipe.engine.client import Completion, Request

    spec = SessionSpec(
        kind="endpoint",
        model="m",
        args=EngineArgs(),
        label="tp1",
        log_path=tmp_path / "vllm.log",
        generation=Generation(sampling={"max_tokens": 8}, concurrency=2),
    )
    got: list[Completion] = []
    with FakeOpenAI(model="m", answer="42") as srv:
        with http_session(replace(spec, endpoint=srv.url + "/v1"), lambda _: None) as engine:
            assert engine.base_url == srv.url
            engine.generate([Request("1", text="a"), Request("2", text="b")], got.append)
            assert engine.report()["base_url"] == srv.url
        assert sorted((c.item_id, c.text) for c in got) == [("1", "42"), ("2", "42")]
        with pytest.raises(EvalpipeError, match="not 'other'"):
            connect(srv.url, "other", Generation())
    with (
        pytest.raises(EvalpipeError, match="no server URL"),
        http_session(replace(spec, kind="offline"), lambda _: None),
    ):
        pass


# --- stored before: migrated, paired, exported, resumed ------------------------------------


def test_a_schema_2_store_gets_structured_engine_args_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(OLD_STORE, path)
    with open_store(path) as s:
        assert s.migrations_applied == [
            "m003_structured_engine_args",
            "m004_token_traces",
            "m005_trace_answers_and_run_holders",
        ]
        tp1, tp2 = s.get_run("old-tp1"), s.get_run("old-tp2")
        assert tp1.config.engine_args == {
            "enable_prefix_caching": False,
            "enforce_eager": True,
            "max_model_len": 4096,
            "tensor_parallel_size": 1,
        }
        assert s.get_run("old-endpoint").config.engine_args == {"dtype": "float32"}
        # The hash column, which finds a run to resume, follows the stored form.
        found = s.find_unfinished(tp2.config.config_hash())
        assert found is not None and found.run_id == "old-tp2"
        assert len(s.samples("old-tp2")) == 2
        # A run planned today with the same options has exactly the stored configuration.
        now = EngineArgs.build(
            parse("tp2"), ["max_model_len=4096", "enable_prefix_caching=false"], "cpu"
        )
        assert replace(tp2.config, engine_args=now.values) == tp2.config
        # Runs stored before pair with each other and with runs stored now.
        assert pairing_key(tp1) == pairing_key(tp2)
        assert non_layout_args(tp2) == {
            "enable_prefix_caching": False,
            "enforce_eager": True,
            "max_model_len": 4096,
        }
        assert find_baseline(s, tp2, "tp1").run_id == "old-tp1"
        new_tp1 = replace(
            tp1.config, engine_args=EngineArgs.build(parse("tp1"), now_pairs(), "cpu").values
        )
        assert pairing_key(tp1.with_(config=new_tp1)) == pairing_key(tp2)
    with open_store(path) as s:
        assert s.migrations_applied == []


def now_pairs() -> list[str]:
    return ["max_model_len=4096", "enable_prefix_caching=false"]


def test_a_version_1_export_imports_and_round_trips_in_the_current_version(tmp_path: Path) -> None:
    with open_store(tmp_path / "a.db") as s:
        run_id = import_run(s, OLD_EXPORT.read_text().splitlines())
        run = s.get_run(run_id)
        assert run.config.engine_args["max_model_len"] == 4096
        first = io.StringIO()
        export_run(s, run_id, first)
    header = json.loads(first.getvalue().splitlines()[0])["run"]
    assert header["schema_version"] == EXCHANGE_VERSION == 4
    assert header["engine_args"] == dict(run.config.engine_args)
    with open_store(tmp_path / "b.db") as s:
        import_run(s, first.getvalue().splitlines())
        second = io.StringIO()
        export_run(s, run_id, second)
    assert second.getvalue() == first.getvalue()
    # The old file imported into a store migrated from the same run: the same run, no error.
    shutil.copy(OLD_STORE, tmp_path / "old.db")
    with open_store(tmp_path / "old.db") as s:
        assert import_run(s, OLD_EXPORT.read_text().splitlines()) == "old-tp1"


def test_a_run_stored_before_resumes_sending_only_missing_items(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    with FakeOpenAI(model="m", answer=" #### 0") as srv:
        options = RunOptions(
            task="arith",
            model="m",
            engine="endpoint",
            endpoint=srv.url,
            limit=4,
            store=store,
            runs_dir=tmp_path / "runs",
            progress=False,
            engine_args=("max_model_len=4096",),
            # Schema 2 had no traces: capture would (rightly) regenerate answered items too.
            logprobs=0,
        )
        first = api.run(options)
        assert first.status == "finished" and srv.completions == 4
        assert first.config.engine_args == {"max_model_len": 4096}
        with open_store(store) as s:
            with s.engine.begin() as conn:
                conn.execute(
                    schema.samples.delete().where(schema.samples.c.item_id.in_(["0", "1"]))
                )
            s.update_run(first.with_(status="aborted"))
            as_schema_2(s, first.run_id, ["--max-model-len", "4096"])
        # Found by its (migrated) config hash, with no --resume: only the 2 missing items.
        again = api.run(options)
        assert again.run_id == first.run_id and again.status == "finished"
        assert again.n_samples == 4 and srv.completions == 6
        with open_store(store) as s:
            assert s.get_run(first.run_id).config == first.config
            as_schema_2(s, first.run_id, ["--max-model-len", "4096"])
        # --resume ID of a run stored before: nothing to send, still the same run.
        resumed = api.run(replace(options, resume=first.run_id))
        assert resumed.run_id == first.run_id and srv.completions == 6
