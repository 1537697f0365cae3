"""Strict YAML everywhere evalpipe reads it: the loader itself (evalpipe.yamlload) and each
reader of user YAML (task files, ``--param`` values; policies in tests/gate) refuse duplicate
keys with the line and key, and turn deep, huge or self-referencing input into one clear
error instead of a traceback or a silently wrong value."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.options import parse_params
from evalpipe.tasks.load import load_task
from evalpipe.yamlload import MAX_DEPTH, MAX_VALUES, YamlInputError, load_yaml

REPO = Path(__file__).resolve().parents[1]
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(6)
)


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("margin: 1.0\nalpha: 0.05\nmargin: 50\n", 3, "margin"),
        ("{a: 1, a: 2}", 1, "a"),
        ("outer:\n  b: 1\n  c: 2\n  b: 3\n", 4, "b"),
        # Keys are compared as loaded: these spell one key twice.
        ("1: x\n0x1: y\n", 2, "0x1"),
        ("yes: 1\ntrue: 2\n", 2, "true"),
        ("'a': 1\na: 2\n", 2, "a"),
        ("- k: 1\n- k: 1\n  k: 2\n", 3, "k"),
    ],
)
def test_duplicate_keys_are_refused_with_line_and_key(text: str, line: int, key: str) -> None:
    with pytest.raises(YamlInputError) as info:
        load_yaml(text)
    assert info.value.line == line
    assert f"duplicate key {key!r}" in info.value.message
    assert info.value.message.startswith(f"line {line}, column ")
    assert "\n" not in info.value.message


def test_merge_keys_may_be_overridden() -> None:
    # `<<` merges, then an explicit key overrides: that is YAML's meaning, not a duplicate.
    text = "base: &b {margin: 1.0, alpha: 0.05}\nstrict:\n  <<: *b\n  margin: 0.5\n"
    assert load_yaml(text) == {
        "base": {"margin": 1.0, "alpha": 0.05},
        "strict": {"margin": 0.5, "alpha": 0.05},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: " + "[" * 5000 + "]" * 5000, f"nested deeper than {MAX_DEPTH} levels"),
        ("x: " + "{a: " * 3000 + "1" + "}" * 3000, f"nested deeper than {MAX_DEPTH} levels"),
        ("n: 1" + "0" * 5000, "cannot read the value '1000"),
        ("when: 2020-13-45", "cannot read the value '2020-13-45': month must be in 1..12"),
        ("x: &a [*a]", "*a refers to a value that contains it"),
        ("x: &a {k: *a}", "*a refers to a value that contains it"),
        (LAUGHS, f"more than {MAX_VALUES} values once its aliases"),
        ("a: 1\n---\nb: 2\n", "expected a single document"),
        ("name: \x00", "#x0000"),
        ("x: !!python/object:os.system 'echo hi'", "could not determine a constructor"),
        ("x: [1, 2\ny: 3", "line 2, column 2: expected ',' or ']'"),
    ],
)
def test_hostile_yaml_is_one_line_error(text: str, message: str) -> None:
    with pytest.raises(YamlInputError) as info:
        load_yaml(text)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_plain_data_loads_as_safe_load_does() -> None:
    text = "a: [1, 2.5, true, null, 'x']\nb: {c: 2020-01-02}\nd: &d 3\ne: *d\n"
    data = load_yaml(text)
    assert data["a"] == [1, 2.5, True, None, "x"]
    assert str(data["b"]["c"]) == "2020-01-02"
    assert data["e"] == 3
    assert load_yaml("") is None
    assert load_yaml("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))


# --- task files ---------------------------------------------------------------------------


def _task_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The task loader compared keys by spelling before: `yes` and `true` slipped through.
        ("name: mini\nversion: '1'\nsampling: {max_tokens: 4}\nyes: 1\ntrue: 2\n", "line 5"),
        ("name: mini\nsampling: {max_tokens: 1" + "0" * 5000 + "}\n", "cannot read the value"),
        ("name: mini\ndata: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than"),
        ("name: mini\ndescription: 2020-13-45\n", "month must be in 1..12"),
        ("name: mini\ndata: &d {fields: *d}\n", "refers to a value that contains it"),
    ],
)
def test_task_files_are_read_strictly(tmp_path: Path, text: str, message: str) -> None:
    path = _task_file(tmp_path, text)
    with pytest.raises(EvalpipeError) as info:
        load_task(str(path))
    assert info.value.message.startswith(f"{path}: not a valid task file: line ")
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_task_file_that_is_not_utf8_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "mini.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(EvalpipeError, match=r"mini.yaml: not a valid task file: not UTF-8"):
        load_task(str(path))


# --- --param values ---------------------------------------------------------------------


def test_param_values_refuse_duplicate_keys() -> None:
    with pytest.raises(EvalpipeError) as info:
        parse_params(["lengths={a: 1, a: 2}"])
    assert "duplicate key 'a'" in info.value.message
    assert info.value.message.startswith("--param 'lengths={a: 1, a: 2}'")


def test_param_given_twice_is_refused() -> None:
    with pytest.raises(EvalpipeError, match=r"--param n is given twice"):
        parse_params(["n=2", "n=3"])


@pytest.mark.parametrize(
    "value",
    ["1" + "0" * 5000, "[" * 3000 + "]" * 3000, "2020-13-45", "&a [*a]"],
)
def test_param_values_that_would_crash_are_errors(value: str) -> None:
    with pytest.raises(EvalpipeError, match=r"^--param 'x=.*: the value is not valid YAML"):
        parse_params([f"x={value}"])


def test_run_with_a_duplicate_param_key_fails_before_anything_starts(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "evalpipe", "run", "passkey", "--model", "smollm2"),
            *("--param", "lengths={a: 1, a: 2}", "--store", str(tmp_path / "s.db")),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r"duplicate key 'a'", proc.stderr)
    assert not (tmp_path / "s.db").exists()


# --- no reader of user YAML bypasses the strict loader -------------------------------------


def test_no_module_reads_user_yaml_with_safe_load() -> None:
    """Every ``yaml.safe_load``/``yaml.load`` left in the package, with why it may stay."""
    allowed = {
        # Not user files: round-trip checks of values evalpipe itself rendered, or third-party
        # lm-eval task files (with their own !function tags) read from lm-eval's package.
        "evalpipe/engine/args.py",
        "evalpipe/run/lmeval_task.py",
    }
    users = {
        str(p.relative_to(REPO))
        for p in (REPO / "evalpipe").rglob("*.py")
        if re.search(r"yaml\.(safe_)?load\(", p.read_text(encoding="utf-8"))
    }
    assert users <= allowed | {"evalpipe/yamlload.py"}, sorted(users - allowed)


def test_an_engine_arg_value_with_a_key_twice_is_refused() -> None:
    from evalpipe.errors import EvalpipeError
    from evalpipe.records import engine_arg_value

    assert engine_arg_value("4096") == 4096
    assert engine_arg_value("{a: 1}") == {"a": 1}
    assert engine_arg_value("2020-13-45") == "2020-13-45"  # not JSON-able: stays text
    with pytest.raises(EvalpipeError, match="duplicate key"):
        engine_arg_value("{a: 1, a: 2}")
