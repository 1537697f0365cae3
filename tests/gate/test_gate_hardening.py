"""The gate's answers to bad input: a duplicate key, deep or huge values in a policy (exit 3,
one line), and a store that cannot be opened or read (exit 4, never 1 = drift, and never a
new store created by a typo)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from builders import run_config

from evalpipe.cli import main
from evalpipe.errors import EXIT_GATE_STORE, EvalpipeError, StoreError
from evalpipe.gate import select
from evalpipe.gate.policy import EXIT_BAD_POLICY, load_policy, parse_policy
from evalpipe.gate.select import evaluate_gate
from evalpipe.records import Run, Sample, new_run_id
from evalpipe.store import Store, open_store

N = 200
MODEL = "/models/DeepSeek-V3.2"
_clock = iter(range(10_000))

POLICY = """\
name: release
requirements:
  - model: deepseek-v3.2
    task: gsm8k
    layouts: [tp2]
    baseline_layout: tp1
margin: 1.0
alpha: 0.05
min_n: 100
"""


def add_run(store: Store, layout: str, wrong: int = 0) -> Run:
    """A finished run of N items, the first ``wrong`` answered wrong."""
    tick = next(_clock)
    run = Run(
        run_id=new_run_id(),
        config=run_config(layout, model=MODEL, engine_args={}),
        status="finished",
        started_at=f"2026-01-01T00:{tick // 60:02d}:{tick % 60:02d}+00:00",
        n_items=N,
    )
    store.create_run(run)
    store.put_samples(
        Sample(
            run_id=run.run_id,
            item_id=str(i),
            prompt_hash=f"h{i}",
            output=f"answer {i}",
            target="1",
            correct=i >= wrong,
        )
        for i in range(N)
    )
    finished = run.with_(**store.summarize(run.run_id))
    store.update_run(finished)
    return finished


def drifted_store(path: Path) -> Path:
    """tp2 answers 33 points worse than tp1: any sane margin fails it."""
    with open_store(path) as store:
        add_run(store, "tp1")
        add_run(store, "tp2", wrong=66)
    return path


def gate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``evalpipe gate ARGS`` in process: its exit code and stderr. An exception escaping
    ``main`` (a traceback for a user) fails the test right here."""
    code = main(["gate", *args])
    err = capsys.readouterr().err
    return code, err


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- duplicate keys ------------------------------------------------------------------------


def test_a_duplicate_margin_cannot_loosen_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(drifted_store(tmp_path / "s.db"))
    strict = write(tmp_path, POLICY, "strict.yaml")
    assert gate(capsys, "--policy", strict, "--store", store)[0] == 1  # the drift fails
    # YAML keeps the last value: margin 50 would let the 33-point drift pass (exit 0).
    loose = write(tmp_path, POLICY + "margin: 50\n", "loose.yaml")
    code, err = gate(capsys, "--policy", loose, "--store", store)
    assert code == EXIT_BAD_POLICY
    assert err == (
        f"evalpipe: error: bad policy {loose}: not valid YAML: line 10, column 1: duplicate "
        "key 'margin' (first at line 7); YAML would keep only the last value: remove one\n"
    )


@pytest.mark.parametrize(
    "text",
    [
        POLICY.replace("    task: gsm8k\n", "    task: gsm8k\n    task: gsm8k\n"),
        POLICY.replace("alpha: 0.05", "alpha: 0.05\n'alpha': 0.05"),
        POLICY + "inconclusive_blocks: yes\ninconclusive_blocks: true\n",
    ],
)
def test_any_duplicate_key_in_a_policy_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(EvalpipeError, match=r"duplicate key") as info:
        load_policy(write(tmp_path, text))
    assert info.value.exit_code == EXIT_BAD_POLICY


# --- deep and huge values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("requirements: " + "[" * 5000 + "]" * 5000, "nested deeper than 100 levels"),
        ("description: " + "{a: " * 2000 + "1" + "}" * 2000, "nested deeper than 100 levels"),
        ("min_n: 1" + "0" * 100, "min_n: must be a positive integer up to 1_000_000_000"),
        ("min_n: 10000000000", "min_n: must be a positive integer up to 1_000_000_000"),
        ("min_n: 1" + "0" * 5000, "cannot read the value '1000"),
        ("min_n: 1e400", "min_n: must be a positive integer"),  # YAML 1.1: text, not a number
        ("min_n: 10**100", "min_n: must be a positive integer"),
        ("margin: 1" + "0" * 400, "margin: must be a finite number, got a huge integer"),
        ("margin: 1.0e+400", "margin: must be a finite number, got inf"),
        ("alpha: .nan", "alpha: must be a finite number, got nan"),
        ("description: 2020-13-45", "cannot read the value '2020-13-45'"),
        ('name: "rel\\0ease"', "name: must not contain a NUL character"),
        ("requirements: &r [*r]", "*r refers to a value that contains it"),
        ("name: " + "x" * 100 + "\x00", "#x0000"),
    ],
)
def test_deep_or_huge_policy_values_exit_3_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, message: str
) -> None:
    key = change.split(":")[0]
    kept = [line for line in POLICY.splitlines() if not line.startswith(f"{key}:")]
    if key == "requirements":
        kept = [line for line in kept if not line.startswith(" ")]
    policy = write(tmp_path, "\n".join([*kept, change]) + "\n")
    code, err = gate(capsys, "--policy", policy, "--store", str(tmp_path / "s.db"))
    assert code == EXIT_BAD_POLICY, err
    assert err.startswith(f"evalpipe: error: bad policy {policy}: ")
    assert message in err
    assert err.count("\n") == 1 and len(err) < 400


