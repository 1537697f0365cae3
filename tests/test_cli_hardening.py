"""The command line as a whole under conditions a user meets: a closed pipe, a bad store URL, an
unreachable endpoint, a run compared with itself, hostile text on the terminal, and the
progress line's estimate. No engine: runs come from JSONL imports or a fake OpenAI server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from evalpipe import api
from evalpipe.report.textfmt import safe
from evalpipe.run.progress import Progress

TRACEBACK = "Traceback (most recent call last)"


def cli(
    *args: str, stdout: int | None = subprocess.PIPE, stderr: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args],
        stdout=stdout,
        stderr=stderr,
        text=True,
        timeout=180,
    )


def write_run(path: Path, run: dict[str, object], samples: list[dict[str, object]]) -> Path:
    fields = {"model": "m", "task": "gsm8k", "task_version": "1.0", "layout": "tp1", **run}
    lines = [{"run": fields}, *samples]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def samples(verdicts: list[bool], ids: list[str] | None = None) -> list[dict[str, object]]:
    ids = ids or [str(i) for i in range(len(verdicts))]
    return [
        {"item_id": i, "output": f"The answer is {n}.", "correct": ok, "prompt": f"q{i}"}
        for n, (i, ok) in enumerate(zip(ids, verdicts, strict=True))
    ]


@pytest.fixture
def closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader is already gone (``… | head`` after head exits)."""
    read, write = os.pipe()
    os.close(read)
    yield write
    os.close(write)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store with 40 runs: more output than any pipe buffer lets through unread."""
    db = str(tmp_path / "s.db")
    for n in range(40):
        src = write_run(tmp_path / f"r{n}.jsonl", {"run_id": f"run{n:02}"}, samples([True] * 3))
        api.import_run(db, str(src))
    return db


# --- a closed pipe ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["runs", "list"], ["runs", "list", "--json"], ["runs", "export", "run07"], ["--help"]],
    ids=" ".join,
)
def test_a_closed_stdout_is_quiet(args: list[str], store: str, closed_pipe: int) -> None:
    store_args = [] if args == ["--help"] else ["--store", store]
    proc = cli(*args, *store_args, stdout=closed_pipe)
    # The reader chose to stop reading: not an error, and nothing on stderr.
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_run_keeps_going_when_its_output_pipe_closes(tmp_path: Path, closed_pipe: int) -> None:
    # `evalpipe run … 2>&1 | head`: progress and summary both go to a pipe nobody reads.
    db = str(tmp_path / "s.db")
    with FakeOpenAI(model="m", answer=" The answer is 3.") as srv:
        proc = cli(
            "run", "arith", "--endpoint", srv.url, "--model", "m", "--limit", "30",
            "--concurrency", "1", "--store", db,
            stdout=closed_pipe, stderr=closed_pipe,
        )  # fmt: skip
    assert proc.returncode == 0
    [run] = api.list_runs(db)
    assert (run.status, run.n_samples) == ("finished", 30)


def test_a_file_system_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whatever command meets it: the file system's own answer, with the path, and exit 1.
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", "/data/run.jsonl")

    monkeypatch.setattr(api, "list_runs", full)
    from evalpipe.cli import main

    assert main(["runs", "list"]) == 1
    assert capsys.readouterr().err == (
        "evalpipe: error: /data/run.jsonl: No space left on device\n"
    )


# --- stores and endpoints ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@localhost:99999/db",
        "postgresql://u:s3cret@host:notaport/db",
        "postgresql://u:s3cret@host:0/db",
        "postgresql://u:s3cret@[::1/db",
    ],
)
def test_a_bad_store_url_is_one_line_without_the_password(url: str) -> None:
    proc = cli("runs", "list", "--store", url)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("evalpipe: error: ")
    assert "s3cret" not in proc.stderr
    assert "port must be a number from 1 to 65535" in proc.stderr


def test_an_unreachable_endpoint_names_the_url_to_check(tmp_path: Path) -> None:
    proc = cli(
        "run", "arith", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--limit", "2",
        "--store", str(tmp_path / "s.db"),
    )  # fmt: skip
    assert proc.returncode == 1
    assert "curl http://127.0.0.1:9/v1/models" in proc.stderr and "{base}" not in proc.stderr


# --- compare ----------------------------------------------------------------------------


def test_compare_refuses_a_run_with_itself(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    api.import_run(db, str(write_run(tmp_path / "a.jsonl", {"run_id": "a"}, samples([True]))))
    proc = cli("compare", "a", "--baseline", "a", "--store", db)
    assert proc.returncode == 1 and TRACEBACK not in proc.stderr
    assert "with itself" in proc.stderr


def test_the_hint_after_a_missing_baseline_layout_keeps_the_flag(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    api.import_run(db, str(write_run(tmp_path / "a.jsonl", {"run_id": "a"}, samples([True]))))
    proc = cli("compare", "a", "--baseline-layout", "tp2", "--store", db)
    assert proc.returncode == 1
    assert "--layout tp2 " in proc.stderr  # make the missing baseline itself …
    assert "--with-baseline --baseline-layout tp2" in proc.stderr  # … or both in one step


# --- hostile text on the terminal -------------------------------------------------------

HOSTILE = "m\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil"


def test_safe_neutralises_every_terminal_control() -> None:
    shown = safe(HOSTILE + "\nnext\ttab", limit=None)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in shown), shown
    assert "\u202e" not in shown  # bidi override: reorders what the terminal shows
    assert shown.startswith("m\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202eevil")
    assert safe("x" * 200, limit=None) == "x" * 200 and safe("x" * 200).endswith("…")


def test_runs_list_neutralises_control_characters(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    src = write_run(tmp_path / "a.jsonl", {"model": HOSTILE, "task": "t\x1b[31m"}, samples([True]))
    api.import_run(db, str(src))
    proc = cli("runs", "list", "--store", db)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "\x9b" not in proc.stdout
    assert "\\x1b[2J" in proc.stdout


def test_the_compare_report_neutralises_control_characters(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    ids = ["ok", "\x1b]0;pwned\x07", "\x1b[2J"]
    hostile = {"task": "t\x1b[31m", "task_version": "1\x1b[0m"}
    for rid, layout, verdicts in (("a", "tp2", [True] * 3), ("c", "tp1", [True, False, False])):
        run = {"run_id": rid, "layout": layout, **hostile}
        api.import_run(db, str(write_run(tmp_path / f"{rid}.jsonl", run, samples(verdicts, ids))))
    proc = cli("compare", "c", "--baseline", "a", "--store", db)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\x1b[2J" in proc.stdout  # a flipped item's id, shown escaped


# --- progress ---------------------------------------------------------------------------


class Clock:
    """A monotonic clock at an arbitrary origin, as ``time.monotonic`` is (seconds since boot)."""

    def __init__(self) -> None:
        self.now = 86_400.0

    def __call__(self) -> float:
        return self.now


class Log:
    """A non-terminal stream (a CI log) that keeps each line with the time it was written."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.lines += [(self.clock.now, line) for line in text.splitlines()]
        return len(text)

    def flush(self) -> None:
        pass


