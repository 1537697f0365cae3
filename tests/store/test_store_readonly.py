"""A store evalpipe may not write (a read-only mount, another user's files) can still be read:
listed, shown, exported, compared; a write says why it cannot, and nothing in the store's
directory changes.

How the store is made read-only: a user that is not root gets ``chmod`` (directory 555, files
444), as on a colleague's share. Root writes through any mode bits, so for root the
directory is bind-mounted read-only onto itself in a private mount namespace (``unshare -m``;
the mount is gone when the command exits), which is what a read-only mount is. Where root may
not create mounts (a container without CAP_SYS_ADMIN), the command runs with ``os.access``
answering "not writable" for the folder, so evalpipe opens the store read-only as it would on
a mount; SQLite's ``mode=ro`` then refuses every write, and the folder's bytes are compared.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evalpipe import api

Runner = Callable[..., subprocess.CompletedProcess[str]]


def _jsonl(path: Path, run_id: str, layout: str) -> Path:
    run = {"run_id": run_id, "model": "m", "task": "gsm8k", "task_version": "1.0", "layout": layout}
    lines = [{"run": run}] + [
        {"item_id": str(i), "output": f"{i}", "correct": i % 3 != 0, "prompt": f"q{i}"}
        for i in range(6)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes; the ``-shm`` wal-index only by name: it is shared memory that any
    reader may rebuild where it can write, not the store's content."""
    return {
        p.name: None if p.name.endswith("-shm") else p.read_bytes()
        for p in sorted(folder.iterdir())
    }


# Root without mount rights: os.access says what a read-only mount would say for the folder.
_DENY_WRITES = """
import os, sys
real = os.access
def access(path, mode, *args, **kwargs):
    full = os.path.abspath(path)
    inside = full == {folder!r} or full.startswith({folder!r} + "/")
    return False if inside and mode & os.W_OK else real(path, mode, *args, **kwargs)
os.access = access
from evalpipe.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _can_mount(folder: Path) -> bool:
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0"', str(folder)],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.fixture
def folder() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to the test's user, and the fallback runs
    # the commands as another user.
    path = Path(tempfile.mkdtemp(prefix="evalpipe-ro-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
    shutil.rmtree(path)


def _read_only(folder: Path) -> Runner:
    """Make ``folder`` read-only for the commands the returned runner starts."""
    for p in folder.iterdir():
        p.chmod(0o444)
    folder.chmod(0o555)
    command = [sys.executable, "-m", "evalpipe"]
    if os.geteuid() != 0:
        wrap: list[str] = []
    elif _can_mount(folder):
        # $0 is the folder; the rest is the evalpipe command line.
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        wrap = ["unshare", "-m", "sh", "-c", script, str(folder)]
    else:
        command = [sys.executable, "-c", _DENY_WRITES.format(folder=str(folder))]
        wrap = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*wrap, *command, *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=folder,
            env={**os.environ, "HOME": str(folder)},
        )

    return run


def _store(folder: Path) -> str:
    db = str(folder / "evalpipe.db")
    for rid, layout in (("base", "tp1"), ("run", "tp2")):
        api.import_run(db, str(_jsonl(folder / f"{rid}.jsonl", rid, layout)))
    for p in folder.glob("*.jsonl"):
        p.unlink()
    return db


def test_a_read_only_store_can_be_read_and_is_left_untouched(folder: Path) -> None:
    db = _store(folder)  # closed cleanly: no -wal file, the main file holds everything
    assert sorted(p.name for p in folder.iterdir()) == ["evalpipe.db"]
    run = _read_only(folder)
    before = _snapshot(folder)

    listed = run("runs", "list", "--store", db)
    assert listed.returncode == 0, listed.stderr
    assert "base" in listed.stdout and "run " in listed.stdout
    shown = run("runs", "show", "run", "--json", "--store", db)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["n_samples"] == 6
    exported = run("runs", "export", "base", "--store", db)
    assert exported.returncode == 0 and exported.stdout.count("\n") == 8, exported.stderr
    compared = run("compare", "run", "--baseline", "base", "--json", "--store", db)
    assert compared.returncode == 0, compared.stderr
    assert json.loads(compared.stdout)["n"] == 6

    # A write is refused with the reason, in one line.
    (src := Path(tempfile.mkdtemp()) / "new.jsonl").parent.chmod(0o755)
    _jsonl(src, "new", "tp1").chmod(0o644)
    refused = run("runs", "import", str(src), "--store", db)
    shutil.rmtree(src.parent)
    assert refused.returncode == 1
    assert refused.stderr.startswith("evalpipe: error: store ") and "read-only" in refused.stderr
    assert refused.stderr.count("\n") == 1

    assert _snapshot(folder) == before


def test_a_read_only_store_mid_write_shows_what_its_wal_holds(folder: Path) -> None:
    # A copy taken while a writer had committed into the -wal file and not checkpointed:
    # the newest run lives only in the -wal, and a reader must see it.
    live = folder / "live"
    live.mkdir()
    db = _store(live)
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE runs SET message = 'from the wal' WHERE run_id = 'base'")
    writer.commit()
    copy = folder / "copy"
    shutil.copytree(live, copy)
    writer.close()
    shutil.rmtree(live)
    assert (copy / "evalpipe.db-wal").exists()
    run = _read_only(copy)
    before = _snapshot(copy)

    shown = run("runs", "show", "base", "--json", "--store", str(copy / "evalpipe.db"))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["message"] == "from the wal"
    assert _snapshot(copy) == before


def test_creating_a_store_in_a_read_only_folder_says_so(folder: Path) -> None:
    _jsonl(folder / "a.jsonl", "a", "tp1")
    run = _read_only(folder)
    proc = run("runs", "import", "a.jsonl", "--store", "new.db")
    assert proc.returncode == 1
    assert f"directory {folder} is not writable" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.jsonl"]
