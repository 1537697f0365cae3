"""Every command evalpipe suggests works when run as printed.

Each scenario makes evalpipe print its hints (a run's summary and details, a comparison
without its baseline, a token comparison without teacher-forced traces, a score's next step)
against fake servers, then runs every suggested command exactly as printed and follows the
hints those print, until none is left. The one substitution: a hint for a run made on an
endpoint cannot know the URL of another layout's server and says ``--endpoint URL``; the test
gives the fake's. Hints that need the real engine (``evalpipe run`` without an endpoint) are
checked to parse with evalpipe's own parser (no unknown flag, no bad value).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from fake_forced import FakeForced
from fake_openai import FakeOpenAI
from test_score import MODEL, _config, add_run

from evalpipe.cli import build_parser, main
from evalpipe.store import open_store

COMMANDS = (
    "run|sweep|score|compare|comment|gate|dashboard|runs|import|store|layout|model|data|tasks"
)
HINT = re.compile(rf"evalpipe (?:{COMMANDS})\b[^`\n)]*")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hints write where they are run (`runs export … -o run.jsonl`): a test's own folder."""
    monkeypatch.chdir(tmp_path)


def hints(text: str) -> list[list[str]]:
    """Every ``evalpipe …`` command in ``text`` (in backticks, after "next:", "Make it with:",
    in parentheses), as argument lists without the leading ``evalpipe``."""
    found = []
    for match in HINT.finditer(text):
        words = shlex.split(match.group(0))[1:]
        if words not in found:
            found.append(words)
    return found


def run_cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def follow(
    capsys: pytest.CaptureFixture[str], text: str, url: str = "", depth: int = 0
) -> list[str]:
    """Run every hint in ``text`` (``URL`` → ``url``) and the hints each prints; every one
    must exit 0. Returns the commands run."""
    done = []
    for words in hints(text):
        args = [url if w == "URL" else w for w in words]
        code, out = run_cli(capsys, args)
        assert code == 0, f"`evalpipe {shlex.join(args)}` exited {code}:\n{out}"
        done.append(shlex.join(args))
        if depth < 3:
            done += follow(capsys, out, url, depth + 1)
    return done


def test_a_run_its_details_and_a_missing_baseline_lead_somewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "s.db")
    with FakeOpenAI(model="m", answer=" The answer is 3.") as srv:
        base = ["arith", "--model", "m", "--endpoint", srv.url, "--limit", "3", "--store", db]
        code, out = run_cli(capsys, ["run", *base, "--layout", "tp2dcp2"])
        assert code == 0, out
        (summary,) = hints(out)
        assert summary[:2] == ["runs", "show"] and summary[-2:] == ["--store", db]
        code, details = run_cli(capsys, summary)
        assert code == 0
        shown = hints(details)
        compare = ["compare", shown[2][1]]
        assert [h[:2] for h in shown] == [["runs", "show"], ["runs", "export"], compare]
        # The comparison has no baseline yet: its hint makes one (on the endpoint of that
        # layout's server), after which the comparison works.
        code, missing = run_cli(capsys, shown[2])
        assert code == 1 and "Make it with: evalpipe run arith --layout tp2 " in missing
        assert "--with-baseline" not in missing  # an endpoint serves one layout
        ran = follow(capsys, missing, srv.url)
        assert ran[0].startswith("run arith --layout tp2 ") and f"--store {db}" in ran[0]
        assert all(run_cli(capsys, h)[0] == 0 for h in shown)


def test_a_baseline_on_the_runs_own_layout_suggests_no_comparison_with_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "s.db")
    with FakeOpenAI(model="m", answer=" The answer is 3.") as srv:
        args = ["run", "arith", "--model", "m", "--endpoint", srv.url, "--limit", "2"]
        code, out = run_cli(capsys, [*args, "--layout", "tp2", "--store", db])
        assert code == 0, out
        run_id = hints(out)[0][2]
        code, missing = run_cli(
            capsys, ["compare", run_id, "--baseline-layout", "tp2", "--store", db]
        )
        assert code == 1 and "--with-baseline" not in missing
        follow(capsys, missing, srv.url)  # a repeat on tp2: then the comparison works
        code, out = run_cli(capsys, ["compare", run_id, "--baseline-layout", "tp2", "--store", db])
        assert code == 0, out


