"""Every size is bounded, with the bound named in the message, and every value out of range is
a usage error (exit 2) — no OverflowError, MemoryError or hang; and the sweep plan checks
that used to hide a problem or place it on the wrong line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from evalpipe import api
from evalpipe.cli import main
from evalpipe.engine.client import ClientSettings, OpenAIClient, Request, run_all
from evalpipe.limits import MAX_CONCURRENCY, MAX_REPEAT, MAX_SHARD_PERIOD, MAX_SWEEP_CELLS
from evalpipe.records import Run, RunConfig
from evalpipe.store import open_store
from evalpipe.store.traces import put_traces
from evalpipe.traces import DECODE, StoredTrace, trace_of

NOWHERE = "http://127.0.0.1:9"
RUN = ["run", "arith", "--model", "m", "--endpoint", NOWHERE]


def _code(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--repeat", "0"], "--repeat must be a whole number from 1 to 100"),
        (["--repeat", "1000000"], "--repeat must be a whole number from 1 to 100"),
        (["--limit", "0"], "--limit must be a whole number from 1"),
        (["--concurrency", "0"], f"from 1 to {MAX_CONCURRENCY}"),
        (["--concurrency", "100000000"], "--concurrency must be a whole number from 1 to 1024"),
        (["--logprobs", "-1"], "--logprobs must be a whole number from 0 to 64"),
        (["--max-error-rate", "5"], "--max-error-rate is a fraction from 0 to 1"),
        (["--request-timeout", "0"], "--request-timeout must be a number of seconds above 0"),
        (["--request-timeout", "-1"], "--request-timeout must be"),
        (["--request-timeout", "nan"], "--request-timeout must be"),
        (["--health-timeout", "1e300"], "at most 604800"),
        (["--seed", str(2**64)], "--seed must be a whole number"),
        (["--with-baseline", "--layout", "tp2", "--baseline-layout", "tp2"], "own layout"),
    ],
)
def test_run_values_out_of_range_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    code, err = _code(capsys, *RUN, *flags, "--store", str(tmp_path / "s.db"))
    assert said in err, err
    assert code == (1 if "own layout" in said else 2), err
    assert not (tmp_path / "s.db").exists() or not api.list_runs(str(tmp_path / "s.db"))


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "cp", "--baseline", "base", "--shard-period", "9" * 20],
        ["dashboard", "--out", "{w}/site", "--shard-period", str(2**63)],
    ],
)
def test_a_huge_shard_period_names_its_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    db = tmp_path / "s.db"
    with open_store(db) as s:
        for rid, layout in (("base", "tp1"), ("cp", "tp2")):
            config = RunConfig(
                "m", "f", "t", "1", "p", "d", None, layout, "cpu", "serve", (), {}, 0, None, 1
            )
            s.create_run(Run(rid, config, "finished", "2026-11-28T00:00:00+00:00"))
            t = trace_of([1], [-0.1], [[(1, -0.1)]], 1)
            put_traces(s, [StoredTrace(rid, "0", DECODE, 100, t)])
    filled = [a.replace("{w}", str(tmp_path)) for a in args]
    code, err = _code(capsys, *filled, "--store", str(db))
    assert code == 2 and f"from 1 to {MAX_SHARD_PERIOD}" in err, err


def test_the_client_starts_no_more_workers_than_requests() -> None:
    """10^8 workers for 3 items hung the client; the cap is also the connector's limit."""
    with FakeOpenAI(model="m", answer="1") as srv:
        settings = ClientSettings(srv.url, "m", {}, concurrency=10**8)
        got: list[Any] = []
        tasks: list[int] = []

        def seen(c: Any) -> None:
            got.append(c)
            tasks.append(len(asyncio.all_tasks()))

        async def go() -> None:
            async with OpenAIClient(settings) as client:
                requests = [Request(str(i), text="q") for i in range(3)]
                await run_all(client, requests, seen, 10**8)

        asyncio.run(go())
    assert sorted(c.item_id for c in got) == ["0", "1", "2"]
    assert max(tasks) <= 1 + 3, tasks  # the main task and one worker a request


# --- sweep --------------------------------------------------------------------------------