def test_a_huge_min_n_given_in_python_is_refused_too() -> None:
    data: dict[str, Any] = {
        "name": "r",
        "requirements": [{"model": "m", "task": "t", "layouts": ["tp2"], "baseline_layout": "tp1"}],
        "margin": 1.0,
        "alpha": 0.05,
        "min_n": 10**100,
    }
    with pytest.raises(EvalpipeError, match=r"min_n: must be a positive integer up to") as info:
        parse_policy(data)
    assert info.value.exit_code == EXIT_BAD_POLICY


# --- a store that cannot be opened or read -------------------------------------------------


def test_a_typo_store_exits_4_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(tmp_path, POLICY)
    typo = tmp_path / "evalpipe.bd"
    code, err = gate(capsys, "--policy", policy, "--store", str(typo))
    assert code == EXIT_GATE_STORE == 4
    assert f"no evalpipe store at {typo}" in err and err.count("\n") == 1
    assert not typo.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.yaml"]


def test_an_empty_file_is_not_turned_into_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, err = gate(capsys, "--policy", write(tmp_path, POLICY), "--store", str(empty))
    assert code == EXIT_GATE_STORE
    assert "is empty, not an evalpipe store" in err
    assert empty.stat().st_size == 0


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("not-a-db", "is not an evalpipe store or it is corrupted"),
        ("postgresql://nobody@127.0.0.1:1/x", "cannot connect to the PostgreSQL store"),
        ("mysql://u@h/d", "'mysql' is not supported"),
    ],
)
def test_a_store_that_cannot_be_opened_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: str, message: str
) -> None:
    if store == "not-a-db":
        store = str(tmp_path / "garbage.db")
        Path(store).write_bytes(b"this is not SQLite\n" * 300)
    code, err = gate(capsys, "--policy", write(tmp_path, POLICY), "--store", store)
    assert code == EXIT_GATE_STORE, err
    assert message in err and err.count("\n") == 1


def test_a_bad_policy_is_reported_before_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = gate(capsys, "--policy", write(tmp_path, "margin: [\n"), "--store", "/no/such.db")
    assert code == EXIT_BAD_POLICY


def _damage_samples(path: Path) -> None:
    """Overwrite the leaf pages of the samples table: the runs stay listable, reading the
    answers fails ("database disk image is malformed")."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = [
        p
        for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'samples' AND pagetype = 'leaf'"
        )
    ]
    conn.close()
    assert len(pages) > 2
    with path.open("r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(b"\xa5" * page_size)


def test_a_store_whose_samples_cannot_be_read_exits_4_not_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        add_run(store, "tp1")
        add_run(store, "tp2")  # no drift: only the damage can fail this gate
    _damage_samples(path)
    code, err = gate(capsys, "--policy", write(tmp_path, POLICY), "--store", str(path))
    assert code == EXIT_GATE_STORE, err
    assert "malformed" in err and err.count("\n") == 1


def test_a_store_error_while_comparing_is_not_a_failed_requirement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Other errors of a comparison (runs that do not pair, …) fail the requirement; a store
    # that cannot be read must stop the gate instead, or CI reads "drift".
    with open_store(tmp_path / "s.db") as store:
        add_run(store, "tp1")
        add_run(store, "tp2")

        def unreadable(*args: object, **kwargs: object) -> None:
            raise StoreError(f"store {store.name}: disk I/O error")

        monkeypatch.setattr(select, "compare_runs", unreadable)
        with pytest.raises(StoreError, match="disk I/O error"):
            evaluate_gate(store, load_policy(write(tmp_path, POLICY)))


def test_gate_exit_codes_end_to_end(tmp_path: Path) -> None:
    """The documented codes from a real process: 1 drift, 3 bad policy, 4 no store."""
    store = str(drifted_store(tmp_path / "s.db"))

    def run(policy: str, store: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "evalpipe", "gate", "--policy", policy, "--store", store]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    good, dup = write(tmp_path, POLICY, "good.yaml"), write(tmp_path, POLICY + "margin: 50\n")
    results = [run(good, store), run(dup, store), run(good, str(tmp_path / "typo.db"))]
    assert [r.returncode for r in results] == [1, 3, 4]
    assert all("Traceback" not in r.stderr for r in results)
    assert not (tmp_path / "typo.db").exists()
