"""Files: evalpipe touches nothing it did not write, and what it writes appears whole or not
at all. The issue's reproductions, run through the command line as a user types them, plus
the failures a user meets on the way (an existing file as --out, a folder as -o, a missing
folder, a full disk, a damaged store), each of which must be one line, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evalpipe import api
from evalpipe.cli import build_parser
from evalpipe.errors import EvalpipeError
from evalpipe.paths import open_atomic, write_atomic

TRACEBACK = "Traceback (most recent call last)"
RUN = "20261128-065414-3f2a9c"
BASE = "20261128-060000-aa11bb"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The error line of a failed command: exactly one line on stderr, no traceback."""
    assert TRACEBACK not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evalpipe: error: "), proc.stderr
    return lines[0]


def _import(db: str, tmp: Path, run_id: str, layout: str, verdicts: list[bool]) -> None:
    run = {"run_id": run_id, "model": "m", "task": "gsm8k", "task_version": "1.0"}
    lines: list[dict[str, Any]] = [{"run": {**run, "layout": layout}}]
    lines += [
        {"item_id": str(i), "output": f"The answer is {i}.", "correct": ok, "prompt": f"q{i}"}
        for i, ok in enumerate(verdicts)
    ]
    src = tmp / f"{run_id}.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    api.import_run(db, str(src))


@pytest.fixture
def store(tmp_path: Path) -> str:
    """Two runs of one config on tp2 and tp1, paired by ``--pair tp2=tp1``."""
    db = str(tmp_path / "store.db")
    _import(db, tmp_path, BASE, "tp1", [True] * 8)
    _import(db, tmp_path, RUN, "tp2", [True] * 7 + [False])
    return db


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# --- dashboard --out: only what a render wrote -------------------------------------------


def test_the_issues_reproduction_is_refused_and_writes_nothing(store: str, tmp_path: Path) -> None:
    """``mkdir -p site/runs/mine; echo x > site/runs/mine/notes.txt; evalpipe dashboard --out
    site``: a folder evalpipe never rendered into; the render is refused, nothing is written."""
    site = tmp_path / "site"
    (site / "runs" / "mine").mkdir(parents=True)
    (site / "runs" / "mine" / "notes.txt").write_text("x\n")
    before = _tree(site)
    line = one_line_error(cli("dashboard", "--out", str(site), "--store", store))
    assert "--force" in line and str(site) in line
    assert _tree(site) == before and not (site / ".evalpipe").exists()