def _simulate(first: float, total: int, duration: float) -> list[tuple[float, int, str]]:
    """A run whose first answer takes ``first`` seconds (the engine warming up, every prompt
    prefilled at once) and the rest arrive evenly until ``duration``; returns (time, true
    seconds left, eta shown) per progress line."""
    clock = Clock()
    start = clock.now
    log = Log(clock)
    progress = Progress(total, "gsm8k", stream=log, clock=clock)  # type: ignore[arg-type]
    step = (duration - first) / (total - 1)
    for n in range(total):
        clock.now = start + first + n * step
        progress.update(True, False)
    return [
        (t - start, round(duration - (t - start)), line.rsplit("eta ", 1)[1])
        for t, line in log.lines
    ]


def test_the_eta_follows_the_recent_rate_not_the_slow_first_answer() -> None:
    # The case: `eta 3901s` for a run that took 40 s.
    for t, left, eta in _simulate(first=3.0, total=1319, duration=40.0):
        if eta != "?":
            assert abs(int(eta.removesuffix("s")) - left) <= max(2, 0.25 * left), (t, eta, left)


def test_progress_lines_come_at_a_steady_cadence() -> None:
    lines = _simulate(first=3.0, total=1319, duration=70.0)
    times = [t for t, _, _ in lines]
    # One line per 15 s of a CI log, on the clock (not 15 s after the first answer), and the
    # last one when the run completes.
    assert [round(t) for t in times[:-1]] == [15, 30, 45, 60]
    assert times[-1] == pytest.approx(70.0)
    assert lines[-1][2] == "0s"


@pytest.mark.parametrize(
    ("margin", "alpha", "min_n"),
    [
        (float("nan"), 0.05, 100),
        (0.0, 0.05, 100),
        (-0.01, 0.05, 100),
        (0.01, 1.0, 100),
        (0.01, 0.05, -1),
    ],
)
def test_compare_refuses_thresholds_no_decision_can_use(
    tmp_path: Path, margin: float, alpha: float, min_n: int
) -> None:
    from evalpipe.errors import EvalpipeError

    db = str(tmp_path / "s.db")
    with pytest.raises(EvalpipeError) as err:
        api.compare(db, ["a"], baseline="b", margin=margin, alpha=alpha, min_n=min_n)
    assert err.value.exit_code == 2
    assert not Path(db).exists()  # refused before any store is opened