def _plan(tmp_path: Path, text: str) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return str(path)


ENDPOINT = f"models: [{{name: m, endpoints: {{tp1: '{NOWHERE}'}}}}]\n"


def test_a_plan_of_a_million_repeats_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(tmp_path, ENDPOINT + "tasks: [arith]\nlayouts: [tp1]\nrepeat: 1000000\n")
    code, err = _code(capsys, "sweep", plan, "--dry-run", "--store", str(tmp_path / "s.db"))
    assert code == 1 and f"plan.yaml:4: repeat must be a whole number from 1 to {MAX_REPEAT}" in err


def test_a_plan_of_more_cells_than_the_bound_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layouts = ", ".join(f"tp{n}" for n in range(1, 61))
    text = f"models: [m]\ntasks: [arith, gsm8k]\nlayouts: [{layouts}]\nrepeat: 100\n"
    plan = _plan(tmp_path, text)
    code, err = _code(capsys, "sweep", plan, "--dry-run", "--devices", "64")
    assert code == 1 and f"above the limit of {MAX_SWEEP_CELLS}" in err, err


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--repeat", "0"], "--repeat must be a whole number from 1 to 100"),
        (["--devices", "0"], "--devices must be a whole number from 1"),
        (["--devices", "-2"], "--devices must be a whole number from 1"),
        (["--max-retries", "1000"], "--max-retries must be a whole number from 0 to 100"),
        (["--progress-every", "0"], "--progress-every must be a number of seconds"),
        (["--concurrency", "100000000"], "--concurrency must be a whole number from 1 to 1024"),
    ],
)
def test_sweep_flags_out_of_range_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    plan = _plan(tmp_path, ENDPOINT + "tasks: [arith]\nlayouts: [tp1]\n")
    code, err = _code(capsys, "sweep", plan, "--dry-run", *flags)
    assert code == 2 and said in err, err


def test_plan_problems_come_all_at_once_each_on_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(
        tmp_path,
        "models:\n"  # 1
        f"  - {{name: m, endpoints: {{tp1: '{NOWHERE}', tp8: '{NOWHERE}'}}}}\n"  # 2
        "platform: tpu\n"  # 3
        "layouts: [tp1]\n"  # 4
        "repeat: 0\n",  # 5
    )
    code, err = _code(capsys, "sweep", plan, "--dry-run")
    assert code == 1
    assert "plan.yaml:3: unknown platform 'tpu'; expected one of cuda, ascend, cpu" in err
    assert "plan.yaml: tasks is missing" in err and "plan.yaml:1: tasks" not in err
    assert "plan.yaml:2: endpoints: tp8 is not a layout of this plan" in err
    assert "plan.yaml:5: repeat must be" in err


def test_a_store_in_a_missing_folder_is_refused_before_any_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(tmp_path, ENDPOINT + "tasks: [arith]\nlayouts: [tp1]\n")
    store = tmp_path / "nofolder" / "s.db"
    code, err = _code(capsys, "sweep", plan, "--store", str(store))
    assert code == 1 and f"directory {store.parent} does not exist" in err, err
    assert "retr" not in err  # not three retries of every group, cut off in a summary


def test_an_interrupted_dry_run_does_not_say_a_run_was_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "sweep", interrupted)
    plan = _plan(tmp_path, ENDPOINT + "tasks: [arith]\nlayouts: [tp1]\n")
    code, err = _code(capsys, "sweep", plan, "--dry-run")
    assert code == 130 and err.strip() == "evalpipe: interrupted"
    code, err = _code(capsys, "sweep", plan)
    assert code == 130 and "resumes with the same command" in err


def test_sweep_json_dry_run_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAI(model="m") as srv:
        plan = _plan(tmp_path, f"models: [{{name: m, endpoints: {{tp1: '{srv.url}'}}}}]\n"
                     "tasks: [arith]\nlayouts: [tp1]\nrepeat: 2\n")  # fmt: skip
        code = main(["sweep", plan, "--dry-run", "--json", "--store", str(tmp_path / "s.db")])
    assert code == 0
    assert len(json.loads(capsys.readouterr().out)["cells"]) == 2
