"""Checks before the engine starts: the model is there and vLLM accepts the configuration, so a
bad input costs seconds, not an engine launch, and leaves no failed run in the store.

The guard replaces the engine session: a test that reached it would have started vLLM. The
vLLM config check itself is the real installed vLLM (in a subprocess), never a server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalpipe import api
from evalpipe.engine import models, vllm_check
from evalpipe.errors import EvalpipeError
from evalpipe.layout import parse
from evalpipe.options import RunOptions
from evalpipe.store import open_store


class EngineStarted(AssertionError):
    """The run got as far as starting an engine: the input was not checked first."""


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise EngineStarted("the engine was started before the input was checked")

    monkeypatch.setattr("evalpipe.run.native.open_session", refuse)


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty verdict cache (and in-process memo), so the real check runs."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EVALPIPE_CACHE_DIR", str(cache))
    vllm_check.forget()
    yield cache
    vllm_check.forget()


def _options(tmp_path: Path, model: str, layout: str = "tp1", **kw: Any) -> RunOptions:
    return RunOptions(
        task="arith",
        model=model,
        layout=layout,
        limit=2,
        store=str(tmp_path / "store.db"),
        runs_dir=tmp_path / "runs",
        progress=False,
        **kw,
    )


def _no_run_stored(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    if db.exists():
        with open_store(str(db)) as store:
            assert store.list_runs() == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_model_path_is_refused_before_any_run(tmp_path: Path) -> None:
    missing = str(tmp_path / "models" / "SmolLM2-135M")
    with pytest.raises(EvalpipeError, match="does not exist") as err:
        api.run(_options(tmp_path, missing))
    assert missing in str(err.value)
    _no_run_stored(tmp_path)


def test_relative_path_under_an_existing_folder_is_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "models/foo" could be a hub id (org/name); "models" being a folder here says it is not.
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvalpipeError, match="does not exist"):
        api.run(_options(tmp_path, "models/foo"))
    _no_run_stored(tmp_path)


@pytest.mark.parametrize(("typo", "meant"), [("smolm2", "smollm2"), ("gemma3-270", "gemma3-270m")])
def test_typo_of_a_builtin_name_suggests_it(tmp_path: Path, typo: str, meant: str) -> None:
    with pytest.raises(EvalpipeError, match=f"did you mean {meant}") as err:
        api.run(_options(tmp_path, typo))
    assert "smollm2, gemma3-270m" in str(err.value)  # and every built-in name
    _no_run_stored(tmp_path)


def test_suggestions_are_close_matches() -> None:
    assert models.suggest("SmolLM2") == ["smollm2"]
    assert models.suggest("gemma-3-270m") == ["gemma3-270m"]
    assert models.suggest("llama-3-8b") == []


def test_uncached_hub_id_is_left_to_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # Online, the engine downloads it: not an input error, and vLLM cannot check it offline.
    assert models.where("Qwen/Qwen3-0.6B") == "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EvalpipeError, match="HF_HUB_OFFLINE"):
        models.where("Qwen/Qwen3-0.6B")
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen3-0.6B" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert models.where("Qwen/Qwen3-0.6B") == "cached"


def test_tp2_on_smollm2_is_refused_by_vllm_before_any_run(
    tmp_path: Path, smollm2: str, fresh_cache: Path
) -> None:
    # 9 attention heads over 2 TP ranks: a rule only vLLM's config knows (no layout rule).
    with pytest.raises(EvalpipeError, match="divisible") as err:
        api.run(_options(tmp_path, smollm2, layout="tp2"))
    message = str(err.value)
    assert "tp2" in message and "layout explain tp2" in message
    assert "Traceback" not in message
    _no_run_stored(tmp_path)


def test_with_baseline_checks_both_layouts_before_running_either(
    tmp_path: Path, smollm2: str, fresh_cache: Path
) -> None:
    # Otherwise the tp1 baseline would run for minutes before tp2 is refused.
    with pytest.raises(EvalpipeError, match="divisible"):
        api.run_with_baseline(_options(tmp_path, smollm2, layout="tp2"), "tp1")
    _no_run_stored(tmp_path)


def _launch(layout: str, model: str, **extra: Any) -> vllm_check.LaunchConfig:
    return vllm_check.LaunchConfig(parse(layout), model, extra)


@pytest.fixture
def no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, starting vLLM's config check fails the test (other children run)."""
    real = subprocess.run

    def guarded(argv: Any, *args: Any, **kwargs: Any) -> Any:
        if "evalpipe.engine.vllm_check" in list(argv):
            raise AssertionError("vLLM's config check ran")
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", guarded)


