"""The canary and faulted runs end to end against OpenAI fakes (no engine): every arm run once
and reused on a rerun, faulted runs labelled and refused where they must be, request order,
the stored canaries the dashboard draws, and every bad input refused before anything runs.
The real engine's faults are in tests/engine/test_faults_engine.py."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from evalpipe import api
from evalpipe.canary.rows import stored_canaries
from evalpipe.engine.args import EngineArgs
from evalpipe.engine.session import FAULT_MARK, SessionSpec, _check_fault_plugin
from evalpipe.errors import EvalpipeError
from evalpipe.faults import parse_fault
from evalpipe.options import RunOptions
from evalpipe.store import open_store

GRID = """\
faults:
  - {kind: key-scale, sizes: [0.1, 0.5], period: 16}
benign:
  - request_order: reversed
"""


def _options(url: str, store: Path, **changes: object) -> RunOptions:
    base = RunOptions(
        task="arith",
        model="m",
        engine="endpoint",
        endpoint=url,
        limit=6,
        store=str(store),
        progress=False,
        logprobs=3,
    )
    return dataclasses.replace(base, **changes)


def test_a_canary_runs_each_arm_once_and_a_rerun_reuses_every_one(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    settings = api.CanarySettings(grid=str(grid), min_n=1)
    said: list[str] = []
    with FakeOpenAI("m", answer=" The answer is 3.") as srv:
        before = api.canary_dry_run(_options(srv.url, tmp_path / "s.db"), settings)
        assert not (tmp_path / "s.db").exists() and srv.completions == 0  # nothing stored, sent
        assert before.startswith("canary: 4 engine starts") and "0 reused" in before
        report = api.canary(_options(srv.url, tmp_path / "s.db"), settings, said.append)
        sent = srv.completions
        again = api.canary(_options(srv.url, tmp_path / "s.db"), settings, said.append)
        assert srv.completions == sent  # every arm reused: nothing generated twice
        after = api.canary_dry_run(_options(srv.url, tmp_path / "s.db"), settings)
    assert sent == 6 * 5  # clean, its repeat, two faults, one benign variant
    assert [r.label for r in report.rows] == [
        "fault: key-scale 0.1 p%16=15",
        "fault: key-scale 0.5 p%16=15",
        "reversed order",
    ]
    assert "0 new, 0 to resume, 5 reused" in after and report.clean_run in after
    assert [r.run_id for r in again.rows] == [r.run_id for r in report.rows]
    assert report.repeat_run and report.repeat_run != report.clean_run
    for r in report.rows:  # an endpoint only labels the fault: the fake answered the same
        assert r.n == 6 and r.identical == 1.0 and r.acc_delta == 0.0
        assert r.kl_mean == 0.0
    assert any(m.startswith("canary: 4 engine starts") for m in said)
    with open_store(str(tmp_path / "s.db")) as store:
        faults = sorted(r.config.fault or "" for r in store.list_runs() if r.config.fault)
    assert faults == [parse_fault(f"key-scale:size={s},period=16").canonical for s in (0.1, 0.5)]
    data = json.loads(json.dumps(api.canary_json(report)))
    assert [r["role"] for r in data["rows"]] == ["fault", "fault", "benign"]
    assert "key-scale 0.5" in api.format_canary(report)


def test_requests_go_out_in_reversed_order_when_asked(tmp_path: Path) -> None:
    with FakeOpenAI("m") as srv:
        api.run(_options(srv.url, tmp_path / "s.db", concurrency=1, request_order="reversed"))
        prompts = [b["prompt"] for b in srv.bodies]
        srv.bodies.clear()
        api.run(_options(srv.url, tmp_path / "s.db", concurrency=1))
        assert [b["prompt"] for b in srv.bodies] == prompts[::-1]


def test_stored_canaries_group_faults_under_their_clean_run_with_benign_variants(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s.db"
    fault = "key-scale:size=0.2,period=16"
    with (
        FakeOpenAI("m", answer=" The answer is 3.") as good,
        FakeOpenAI("m", answer=" The answer is 4.") as bad,
    ):
        clean = api.run(_options(good.url, store))
        api.run(_options(good.url, store, repeat_index=1))
        faulted = api.run(_options(bad.url, store, fault=fault))
        benign = api.run(_options(good.url, store, request_order="reversed"))
    with open_store(str(store)) as s:
        found = stored_canaries(s, s.list_runs())
        assert len(found) == 1 and found[0].clean.run_id == clean.run_id
        arms = {a.run.run_id: (a.role, a.label) for a in found[0].arms}
    assert arms == {
        faulted.run_id: ("fault", "fault: key-scale 0.2 p%16=15"),
        benign.run_id: ("benign", "reversed order"),
    }
    site = tmp_path / "site"
    api.dashboard(str(store), site)
    page = (site / "canary.html").read_text()
    assert "key-scale 0.2" in page and "benign: reversed order" in page
    assert "<svg" in page  # the dose-response charts
    index = (site / "index.html").read_text()
    assert faulted.run_id not in index  # a canary run is never an overview cell
    compare = (site / "compare" / f"{faulted.run_id}.html").read_text()
    assert "[fault: key-scale 0.2 p%16=15]" in compare


def test_a_clean_run_never_inherits_a_fault_from_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalpipe.run.plan import engine_settings, resolve_layout

    monkeypatch.setenv("EVALPIPE_FAULT", "key-scale:size=0.5")
    options = RunOptions(task="arith", model="m", platform="cpu")
    layout, platform = resolve_layout(options)
    _, env = engine_settings(options, layout, platform)
    assert env["EVALPIPE_FAULT"] == ""
    faulted = dataclasses.replace(options, fault="out-mix:size=0.1")
    _, env = engine_settings(faulted, layout, platform)
    assert env["EVALPIPE_FAULT"] == parse_fault("out-mix:size=0.1").canonical


def test_an_engine_whose_plugin_never_installed_the_fault_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "vllm.log"
    log.write_text(f"old launch\n{FAULT_MARK} key-scale:size=0.5\n")
    start = log.stat().st_size
    with log.open("a") as f:
        f.write("$ python -m vllm.entrypoints.openai.api_server …\nINFO loading\n")
    monkeypatch.setenv("VLLM_PLUGINS", "lora_filesystem_resolver")
    spec = SessionSpec(
        "serve", "m", EngineArgs({}), "tp1", log, env={"EVALPIPE_FAULT": "key-scale:size=0.5"}
    )
    with pytest.raises(EvalpipeError) as exc:
        _check_fault_plugin(spec, start)  # an earlier launch's line does not count
    assert "VLLM_PLUGINS='lora_filesystem_resolver' does not list 'evalpipe'" in str(exc.value)
    with log.open("a") as f:
        f.write(f"{FAULT_MARK} key-scale:size=0.5 in process 12\n")
    _check_fault_plugin(spec, start)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "arith", "--fault", "scale-keys:size=1"], "unknown fault kind 'scale-keys'"),
        (["run", "arith", "--fault", "key-scale:size=0.1,colour=red"], "unknown parameter"),
        (["canary", "--grid", "missing.yaml"], "cannot read the canary grid missing.yaml"),
        (["canary", "--max-starts", "3"], "needs 12 engine starts"),
    ],
)
def test_bad_faults_and_grids_are_refused_before_anything_runs(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = _cli(*args, "--store", str(tmp_path / "s.db"), "--model", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.db").exists()  # nothing stored, nothing started


def test_a_fault_the_model_cannot_take_is_refused_by_name(tmp_path: Path) -> None:
    model = tmp_path / "gpt2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    proc = _cli(
        "run",
        "arith",
        "--model",
        str(model),
        "--fault",
        "key-scale:size=0.2",
        "--store",
        str(tmp_path / "s.db"),
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "cannot apply to model" in proc.stderr and "GPT2LMHeadModel" in proc.stderr
    assert "Gemma3ForCausalLM" in proc.stderr and not (tmp_path / "s.db").exists()
