"""The frames from the outside: the README's notebook example run as printed, `evalpipe runs
export --format csv|parquet` (and its JSONL default, unchanged), usage errors, and the extras:
pandas is never loaded by `import evalpipe.api` or `--help`, and a missing one is named."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from token_fixtures import add_traced_run, token_trace

from evalpipe import api
from evalpipe.api.frames import SAMPLE_COLUMNS, TABLES
from evalpipe.cli import main
from evalpipe.cli.tables import TABLES as CLI_TABLES
from evalpipe.importers.jsonl import export_run
from evalpipe.store import open_store

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("### Notebooks: ", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the Notebooks section has a python example"
    return match.group(1)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """./evalpipe.db as the README's example expects it: a passkey pair tp2/tp1 with decode
    traces over several 256-token bands, and a gsm8k pair dp2tp8dcp8/dp2tp8 with flips."""
    monkeypatch.chdir(tmp_path)
    lengths = [200 + 97 * i for i in range(12)]
    ok = [True] * 12
    with open_store("evalpipe.db") as s:
        ids = {
            "tp1": add_traced_run(
                s, "20261130-000000-pk0tp1", "tp1", ok, task="passkey", prompt_tokens=lengths,
                traces={str(i): token_trace(i, 40) for i in range(12)},
            ).run_id,
            "tp2": add_traced_run(
                s, "20261130-010000-pk0tp2", "tp2", ok, task="passkey", prompt_tokens=lengths,
                started_at="2026-11-30T01:00:00+00:00",
                traces={str(i): token_trace(i, 40, shift=0.2, seed=1) for i in range(12)},
            ).run_id,
            "base": add_traced_run(
                s, "20261129-000000-gsmbas", "dp2tp8", [i % 3 > 0 for i in range(30)]
            ).run_id,
            "dcp": add_traced_run(
                s, "20261129-010000-gsmdcp", "dp2tp8dcp8",
                [(i % 3 > 0) != (i in (4, 9, 12)) for i in range(30)],
                started_at="2026-11-29T01:00:00+00:00",
            ).run_id,
        }  # fmt: skip
    return ids


def test_the_readme_example_runs_and_shows_compares_figures(store: dict[str, str]) -> None:
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(readme_example(), "README.md", "exec"), namespace)
    (tokens,) = api.compare(None, [store["tp2"]], baseline_layout="tp1", shard_period=128)
    assert tokens.tokens is not None
    decode = tokens.tokens.paths["decode"]
    curve = namespace["curve"]
    assert isinstance(curve, pd.Series) and list(curve.index) == [0, 256, 512, 768, 1024, 1280]
    assert f"mean KL {decode.metrics['kl'].mean:.3g} nats/token" in out.getvalue()
    (c,) = api.compare(None, [store["dcp"]])
    table = namespace["table"]
    assert isinstance(table, pd.DataFrame)
    assert (table.loc[True, False], table.loc[False, True]) == (c.result.only_run,
                                                                c.result.only_baseline)  # fmt: skip
    flips = namespace["flips"]
    assert isinstance(flips, pd.DataFrame)
    assert set(flips.item_id) == {"4", "9", "12"} == {i for f in c.flips.values() for i in f}


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_table_exports_hold_the_frames(store: dict[str, str], tmp_path: Path) -> None:
    assert TABLES == CLI_TABLES
    code, _, err = cli("runs", "export", "--format", "csv", "--table", "runs", "--task",
                       "passkey", "--since", "2026-11-30", "-o", "runs.csv")  # fmt: skip
    assert code == 0 and "runs: 2 rows" in err
    assert list(pd.read_csv("runs.csv").run_id) == [store["tp2"], store["tp1"]]
    code, _, _ = cli("runs", "export", store["dcp"], store["base"], "--format", "parquet",
                     "-o", "samples.parquet")  # fmt: skip
    written = pd.read_parquet("samples.parquet")
    expected = api.samples_frame(None, [store["dcp"], store["base"]])
    assert code == 0 and list(written.columns) == list(SAMPLE_COLUMNS)
    pd.testing.assert_frame_equal(written, expected)
    code, out, _ = cli("runs", "export", store["dcp"], "--format", "csv", "--table", "pairs")
    assert code == 0 and len(pd.read_csv(io.StringIO(out))) == 30
    code, _, _ = cli("runs", "export", store["tp2"], "--format", "parquet", "--table", "tokens",
                     "--baseline-layout", "tp1", "--path", "decode", "-o", "t.parquet")  # fmt: skip
    tokens = pd.read_parquet("t.parquet")
    assert code == 0 and set(tokens.path) == {"decode"} and len(tokens) == 12 * 40
    assert tokens.attrs["baseline_id"] == store["tp1"]


def test_the_jsonl_export_is_unchanged(store: dict[str, str], tmp_path: Path) -> None:
    expected = io.StringIO()
    with open_store("evalpipe.db") as s:
        export_run(s, store["tp2"], expected)
    assert cli("runs", "export", store["tp2"][:18], "-o", "run.jsonl")[0] == 0
    assert Path("run.jsonl").read_text(encoding="utf-8") == expected.getvalue()
    code, out, _ = cli("runs", "export", "--format", "jsonl", store["tp2"])
    assert code == 0 and out == expected.getvalue()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["RUN", "--format", "parquet"], "parquet is binary: give a file, e.g. -o samples"),
        (["RUN", "--tag", "rc1"], "--tag: only for a table; add --format csv"),
        (["RUN", "--table", "runs"], "--table needs --format csv or --format parquet"),
        ([], "a JSONL export is one whole run: give one run id (`evalpipe runs list`"),
        (["RUN", "RUN", "--format", "csv", "--table", "pairs"], "compares one RUN"),
        (["--format", "csv", "--table", "runs", "--baseline", "X"], "does not take --baseline"),
        (["RUN", "--format", "csv", "--table", "pairs", "--path", "decode"], "--path"),
        (["RUN", "--format", "csv", "--table", "tokens", "--task", "x"], "does not take --task"),
    ],
)
def test_usage_errors_exit_2_and_say_what_to_do(
    store: dict[str, str], args: list[str], says: str
) -> None:
    code, out, err = cli("runs", "export", *[store["dcp"] if a == "RUN" else a for a in args])
    assert (code, out) == (2, "") and says in err


def test_bad_input_through_the_cli(store: dict[str, str]) -> None:
    code, _, err = cli("runs", "export", "nope", "gone", "--format", "csv")
    assert code == 1 and "no run 'nope', 'gone'" in err
    code, out, _ = cli("runs", "export", "--format", "csv", "--table", "runs", "--task", "x")
    assert code == 0 and out.splitlines() == [",".join(api.runs_frame(None).columns)]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_pandas_is_loaded_only_to_build_a_frame() -> None:
    done = run_python(
        "import sys, contextlib, io\n"
        "import evalpipe.api\n"
        "from evalpipe.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['runs', 'export', '--help'])\n"
        "print([m for m in ('pandas', 'pyarrow', 'numpy') if m in sys.modules])\n"
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_missing_pandas_or_pyarrow_names_its_extra(store: dict[str, str]) -> None:
    # A module set to None in sys.modules cannot be imported: what a missing package does.
    block = "import sys; sys.modules['{}'] = None\nfrom evalpipe.cli import main\n"
    no_pandas = run_python(
        block.format("pandas") + "sys.exit(main(['runs', 'export', '--format', 'csv']))"
    )
    assert no_pandas.returncode == 1
    assert "DataFrames need pandas" in no_pandas.stderr
    assert "pip install 'evalpipe[frames]'" in no_pandas.stderr
    no_arrow = run_python(
        block.format("pyarrow")
        + "sys.exit(main(['runs', 'export', '--format', 'parquet', '-o', 'x.parquet']))"
    )
    assert no_arrow.returncode == 1, no_arrow.stderr
    assert "writing parquet needs pyarrow" in no_arrow.stderr
    assert "pip install 'evalpipe[parquet]'" in no_arrow.stderr
    assert not Path("x.parquet").exists()