def test_accepted_config_is_remembered(
    smollm2: str, fresh_cache: Path, request: pytest.FixtureRequest
) -> None:
    tp1 = _launch("tp1", smollm2, enforce_eager=True, max_model_len=2048)
    accepted = vllm_check.VllmCheck(available=True, ok=True)
    assert vllm_check.check_before_launch([tp1]) == [accepted]
    # Later checks of the same configuration (the next --repeat, the next invocation) start
    # no child: an accepted verdict is kept in this process and in the user's cache.
    request.getfixturevalue("no_check")
    assert vllm_check.check_before_launch([tp1]) == [accepted]
    vllm_check.forget()
    assert vllm_check.check_before_launch([tp1]) == [accepted]
    assert len(list((fresh_cache / "vllm-check").glob("*.json"))) == 1


def test_one_child_checks_several_and_refusals_are_not_kept(
    smollm2: str, fresh_cache: Path
) -> None:
    # A run and its baseline in one child (vLLM imported once); the refused one is checked
    # again next time, since the fix may be in the model folder.
    tp1, tp2 = _launch("tp1", smollm2), _launch("tp2", smollm2)
    first, second = vllm_check.check_before_launch([tp1, tp2])
    assert first.ok and second.available and not second.ok
    assert second.message is not None and "divisible" in second.message
    assert len(list((fresh_cache / "vllm-check").glob("*.json"))) == 1


def test_bad_engine_argument_is_an_input_error(smollm2: str, fresh_cache: Path) -> None:
    with pytest.raises(EvalpipeError, match="not_an_engine_arg"):
        vllm_check.check_before_launch([_launch("tp1", smollm2, not_an_engine_arg=1)])


def test_without_vllm_the_check_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_cache: Path, no_check: None
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    real = vllm_check.importlib.util.find_spec
    monkeypatch.setattr(
        vllm_check.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else real(name, *a),
    )
    skipped = vllm_check.VllmCheck(available=False, ok=False, message="vllm is not installed")
    assert vllm_check.check_before_launch([_launch("tp2", str(folder))]) == [skipped]
    # The run goes on to the engine, whose launch says what is missing.
    with pytest.raises(EngineStarted):
        api.run(_options(tmp_path, str(folder)))


def test_endpoint_is_not_checked_and_imports_no_vllm(tmp_path: Path) -> None:
    # The endpoint's model is a served name (it may be anything) and its layout is declared;
    # a typo-like name, a missing path and tp2 all go to the server untouched.
    code = (
        "import sys, json\n"
        "from evalpipe.options import RunOptions\n"
        "from evalpipe.run.plan import precheck\n"
        "for model in ('smolm2', '/not/here', 'org/name'):\n"
        "    precheck(RunOptions(task='arith', model=model, layout='tp2', engine='endpoint',\n"
        "                        endpoint='http://127.0.0.1:9'))\n"
        "print(json.dumps(sorted(m for m in ('vllm', 'torch') if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "EVALPIPE_CACHE_DIR": str(tmp_path)},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_cli_typo_is_one_line_without_traceback(tmp_path: Path) -> None:
    # The CLI in a child process, its engine session replaced as above.
    code = (
        "import sys\n"
        "import evalpipe.run.native as native\n"
        "def refuse(*a, **k):\n"
        "    raise SystemExit('the engine was started before the input was checked')\n"
        "native.open_session = refuse\n"
        "from evalpipe.cli import main\n"
        "sys.exit(main(['run', 'arith', '--model', 'smolm2', '--limit', '2']))\n"
    )
    env = {**os.environ, "EVALPIPE_STORE": str(tmp_path / "s.db")}
    env["EVALPIPE_RUNS_DIR"] = str(tmp_path / "r")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "did you mean smollm2" in out.stderr
    assert not (tmp_path / "s.db").exists()


def test_cheap_errors_come_before_vllms_check(tmp_path: Path, smollm2: str, no_check: None) -> None:
    # A task typo or a bad --param is found in milliseconds, not after vLLM's import.
    with pytest.raises(EvalpipeError, match="--param"):
        api.run(_options(tmp_path, smollm2, layout="tp2", params=("n=[1,",)))
    with pytest.raises(EvalpipeError, match="task"):
        api.run(dataclasses.replace(_options(tmp_path, smollm2, layout="tp2"), task="arithh"))
    _no_run_stored(tmp_path)
