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
    ]
    assert info["layout"] == "dp2tp8dcp8" and info["devices"] == 16
    assert info["baseline"] == "dp2tp8"
    assert "--decode-context-parallel-size" in info["vllm_args"]
    bad = cli("layout", "explain", "tp8xcp2", "--json")
    assert bad.returncode == 1
    info = json.loads(bad.stdout)
    assert info["valid"] is False and any("xcp2" in e for e in info["errors"])
    cpu = cli("layout", "explain", "tp2dcp2", "--platform", "cpu", "--json")
    assert cpu.returncode == 1 and json.loads(cpu.stdout)["valid"] is False


def test_run_rejects_a_bad_layout_before_touching_anything(tmp_path: Path) -> None:
    proc = cli("run", "gsm8k", "--layout", "tp3dcp2", "--store", str(tmp_path / "s.db"))
    assert proc.returncode == 1
    assert "tp3dcp2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.db").exists()


def test_run_refuses_cp_on_this_cpu_platform(tmp_path: Path) -> None:
    proc = cli("run", "gsm8k", "--layout", "tp2dcp2", "--platform", "cpu")
    assert proc.returncode == 1 and "softmax LSE" in proc.stderr


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
