"""Property-based tests (hypothesis) of the layout grammar and the policy loader, and the rule
sets ``layout explain`` says it applied.

Properties: any text either parses or raises LayoutError (never anything else); a parsed
layout's canonical form parses back to the same layout and is its own canonical form; any
spelling of a layout (order, case, explicit sizes of 1) parses to the one canonical form. Any
YAML-ish text given as a policy loads or raises the policy error (exit 3), never anything else.
"""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evalpipe import api
from evalpipe.errors import EvalpipeError
from evalpipe.gate.policy import EXIT_BAD_POLICY, load_policy
from evalpipe.layout import SIZE_KEYS, Layout, LayoutError, parse

SETTINGS = settings(max_examples=300, deadline=None)
KEYWORDS = ["dp", "tp", "pp", "pcp", "dcp", "ep"]

sizes = st.integers(min_value=1, max_value=4096)
layouts = st.builds(Layout, dp=sizes, tp=sizes, pp=sizes, pcp=sizes, dcp=sizes, ep=st.booleans())
# Text made of the grammar's own pieces (keywords, digits, signs, blanks) finds the near
# misses ("tp08", "dcpdcp2", "tp-2") that uniformly random text almost never hits.
pieces = st.sampled_from([*KEYWORDS, *(k.upper() for k in KEYWORDS), *"0123456789", "-", ".", " "])
near_misses = st.lists(pieces, max_size=12).map("".join)


# --- layout grammar ------------------------------------------------------------------------


@SETTINGS
@given(st.one_of(st.text(), near_misses))
@example("٣")  # a decimal digit that is not ASCII
@example("tp²")
@example("tp" + "9" * 5000)  # more digits than int() converts by default
def test_any_text_parses_or_raises_layout_error(text: str) -> None:
    try:
        layout = parse(text)
    except LayoutError as err:
        assert err.message.startswith("invalid layout") or "must be" in err.message
        return
    assert isinstance(layout, Layout)
    assert parse(layout.canonical) == layout


@SETTINGS
@given(layouts)
def test_canonical_parses_back_to_the_same_layout(layout: Layout) -> None:
    text = layout.canonical
    assert parse(text) == layout
    assert parse(text).canonical == text
    assert text == text.lower() and " " not in text


@SETTINGS
@given(layouts, st.randoms(use_true_random=False), st.booleans(), st.booleans())
def test_every_spelling_has_one_canonical_form(
    layout: Layout, rnd: object, upper: bool, explicit_ones: bool
) -> None:
    tokens = [
        f"{key}{size}"
        for key, size in layout.sizes().items()
        if size != 1 or explicit_ones or (key == "tp" and not layout.ep)
    ]
    if layout.ep:
        tokens.append("ep")
    rnd.shuffle(tokens)  # type: ignore[attr-defined]
    spelled = "".join(tokens)
    spelled = spelled.upper() if upper else spelled
    parsed = parse(f"  {spelled} ")
    assert parsed == layout
    assert parsed.canonical == layout.canonical


@SETTINGS
@given(layouts, st.sampled_from(SIZE_KEYS), sizes)
def test_a_repeated_keyword_is_refused(layout: Layout, key: str, size: int) -> None:
    explicit = "".join(f"{k}{v}" for k, v in layout.sizes().items())  # every keyword once
    with pytest.raises(LayoutError, match=f"duplicate '{key}'"):
        parse(f"{explicit}{key}{size}")


# --- policy loader ---------------------------------------------------------------------------

_policy_keys = st.sampled_from(
    [
        *("name", "requirements", "margin", "alpha", "min_n", "max_error_rate", "model"),
        *("task", "layouts", "baseline_layout", "inconclusive_blocks", "token_drift", "x"),
    ]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["tp2", "tp1", "dp2tp8dcp8", "1e400", "10**100", ".nan", "2020-13-45"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_policy_keys, inner, max_size=5)
    ),
    max_leaves=20,
)


