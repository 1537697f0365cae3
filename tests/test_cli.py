"""The command line as a user meets it: help, exit codes and error messages, without an engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalpipe.cli import build_parser


def cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _commands() -> list[list[str]]:
    """Every leaf command of the parser, e.g. ["runs", "list"]."""
    import argparse

    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append(prefix)
        for action in subs:
            for name, child in action.choices.items():
                walk(child, [*prefix, name])

    walk(build_parser(), [])
    return found


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    proc = cli(*command, "--help")
    assert proc.returncode == 0
    assert "Example:" in proc.stdout and "evalpipe " + command[0] in proc.stdout


def test_every_command_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [c for c in _commands() if "evalpipe " + " ".join(c) not in readme]
    assert not missing, f"commands not documented in README.md: {missing}"


def test_help_imports_neither_vllm_nor_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from evalpipe.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "heavy = [m for m in ('vllm', 'torch', 'sqlalchemy', 'transformers') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.mark.parametrize("module", ["evalpipe.cli", "evalpipe.api"])
def test_importing_the_cli_or_the_api_loads_no_heavy_module(module: str) -> None:
    # Every command imports evalpipe.api; only the use case it calls may pay for more.
    code = (
        f"import sys, {module}\n"
        "heavy = [m for m in ('vllm', 'torch', 'sqlalchemy', 'transformers') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_setup_commands_do_not_open_a_store() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from evalpipe.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    codes = [main(['model', 'list']), main(['tasks', 'list'])]\n"
        "print(codes, 'sqlalchemy' in sys.modules)\n"
        "print(out.getvalue(), end='')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    first, *listed = proc.stdout.splitlines()
    assert first == "[0, 0] False", proc.stdout + proc.stderr
    models = [line.split()[0] for line in listed[:2]]
    assert models == ["smollm2", "gemma3-270m"] and listed[0].split()[1] in ("built", "-")
    tasks = {line.split()[0]: line.split()[1:3] for line in listed[2:]}
    assert tasks["gsm8k"] == ["v1.0", "completion"] and tasks["gsm8k-chat"][1] == "chat"


def test_help_lists_daily_commands_first_and_setup_last() -> None:
    import argparse

    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(action.choices) == [
        *("run", "sweep", "canary", "score", "compare", "comment", "gate", "dashboard"),
        "layout",
        *("runs", "import", "store", "model", "data", "tasks"),
    ]


def test_layout_explain_json_exact_keys_and_exit_codes() -> None:
    ok = cli("layout", "explain", "DCP8dp2TP8", "--json")
    assert ok.returncode == 0
    info = json.loads(ok.stdout)
    assert list(info) == [
        "layout",
        "valid",
        "errors",
        "dp",
        "tp",
        "pp",
        "pcp",
        "dcp",
        "ep",
        "devices",
        "baseline",
        "vllm_args",
        "attention_backend",
        "attention_backend_why",
        "rules",
    ]
    assert info["layout"] == "dp2tp8dcp8" and info["devices"] == 16
    assert info["baseline"] == "dp2tp8"
    assert "--decode-context-parallel-size" in info["vllm_args"]
    bad = cli("layout", "explain", "tp8xcp2", "--json")
    assert bad.returncode == 1
    info = json.loads(bad.stdout)
    assert info["valid"] is False and any("xcp2" in e for e in info["errors"])
    cpu = cli("layout", "explain", "tp2pcp2", "--platform", "cpu", "--json")
    assert cpu.returncode == 1 and json.loads(cpu.stdout)["valid"] is False
    dcp = json.loads(cli("layout", "explain", "tp2dcp2", "--platform", "cpu", "--json").stdout)
    assert dcp["valid"] is True and dcp["attention_backend"] == "evalpipe-cpu-dcp"
    assert "softmax LSE" in dcp["attention_backend_why"]
    # Where the backend cannot load, the layout is refused with the reason.
    off = cli("layout", "explain", "tp2dcp2", "--platform", "cpu", env_extra={"VLLM_PLUGINS": "x"})
    assert off.returncode == 1 and "leaves out evalpipe's plugin" in off.stdout


def test_run_rejects_a_bad_layout_before_touching_anything(tmp_path: Path) -> None:
    proc = cli("run", "gsm8k", "--layout", "tp3dcp2", "--store", str(tmp_path / "s.db"))
    assert proc.returncode == 1
    assert "tp3dcp2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.db").exists()


def test_run_refuses_pcp_on_this_cpu_platform(tmp_path: Path) -> None:
    proc = cli("run", "gsm8k", "--layout", "tp2pcp2", "--platform", "cpu")
    assert proc.returncode == 1 and "does not support PCP" in proc.stderr


def test_unknown_task_lists_the_available_ones() -> None:
    proc = cli("run", "gsm9k", "--endpoint", "http://127.0.0.1:9")
    assert proc.returncode == 1
    assert "gsm8k" in proc.stderr and "arith" in proc.stderr


def test_unreachable_endpoint_says_what_to_check(tmp_path: Path, shared_data: Path) -> None:
    proc = cli(
        "run",
        "gsm8k",
        "--endpoint",
        "http://127.0.0.1:9",
        "--limit",
        "2",
        "--store",
        str(tmp_path / "s.db"),
        env_extra={"EVALPIPE_DATA_DIR": str(shared_data)},
    )
    assert proc.returncode == 1
    assert "cannot reach" in proc.stderr and "127.0.0.1:9" in proc.stderr


def test_corrupt_store_is_refused_with_advice(tmp_path: Path) -> None:
    bad = tmp_path / "evalpipe.db"
    bad.write_bytes(b"this is not a database" * 100)
    proc = cli("runs", "list", "--store", str(bad))
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and "Traceback" not in proc.stderr
    assert bad.read_bytes() == b"this is not a database" * 100


def test_export_import_through_the_cli(tmp_path: Path) -> None:
    src = tmp_path / "a.db"
    lines = [
        json.dumps(
            {"run": {"model": "m", "task": "gsm8k", "task_version": "1.0", "layout": "tp1"}}
        ),
        json.dumps({"item_id": "0", "output": "The answer is 3.", "correct": True}),
        json.dumps({"item_id": "1", "output": "The answer is 4.", "correct": False}),
    ]
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(lines) + "\n")
    imported = cli("runs", "import", str(f), "--json", "--store", str(src))
    assert imported.returncode == 0, imported.stderr
    run_id = json.loads(imported.stdout)["run_id"]
    shown = json.loads(cli("runs", "show", run_id, "--json", "--store", str(src)).stdout)
    assert shown["accuracy"] == 0.5 and shown["n_samples"] == 2
    out = tmp_path / "out.jsonl"
    assert cli("runs", "export", run_id, "-o", str(out), "--store", str(src)).returncode == 0
    again = cli("runs", "import", str(out), "--json", "--store", str(tmp_path / "b.db"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["run_id"] == run_id
    out2 = tmp_path / "out2.jsonl"
    exported = cli("runs", "export", run_id, "-o", str(out2), "--store", str(tmp_path / "b.db"))
    assert exported.returncode == 0, exported.stderr
    assert out2.read_text() == out.read_text()


def _jsonl(run_id: str, verdicts: list[bool]) -> str:
    run = {"run_id": run_id, "model": "m", "task": "gsm8k", "task_version": "1.0", "layout": "tp1"}
    samples = [
        {"item_id": str(i), "output": f"The answer is {i}.", "correct": ok}
        for i, ok in enumerate(verdicts)
    ]
    return "".join(json.dumps(line) + "\n" for line in [{"run": run}, *samples])


def test_store_migrate_and_copy_through_the_cli(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.db", tmp_path / "b.db"
    (tmp_path / "r1.jsonl").write_text(_jsonl("r1", [True, False]))
    (tmp_path / "r2.jsonl").write_text(_jsonl("r2", [True]))
    for name in ("r1", "r2"):
        imported = cli("runs", "import", str(tmp_path / f"{name}.jsonl"), "--store", str(src))
        assert imported.returncode == 0, imported.stderr
    migrated = cli("store", "migrate", "--store", str(src), "--json")
    assert migrated.returncode == 0, migrated.stderr
    report = json.loads(migrated.stdout)
    assert list(report) == ["store", "schema_version", "created", "applied"]
    assert report["store"] == str(src) and report["created"] is False and report["applied"] == []
    missing = cli("store", "migrate", "--store", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "no evalpipe store" in missing.stderr
    assert not (tmp_path / "none.db").exists()

    first = cli("store", "copy", str(src), str(dst), "--run", "r1")
    assert (first.returncode, first.stdout) == (
        0,
        "copied 1, merged 0, already there 0, conflicts 0\n",
    )
    again = cli("store", "copy", str(src), str(dst), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {
        "copied": ["r2"],
        "merged": [],
        "skipped_identical": ["r1"],
        "conflicts": [],
    }

    # r1 finished with other verdicts in a third store: a conflict, left alone, exit 1.
    other = tmp_path / "c.db"
    (tmp_path / "r1b.jsonl").write_text(_jsonl("r1", [False, False]))
    assert cli("runs", "import", str(tmp_path / "r1b.jsonl"), "--store", str(other)).returncode == 0
    clash = cli("store", "copy", str(src), str(other))
    assert clash.returncode == 1
    assert clash.stdout == "copied 1, merged 0, already there 0, conflicts 1\n"
    assert clash.stderr.startswith("conflict: run r1 ")
    clash_json = json.loads(cli("store", "copy", str(src), str(other), "--json").stdout)
    assert [c["run_id"] for c in clash_json["conflicts"]] == ["r1"]
    assert clash_json["skipped_identical"] == ["r2"]