def test_force_renders_into_a_foreign_folder_and_keeps_its_files(
    store: str, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    (site / "runs" / "mine").mkdir(parents=True)
    (site / "runs" / "mine" / "notes.txt").write_text("x\n")
    (site / "notes.txt").write_text("mine\n")
    api.dashboard(store, site, force=True)
    assert (site / "index.html").is_file()
    assert (site / "runs" / "mine" / "notes.txt").read_text() == "x\n"
    # The folder is evalpipe's now: the next render needs no flag and still keeps them.
    api.dashboard(store, site)
    assert (site / "notes.txt").read_text() == "mine\n"
    assert (site / "runs" / "mine" / "notes.txt").read_text() == "x\n"


def test_a_user_file_inside_an_earlier_render_survives(store: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    api.dashboard(store, site, pairs=["tp2=tp1"])
    (site / "runs" / "mine").mkdir()
    (site / "runs" / "mine" / "notes.txt").write_text("x\n")
    (site / "compare" / "notes.txt").write_text("y\n")
    proc = cli("dashboard", "--out", str(site), "--store", store, "--pair", "tp2=tp1")
    assert proc.returncode == 0, proc.stderr
    assert (site / "runs" / "mine" / "notes.txt").read_text() == "x\n"
    assert (site / "compare" / "notes.txt").read_text() == "y\n"


def test_an_empty_or_new_folder_needs_no_flag(store: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        api.dashboard(store, out)
        assert (out / "index.html").is_file()


def test_a_first_render_cut_short_does_not_lock_its_folder(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is claimed (an empty manifest) before any page is written: a render killed
    half-way leaves a folder the next render takes without --force."""
    from evalpipe.report import site as site_module

    site = tmp_path / "site"

    def killed(self: object) -> list[str]:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(site_module.Site, "finish", killed)
        with pytest.raises(KeyboardInterrupt):
            api.dashboard(store, site)
    assert (site / "index.html").is_file()  # pages were written before the kill
    api.dashboard(store, site)


def test_dashboard_out_an_existing_file(store: str, tmp_path: Path) -> None:
    target = tmp_path / "site.html"
    target.write_text("mine")
    line = one_line_error(cli("dashboard", "--out", str(target), "--store", store))
    assert "is a file" in line and target.read_text() == "mine"


def test_dashboard_out_below_a_file(store: str, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    line = one_line_error(
        cli("dashboard", "--out", str(tmp_path / "afile" / "site"), "--store", store)
    )
    assert "afile" in line


# --- a damaged store ---------------------------------------------------------------------


@pytest.mark.parametrize("column", ["extracted", "correct_by", "meta"])
def test_dashboard_on_a_damaged_sample_row(store: str, tmp_path: Path, column: str) -> None:
    """A sample row whose JSON column does not parse (a hand edit, a disk error): one line
    that names the run and says what to do, exit 1."""
    with sqlite3.connect(store) as db:
        db.execute(
            f"UPDATE samples SET {column} = '{{not json' WHERE run_id = ? AND item_id = '3'",
            (RUN,),
        )
    line = one_line_error(cli("dashboard", "--out", str(tmp_path / "site"), "--store", store))
    assert RUN in line and "damaged" in line


def test_dashboard_on_a_store_without_prompts_renders(store: str, tmp_path: Path) -> None:
    """Prompts are not on the dashboard's pages: a store that lost them still renders."""
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM prompts")
    proc = cli("dashboard", "--out", str(tmp_path / "site"), "--store", store)
    assert proc.returncode == 0 and TRACEBACK not in proc.stderr, proc.stderr


# --- runs export -o: whole or not at all -------------------------------------------------


def test_export_of_a_missing_run_leaves_the_file_alone(store: str, tmp_path: Path) -> None:
    """The issue's reproduction: ``runs export MISSING -o existing.jsonl`` emptied the file."""
    existing = tmp_path / "existing.jsonl"
    existing.write_text("precious\n")
    line = one_line_error(cli("runs", "export", "MISSING", "-o", str(existing), "--store", store))
    assert "MISSING" in line
    assert existing.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_export_writes_the_run_and_keeps_the_file_mode(store: str, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    out.write_text("old")
    out.chmod(0o640)
    proc = cli("runs", "export", RUN, "-o", str(out), "--store", store)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["run"]["run_id"] == RUN and len(lines) == 10  # + end line
    assert out.stat().st_mode & 0o777 == 0o640


def test_export_into_a_folder(store: str, tmp_path: Path) -> None:
    line = one_line_error(cli("runs", "export", RUN, "-o", str(tmp_path), "--store", store))
    assert "it is a folder" in line and str(tmp_path) in line


def test_export_into_a_missing_folder(store: str, tmp_path: Path) -> None:
    target = tmp_path / "nofolder" / "run.jsonl"
    line = one_line_error(cli("runs", "export", RUN, "-o", str(target), "--store", store))
    assert "does not exist" in line and "nofolder" in line
    assert not target.parent.exists()


def test_export_to_a_full_device(store: str) -> None:
    """/dev/full is written in place (a device is never renamed over) and says ENOSPC."""
    line = one_line_error(cli("runs", "export", RUN, "-o", "/dev/full", "--store", store))
    assert "no space left" in line
    assert Path("/dev/full").is_char_device()


def test_export_to_a_full_disk_leaves_the_old_file(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills after the first 100 bytes: the old file stays, no temporary is left."""
    out = tmp_path / "run.jsonl"
    out.write_text("old export\n")
    real_write = os.write
    written = {"n": 0}

    def full_after_100_bytes(fd: int, data: Any) -> int:
        if written["n"] + len(data) > 100:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written["n"] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_after_100_bytes)
    with pytest.raises(EvalpipeError) as err:
        api.export_run(store, RUN, out)
    monkeypatch.undo()
    assert "no space left" in str(err.value) and str(out) in str(err.value)
    assert out.read_text() == "old export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.jsonl")] == []


def test_export_to_stdout_with_dash(store: str) -> None:
    proc = cli("runs", "export", RUN, "-o", "-", "--store", store)
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[0])["run"]["run_id"] == RUN


# --- the helper itself -------------------------------------------------------------------


def test_open_atomic_shows_nothing_until_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with open_atomic(target) as out:
        out.write("new")
        assert target.read_text() == "old"  # a reader meanwhile sees the old file
    assert target.read_text() == "new"


def test_open_atomic_failure_in_the_body_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), open_atomic(target) as out:
        out.write("half")
        raise RuntimeError("the producer failed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_open_atomic_writes_through_a_symbolic_link(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_text("old")
    (tmp_path / "link.jsonl").symlink_to(real)
    with open_atomic(tmp_path / "link.jsonl") as out:
        out.write("new")
    assert (tmp_path / "link.jsonl").is_symlink() and real.read_text() == "new"


def test_write_atomic_new_file_has_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "page.html", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "page.html").stat().st_mode & 0o777 == 0o644


def test_write_atomic_refuses_a_folder_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(EvalpipeError, match="is a folder"):
        write_atomic(tmp_path, b"x")


# --- runs show ---------------------------------------------------------------------------


def test_runs_show_is_a_human_summary(store: str) -> None:
    proc = cli("runs", "show", RUN, "--store", store)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    with pytest.raises(ValueError):
        json.loads(text)
    assert len(text.splitlines()) <= 20
    for needle in (RUN, "gsm8k", "tp2", "87.5%", "7/8", "--json"):
        assert needle in text, needle


def test_runs_show_json_is_one_line_with_every_field(store: str) -> None:
    proc = cli("runs", "show", RUN, "--json", "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    shown = json.loads(proc.stdout)
    assert shown == api.run_to_dict(api.get_run(store, RUN))


def test_runs_show_neutralises_control_characters(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    src = tmp_path / "r.jsonl"
    run = {"run_id": "r1", "model": "m\x1b[31mRED\x1b]0;title\x07", "task": "gsm8k"}
    src.write_text(
        json.dumps({"run": {**run, "task_version": "1", "layout": "tp1"}})
        + "\n"
        + json.dumps({"item_id": "0", "output": "x", "correct": True, "prompt": "q"})
        + "\n"
    )
    api.import_run(db, str(src))
    proc = cli("runs", "show", "r1", "--store", db)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "RED" in proc.stdout


def test_runs_show_help_example_is_a_full_run_id(capsys: pytest.CaptureFixture[str]) -> None:
    """``runs show 2026`` was a prefix of every run made in 2026: ambiguous as soon as there
    are two. The example is a whole id."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["runs", "show", "--help"])
    example = capsys.readouterr().out.split("Example:")[1]
    ids = re.findall(r"evalpipe runs show (\S+)", example)
    assert ids and all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", i) for i in ids), example


def test_the_force_flag_on_the_command_line(store: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "notes.txt").write_text("mine\n")
    proc = cli("dashboard", "--out", str(site), "--force", "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert (site / "index.html").is_file() and (site / "notes.txt").read_text() == "mine\n"


def test_an_unreadable_folder_is_one_line(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder this user may not list (simulated: root lists every folder)."""
    site = tmp_path / "site"
    site.mkdir()

    def denied(self: Path) -> Any:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(EvalpipeError, match=r"cannot read --out .*Permission denied"):
        api.dashboard(store, site)


def test_a_damaged_sample_row_found_by_a_forked_worker(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big sites render in forked workers: the error comes back to the command as one line."""
    from evalpipe.report import dashboard

    with sqlite3.connect(store) as db:
        db.execute("UPDATE samples SET correct_by = '[' WHERE run_id = ?", (RUN,))
    monkeypatch.setattr(dashboard, "MIN_PAGES_PER_WORKER", 1)
    monkeypatch.setattr(dashboard, "cores", lambda: 2)
    with pytest.raises(EvalpipeError, match=f"run {RUN} is damaged in the store"):
        api.dashboard(store, tmp_path / "site")