def test_comment_never_suggests_a_flag_it_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "s.db")
    with FakeOpenAI(model="m") as srv:
        args = ["run", "arith", "--model", "m", "--endpoint", srv.url, "--limit", "2"]
        assert run_cli(capsys, [*args, "--store", db])[0] == 0
    with open_store(db) as s:
        (run,) = s.list_runs()
    comment = ["comment", "--repo", "o/r", "--pr", "1", "--run", run.run_id, "--dry-run"]
    code, out = run_cli(capsys, [*comment, "--store", db])
    assert code == 1 and "--baseline-layout" in out and "--baseline RUN_ID" not in out
    # And a flag it lacks is no longer read as a prefix of one it has.
    code, out = run_cli(capsys, [*comment, "--baseline", run.run_id, "--store", db])
    assert code == 2 and "unrecognized arguments: --baseline" in out


def _scored_pair(db: str, cand_url: str, base_url: str, base_traces: bool = True) -> None:
    with open_store(db) as s:
        for run_id, layout, url, traces in (
            ("base", "tp1", base_url, base_traces),
            ("cand", "tp2", cand_url, True),
        ):
            run = add_run(s, run_id, _config(layout), traces=traces)
            s.update_run(run.with_(provenance={"engine": {"base_url": url}}))


def test_the_forced_path_hint_scores_and_its_next_step_compares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "s.db")
    with FakeForced(MODEL, shift=0.5) as cand_srv, FakeForced(MODEL) as base_srv:
        _scored_pair(db, cand_srv.url, base_srv.url)
        code, out = run_cli(capsys, ["compare", "cand", "--baseline", "base", "--store", db])
        assert code == 0 and "no forced-decode traces" in out and "no prefill traces" in out, out
        ran = follow(capsys, out)
    # Depth first: each score's own next step (the comparison) follows it.
    assert ran[0].startswith("score cand --against base --path forced-decode --endpoint ")
    assert ran[1] == f"compare cand --baseline base --store {db}"
    assert any(r.startswith("score cand --against base --path prefill --endpoint ") for r in ran)


def test_no_score_is_suggested_against_a_baseline_without_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "s.db")
    _scored_pair(db, "http://127.0.0.1:9", "http://127.0.0.1:9", base_traces=False)
    code, out = run_cli(capsys, ["compare", "cand", "--baseline", "base", "--store", db])
    assert code == 0, out
    assert "rerun the baseline with --logprobs 5 first" in out
    assert "evalpipe score" not in out


def test_a_run_scored_against_itself_suggests_no_comparison_with_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "s.db")
    with FakeForced(MODEL) as srv:
        _scored_pair(db, srv.url, srv.url)
        code, out = run_cli(
            capsys, ["score", "base", "--against", "base", "--endpoint", srv.url, "--store", db]
        )
    assert code == 0 and hints(out) == [], out


def test_a_dashboard_pair_of_a_layout_with_itself_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "s.db")
    _scored_pair(db, "http://127.0.0.1:9", "http://127.0.0.1:9")
    code, out = run_cli(capsys, ["dashboard", "--out", str(tmp_path / "site"), "--pair", "tp2=tp2",
                                 "--store", db])  # fmt: skip
    assert code == 1 and "a layout is not its own baseline" in out


@pytest.mark.parametrize(
    "text",
    [
        "no runs stored yet; start one with `evalpipe run gsm8k --layout tp1 --limit 20`",
        "Make it with: evalpipe run gsm8k --layout tp1 --model /m --seed 0 --concurrency 256 "
        "--limit 5 --engine-arg dtype=float32\n(or in one step: evalpipe run gsm8k --layout tp2 "
        "--with-baseline --baseline-layout tp1 --model /m --seed 0 --concurrency 256)",
    ],
)
def test_hints_that_need_the_engine_parse_as_printed(text: str) -> None:
    """What the fake servers cannot run (a local engine) must at least be a valid command."""
    parser = build_parser()
    for words in hints(text):
        parser.parse_args(words)  # exits 2 on an unknown flag or a bad value
