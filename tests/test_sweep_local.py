"""The local executor end to end against OpenAI fakes (no engine): cells, reuse, resume after
a killed driver, retries, the summary and the CLI. The real engine's sweep is in
tests/engine/test_sweep_engine.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from evalpipe import api
from evalpipe.cli import main
from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions
from evalpipe.store import open_store
from evalpipe.sweep.local import run_local

ROOT = Path(__file__).resolve().parents[1]


class SlowFake(FakeOpenAI):
    """Answers after ``delay_s``: a kill lands while a cell is half done."""

    def __init__(self, model: str, delay_s: float) -> None:
        super().__init__(model)
        self.delay_s = delay_s

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        time.sleep(self.delay_s)
        return super().post(path, body)


@pytest.fixture()
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI("m") as tp1, FakeOpenAI("m") as tp2:
        yield tp1, tp2


def _plan(tp1: str, tp2: str, **extra: Any) -> dict[str, Any]:
    return {
        "models": [{"name": "m", "endpoints": {"tp1": tp1, "tp2": tp2}}],
        "tasks": ["arith"],
        "layouts": ["tp2=tp1"],
        "repeat": 2,
        "limit": 5,
        **extra,
    }


def _settings(store: Path, plan: dict[str, Any], **kw: Any) -> api.SweepSettings:
    template = RunOptions(task="", model="", store=str(store), progress=False)
    return api.SweepSettings(overrides=plan, template=template, **kw)


def _samples(store: Path) -> dict[tuple[str, int], list[str]]:
    """Item ids stored per (layout, repeat index), duplicates kept."""
    out: dict[tuple[str, int], list[str]] = {}
    with open_store(str(store)) as s:
        for run in s.list_runs():
            key = (run.config.layout, run.config.repeat_index)
            out.setdefault(key, []).extend(x.item_id for x in s.samples(run.run_id))
    return out


def test_every_cell_runs_once_pairs_are_compared_and_a_rerun_reuses_all(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    tp1, tp2 = fakes
    store = tmp_path / "s.db"
    said: list[str] = []
    outcome = api.sweep(_settings(store, _plan(tp1.url, tp2.url)), said.append)
    assert outcome.exit_code == 0
    assert (tp1.completions, tp2.completions) == (10, 10)  # 2 repeats × 5 items each
    assert {k: sorted(v) for k, v in _samples(store).items()} == {
        (layout, r): [str(i) for i in range(5)] for layout in ("tp1", "tp2") for r in (0, 1)
    }
    assert [c.state for r in outcome.results for c in r.cells] == ["finished"] * 4
    assert [p.pair.run for p in outcome.pairs] == ["m/arith/tp2#0", "m/arith/tp2#1"]
    assert all(p.comparison is not None for p in outcome.pairs)
    text = api.format_sweep(outcome)
    assert "m@tp1: 2 finished" in text and "m/arith/tp2#0 vs tp1#0" in text
    assert "exit 0" in text

    again = api.sweep(_settings(store, _plan(tp1.url, tp2.url)), said.append)
    assert (tp1.completions, tp2.completions) == (10, 10)  # nothing sent again
    assert [s.state for s in again.states] == ["reuse"] * 4
    assert [c.state for r in again.results for c in r.cells] == ["reused"] * 4
    assert again.exit_code == 0


def test_dry_run_lists_cells_devices_and_reuse_and_touches_nothing(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeOpenAI], capsys: pytest.CaptureFixture[str]
) -> None:
    tp1, tp2 = fakes
    store = tmp_path / "s.db"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"models: [{{name: m, endpoints: {{tp1: '{tp1.url}', tp2: '{tp2.url}'}}}}]\n"
        "tasks: [arith]\nlayouts: [tp2=tp1]\nlimit: 3\n"
    )
    code = main(["sweep", str(plan), "--dry-run", "--store", str(store)])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 cells in 2 groups" in out and "m/arith/tp1#0" in out and "new (3 items)" in out
    assert "1 pairs" in out and "nothing was started or stored" in out
    assert (tp1.completions, tp2.completions) == (0, 0) and not store.exists()
    # A finished cell shows as reused, and --json has every cell.
    assert main(["sweep", str(plan), "--store", str(store), "--layouts", "tp1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(plan), "--dry-run", "--json", "--store", str(store)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(c["key"], c["before"]) for c in doc["cells"]] == [
        ("m/arith/tp1#0", "reuse"),
        ("m/arith/tp2#0", "new"),
    ]


def test_flags_make_a_plan_and_win_over_the_file(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeOpenAI], capsys: pytest.CaptureFixture[str]
) -> None:
    tp1, tp2 = fakes
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"models: [{{name: m, endpoints: {{tp1: '{tp1.url}', tp2: '{tp2.url}'}}}}]\n"
        "tasks: [arith]\nlayouts: [tp2=tp1]\nlimit: 3\nrepeat: 3\n"
    )
    args = ["sweep", str(plan), "--repeat", "1", "--limit", "2", "--store", str(tmp_path / "s")]
    assert main([*args, "--quiet"]) == 0
    capsys.readouterr()
    assert (tp1.completions, tp2.completions) == (2, 2)


def test_a_bad_plan_is_refused_with_its_line_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("models: [smollm2]\ntasks:\n  - arith\n  - gsm9k\nlayouts: [tp1]\n")
    assert main(["sweep", str(plan), "--store", str(tmp_path / "s.db")]) == 1
    err = capsys.readouterr().err
    assert f"{plan}:4: unknown task 'gsm9k'" in err
    assert not (tmp_path / "s.db").exists()


def test_a_lost_engine_is_retried_then_its_cells_say_retries_exhausted(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: the engine is gone
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    plan = api.sweeping.plan_sweep(_settings(tmp_path / "s.db", _plan(dead, dead, repeat=1)))
    said: list[str] = []
    results = run_local(plan.groups, 1, said.append)
    assert [r.attempts for r in results] == [2, 2]
    cells = [c for r in results for c in r.cells]
    assert [c.state for c in cells] == ["not run", "not run"]
    assert all("retries exhausted (2 attempts" in (c.message or "") for c in cells)
    assert all(dead in (c.message or "") for c in cells)
    assert sum("retrying the group" in line for line in said) == 2


def test_a_failed_cell_does_not_stop_the_group_and_the_sweep_exits_1(tmp_path: Path) -> None:
    with FakeOpenAI("m", status=500) as broken, FakeOpenAI("m") as fine:
        outcome = api.sweep(_settings(tmp_path / "s.db", _plan(fine.url, broken.url)), print)
    states = {c.key: c.state for r in outcome.results for c in r.cells}
    assert states == {
        "m/arith/tp1#0": "finished",
        "m/arith/tp1#1": "finished",
        "m/arith/tp2#0": "failed",
        "m/arith/tp2#1": "failed",
    }
    assert outcome.exit_code == 1
    text = api.format_sweep(outcome)
    assert "✗ m/arith/tp2#0 failed: 5 of 5 requests failed" in text
    assert "run the same command again" in text
    assert "not compared (no finished run for m/arith/tp2#0)" in text


def test_killing_the_driver_and_running_the_same_command_resumes_the_sweep(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s.db"
    with SlowFake("m", 0.25) as tp1, SlowFake("m", 0.25) as tp2:
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            f"models: [{{name: m, endpoints: {{tp1: '{tp1.url}', tp2: '{tp2.url}'}}}}]\n"
            "tasks: [arith]\nlayouts: [tp2=tp1]\nlimit: 8\nconcurrency: 1\n"
        )
        command = [sys.executable, "-m", "evalpipe", "sweep", str(plan), "--store", str(store)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        driver = subprocess.Popen([*command, "--quiet"], env=env, stderr=subprocess.DEVNULL)
        try:
            _wait_for_samples(store, 3, driver)
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        first = _runs(store)
        assert len(first) == 1 and 3 <= first[0][1] < 8
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"resuming run {first[0][0]}" in done.stderr
    assert {k: sorted(v, key=int) for k, v in _samples(store).items()} == {
        ("tp1", 0): [str(i) for i in range(8)],
        ("tp2", 0): [str(i) for i in range(8)],
    }


def _runs(store: Path) -> list[tuple[str, int]]:
    with open_store(str(store)) as s:
        return [(r.run_id, len(s.done_item_ids(r.run_id))) for r in s.list_runs()]


def _wait_for_samples(store: Path, n: int, driver: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before it could be killed"
        if store.exists():
            try:
                if any(count >= n for _, count in _runs(store)):
                    return
            except Exception:  # the store is being created by the driver
                pass
        time.sleep(0.1)
    raise AssertionError(f"no run reached {n} samples in 60 s")


def test_policy_and_dashboard_at_the_end_decide_the_exit_code(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    tp1, tp2 = fakes
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "name: sweep\nrequirements:\n  - {model: m, task: arith, layouts: [tp2], "
        "baseline_layout: tp1}\nmargin: 1.0\nalpha: 0.05\nmin_n: 1\n"
        "inconclusive_blocks: false\n"
    )
    site = tmp_path / "site"
    settings = _settings(
        tmp_path / "s.db",
        _plan(tp1.url, tp2.url, repeat=1),
        policy=str(policy),
        dashboard=str(site),
    )
    outcome = api.sweep(settings, print)
    assert outcome.gate is not None and outcome.gate.status == "pass"
    assert outcome.exit_code == outcome.gate.exit_code == 0
    assert (site / "index.html").is_file() and outcome.dashboard == str(site)
    text = api.format_sweep(outcome)
    assert "gate: pass (exit 0)" in text and f"dashboard: {site}/index.html" in text
    # A stricter policy fails the gate, and the sweep exits with the gate's code.
    policy.write_text(
        policy.read_text()
        .replace("min_n: 1\n", "min_n: 100\n")
        .replace("inconclusive_blocks: false", "inconclusive_blocks: true")
    )
    strict = api.sweep(settings, print)
    assert strict.gate is not None and strict.exit_code == strict.gate.exit_code != 0


def test_a_bad_policy_or_dashboard_folder_is_refused_before_anything_runs(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    tp1, tp2 = fakes
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: x\nrequirements: []\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    for kw, words in (
        ({"policy": str(policy)}, "margin: required"),
        ({"dashboard": str(tmp_path / "taken")}, "files the dashboard did not write"),
    ):
        settings = _settings(tmp_path / "s.db", _plan(tp1.url, tp2.url), **kw)
        with pytest.raises(EvalpipeError, match=words):
            api.sweep(settings, print)
    assert (tp1.completions, tp2.completions) == (0, 0)
    assert not (tmp_path / "s.db").exists()
