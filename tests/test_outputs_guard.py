"""No output ever destroys an input: every path a command writes (``runs export -o``, ``gate
--junit/--markdown``, ``dashboard --out``, ``sweep --dashboard``, ``store copy``'s target) is
refused, before anything is done, when it resolves (symbolic links followed, hard links
found) to one of the command's inputs (the store and its -wal/-shm/-journal files, the policy,
the plan, a data file) or to another output of the same command, or when it is an existing
write-protected file. Read commands never create a store from a typo.

The tests run as root (CI containers do), for whom ``os.access`` says every file is
writable: the write-protection check reads the mode bits, so a mode-444 file is refused here
exactly as it would be for its owner.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from evalpipe import api
from evalpipe.cli import main
from evalpipe.errors import EvalpipeError
from evalpipe.paths import check_outputs, write_atomic

POLICY = (
    "name: t\nrequirements:\n  - model: m\n    task: gsm8k\n    layouts: [tp2]\n"
    "    baseline_layout: tp1\nmargin: 1.0\nalpha: 0.05\nmin_n: 1\n"
)


def _import(db: Path, run_id: str, layout: str, tmp: Path) -> None:
    head = {"run_id": run_id, "model": "m", "task": "gsm8k", "task_version": "1", "layout": layout}
    lines: list[dict[str, Any]] = [{"run": head}]
    lines += [{"item_id": str(i), "output": "4", "correct": True} for i in range(5)]
    src = tmp / f"{run_id}.src.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    api.import_run(str(db), str(src))


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the default store (two runs that pair), a policy, and the cwd there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVALPIPE_STORE", raising=False)
    _import(tmp_path / "evalpipe.db", "base", "tp1", tmp_path)
    _import(tmp_path / "evalpipe.db", "cp", "tp2", tmp_path)
    (tmp_path / "p.yaml").write_text(POLICY)
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def _runs(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]


def _decisions(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM gate_decisions").fetchone()[0])


# --- runs export -o -------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["evalpipe.db", "./evalpipe.db", "evalpipe.db-wal"])
def test_export_onto_the_store_is_refused_and_the_store_kept(
    work: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    before = (work / "evalpipe.db").read_bytes()
    code, err = _run(capsys, "runs", "export", "cp", "-o", target)
    assert code == 1 and "would destroy the store" in err, err
    assert (work / "evalpipe.db").read_bytes() == before
    assert _runs(work / "evalpipe.db") == ["base", "cp"]


def test_export_onto_a_link_to_the_store_is_refused(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (work / "sym.jsonl").symlink_to(work / "evalpipe.db")
    os.link(work / "evalpipe.db", work / "hard.jsonl")
    for link in ("sym.jsonl", "hard.jsonl"):
        code, err = _run(capsys, "runs", "export", "cp", "-o", link)
        assert code == 1 and f"-o {link} is the store" in err, err
    assert _runs(work / "evalpipe.db") == ["base", "cp"]


def test_export_onto_a_write_protected_file_is_refused_even_for_root(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = work / "kept.jsonl"
    kept.write_text("mine\n")
    kept.chmod(0o444)  # the folder stays writable: the rename alone would replace it
    code, err = _run(capsys, "runs", "export", "cp", "-o", "kept.jsonl")
    assert code == 1 and "write-protected (mode 0444)" in err and "chmod u+w" in err, err
    assert kept.read_text() == "mine\n"


def test_write_atomic_refuses_a_write_protected_file(tmp_path: Path) -> None:
    target = tmp_path / "page.html"
    target.write_text("edited by hand")
    target.chmod(0o400)
    with pytest.raises(EvalpipeError, match="write-protected"):
        write_atomic(target, b"new")
    assert target.read_text() == "edited by hand"


# --- gate --junit / --markdown ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--junit", "evalpipe.db"], "--junit evalpipe.db is the store"),
        (["--markdown", "p.yaml"], "--markdown p.yaml is the policy"),
        (["--junit", "r.txt", "--markdown", "./r.txt"], "--markdown and --junit are the same file"),
        (["--markdown", "ro.md"], "write-protected"),
        (["--junit", "nofolder/g.xml"], "does not exist"),
    ],
)
def test_a_refused_gate_output_leaves_inputs_and_no_decision(
    work: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    (work / "ro.md").write_text("report\n")
    (work / "ro.md").chmod(0o444)
    before = {p: (work / p).read_bytes() for p in ("evalpipe.db", "p.yaml", "ro.md")}
    code, err = _run(capsys, "gate", "--policy", "p.yaml", *flags)
    assert code == 3 and said in err, err
    assert {p: (work / p).read_bytes() for p in before} == before
    # Refused before deciding: no decision stored for later "loosened since #N" notices.
    assert _decisions(work / "evalpipe.db") == 0


def test_a_gate_whose_stdout_is_full_exits_3_not_1(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sys.stdout.flush", full)
    code = main(["gate", "--policy", "p.yaml"])
    monkeypatch.undo()
    assert code == 3, "an output the gate cannot write is 3: 1 would read as drift"


# --- folder outputs: dashboard --out, sweep --dashboard ----------------------------------------


def test_a_dashboard_out_holding_the_store_at_a_page_path_is_refused(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = work / "site"
    site.mkdir()
    store = site / "index.html"
    (work / "evalpipe.db").rename(store)
    before = store.read_bytes()
    code, err = _run(capsys, "dashboard", "--out", "site", "--store", str(store), "--force")
    assert code == 1 and "inside --out site" in err, err
    assert store.read_bytes() == before


def test_a_sweep_dashboard_over_its_plan_is_refused_before_anything_starts(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (work / "site").mkdir()
    plan = work / "site" / "plan.html"
    plan.write_text(
        "models: [{name: m, endpoints: {tp1: 'http://127.0.0.1:9'}}]\ntasks: [arith]\n"
        "layouts: [tp1]\n"
    )
    code, err = _run(capsys, "sweep", str(plan), "--dashboard", "site", "--dry-run")
    assert code == 1 and "the plan" in err and "inside --dashboard site" in err, err


def test_store_copy_into_itself_is_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "store", "copy", "evalpipe.db", "./evalpipe.db")
    assert code == 1 and "the source store" in err, err


# --- the shared check itself ------------------------------------------------------------------


def test_check_outputs_lets_streams_and_new_files_through(tmp_path: Path) -> None:
    inputs = [("the store", tmp_path / "s.db")]
    check_outputs([("-o", "-"), ("--junit", "/dev/null"), ("--md", tmp_path / "new")], inputs)
    assert not (tmp_path / "new").exists()  # probed, not written
    assert [p.name for p in tmp_path.iterdir()] == []  # and no temporary file left


# --- read commands never create a store --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "list"],
        ["runs", "show", "cp"],
        ["runs", "export", "cp"],
        ["compare", "cp"],
        ["score", "cp", "--against", "base", "--endpoint", "http://127.0.0.1:9"],
        ["comment", "--repo", "o/r", "--pr", "1", "--run", "cp", "--dry-run"],
        ["dashboard", "--out", "site"],
    ],
)
def test_a_read_command_on_a_typo_creates_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    typo = tmp_path / "evalpipe.bd"
    code, err = _run(capsys, *args, "--store", str(typo))
    assert code == 1 and "no evalpipe store at" in err, err
    assert not typo.exists() and not list(tmp_path.glob("evalpipe.bd*"))


def test_a_read_command_on_an_empty_file_leaves_it_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, err = _run(capsys, "runs", "list", "--store", str(empty))
    assert code == 1 and "is empty, not an evalpipe store" in err, err
    assert empty.stat().st_size == 0