def _yamlish(value: object, indent: int = 0) -> str:
    """Block-style YAML-ish text for ``value``: keys may repeat, scalars are written raw, so
    the text is often not the value it came from (or not YAML at all)."""
    pad = " " * indent
    if isinstance(value, dict):
        return "".join(f"{pad}{k}:\n{_yamlish(v, indent + 2)}" for k, v in value.items())
    if isinstance(value, list):
        return "".join(f"{pad}-\n{_yamlish(v, indent + 2)}" for v in value)
    return f"{pad}{value}\n"


_texts = st.one_of(
    st.text(max_size=200),
    _values.map(_yamlish),
    st.lists(st.tuples(_policy_keys, _values.map(str)), max_size=8).map(
        lambda pairs: "".join(f"{k}: {v}\n" for k, v in pairs)
    ),
    st.lists(st.sampled_from([*"[]{}:-,&*!|>'\"#\n ", "a", "1", "tp2"]), max_size=40).map("".join),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_texts)
@example("margin: 1.0\nmargin: 50\n")
@example("requirements: " + "[" * 3000 + "]" * 3000)
@example("min_n: 1" + "0" * 5000)
@example("a: &a [*a]")
def test_any_policy_text_loads_or_is_a_policy_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        policy = load_policy(path)
    except EvalpipeError as err:
        assert err.exit_code == EXIT_BAD_POLICY
        assert err.message.startswith(f"bad policy {path}: ")
        assert "\n" not in err.message
        return
    assert policy.requirements and 0 < policy.margin < 100


# --- which rule sets `layout explain` applied ---------------------------------------------


@pytest.mark.parametrize(
    ("platform", "attention", "names"),
    [
        (None, None, ["vllm", "platform"]),
        ("cuda", None, ["vllm", "cuda"]),
        ("cpu", None, ["vllm", "cpu"]),
        ("ascend", None, ["vllm", "ascend"]),
        ("ascend", "sfa", ["vllm", "ascend", "ascend+sfa"]),
        (None, "sfa", ["vllm", "platform", "attention"]),
        ("cpu", "sfa", ["vllm", "cpu", "attention"]),
    ],
)
def test_explain_says_which_rule_sets_it_applied(
    platform: str | None, attention: str | None, names: list[str]
) -> None:
    info = api.explain_layout("tp8dcp8", platform=platform, attention=attention)
    assert [r.split(":")[0] for r in info["rules"]] == names
    text = api.format_layout(info)
    assert text.count("\n") == len(text.splitlines()) - 1
    assert all(r in text for r in info["rules"])
    if attention == "sfa" and platform != "ascend":
        assert "attention: sfa changes nothing here" in text


def test_explain_text_differs_with_platform_and_attention() -> None:
    """The issue's case: a layout valid everywhere printed the same text with and without
    --platform ascend --attention sfa."""

    def text(*flags: str) -> str:
        cmd = [sys.executable, "-m", "evalpipe", "layout", "explain", "tp8dcp8", *flags]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    plain, ascend = text(), text("--platform", "ascend", "--attention", "sfa")
    assert plain != ascend
    assert "\nrules    vllm: " in plain and "\n         platform: none given" in plain
    assert "ascend+sfa: " in ascend


def test_explain_says_when_vllms_own_check_was_skipped() -> None:
    info = api.explain_layout("tp3dcp2", model="smollm2")  # breaks a rule: vLLM not asked
    assert info["valid"] is False
    assert info["rules"][-1].startswith("vllm-config: skipped")


# Letters the grammar never uses stay errors whatever surrounds them.
@SETTINGS
@given(layouts, st.sampled_from([c for c in string.ascii_letters if c.lower() not in "dtpce"]))
def test_a_foreign_letter_is_always_named(layout: Layout, letter: str) -> None:
    with pytest.raises(LayoutError, match=f"unknown token '{letter}"):
        parse(layout.canonical + letter)
