"""The release-gate policy loader: strict keys and types, layouts, hashing (pure, literal input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.gate.policy import Policy, Requirement, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
name: v0.12-release
requirements:
  - model: deepseek-v3.2   # a comment
    task: gsm8k
    layouts: [dp2tp8dcp8, tp8dcp8]
margin: 1.0
alpha: 0.05
min_n: 1319
max_error_rate: 0.0
inconclusive_blocks: true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "release.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def bad(data: Any) -> str:
    with pytest.raises(EvalpipeError) as info:
        parse_policy(data, "p.yaml")
    assert info.value.exit_code == 3
    assert "bad policy p.yaml" in info.value.message
    return info.value.message


def base(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "r",
        "requirements": [{"model": "m", "task": "gsm8k", "layouts": ["dp2tp8dcp8"]}],
        "margin": 1.0,
        "alpha": 0.05,
    }
    data.update(changes)
    return data


def test_a_good_policy_expands_each_layout_with_its_non_cp_baseline(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, GOOD))
    assert [(r.layout, r.baseline_layout) for r in policy.requirements] == [
        ("dp2tp8dcp8", "dp2tp8"),
        ("tp8dcp8", "tp8"),
    ]
    assert (policy.margin, policy.alpha, policy.min_n) == (1.0, 0.05, 1319)
    assert policy.max_error_rate == 0.0 and policy.inconclusive_blocks is True


def test_the_example_policy_loads() -> None:
    policy = load_policy(REPO / "examples" / "release.yaml")
    assert policy.name == "v0.12-release"
    assert ("tp2", "tp1") in [(r.layout, r.baseline_layout) for r in policy.requirements]


def test_defaults_are_the_strict_choices() -> None:
    policy = parse_policy(base())
    assert (policy.min_n, policy.max_error_rate, policy.inconclusive_blocks) == (100, 0.0, True)


def test_unknown_keys_are_refused_with_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "margins: 5\n")
    with pytest.raises(EvalpipeError) as info:
        load_policy(path)
    assert info.value.exit_code == 3
    assert str(path) in info.value.message and "margins: unknown key" in info.value.message
    req = {"model": "m", "task": "t", "layouts": ["tp8dcp8"], "layout": "x"}
    assert "requirements[0].layout: unknown key" in bad(base(requirements=[req]))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"margin": "1"}, "margin: must be a number"),
        ({"margin": True}, "margin: must be a number"),
        ({"margin": 0}, "margin: must be in points"),
        ({"alpha": 0.7}, "alpha: must be above 0"),
        ({"min_n": 1.5}, "min_n: must be a positive integer"),
        ({"min_n": True}, "min_n: must be a positive integer"),
        ({"max_error_rate": 2}, "max_error_rate: must be in [0, 1]"),
        ({"inconclusive_blocks": "yes"}, "inconclusive_blocks: must be true or false"),
        ({"name": ""}, "name: must be a non-empty string"),
        ({"requirements": []}, "requirements: must be a non-empty list"),
        ({"requirements": ["x"]}, "requirements[0]: must be a mapping"),
        ({"requirements": [{"model": "m", "task": "t"}]}, "requirements[0].layouts: required"),
        (
            {"requirements": [{"model": "m", "task": "t", "layouts": "tp8dcp8"}]},
            "layouts: must be a non-empty list",
        ),
    ],
)
def test_wrong_types_are_refused(changes: dict[str, Any], expected: str) -> None:
    assert expected in bad(base(**changes))


def test_margin_and_alpha_must_be_stated() -> None:
    data = base()
    del data["margin"]
    assert "margin: required" in bad(data)


def test_bad_layouts_are_policy_errors() -> None:
    req = {"model": "m", "task": "t", "layouts": ["dp2tq8"]}
    assert "requirements[0].layouts[0]: invalid layout 'dp2tq8'" in bad(base(requirements=[req]))
    req = {"model": "m", "task": "t", "layouts": ["tp2"]}
    assert "not context-parallel" in bad(base(requirements=[req]))
    req = {"model": "m", "task": "t", "layouts": ["tp2"], "baseline_layout": "TP2"}
    assert "compared with itself" in bad(base(requirements=[req]))
    req = {"model": "m", "task": "t", "layouts": ["tp8dcp8", "dcp8tp8"]}
    assert "listed twice" in bad(base(requirements=[req]))


def test_baseline_layout_override_for_non_cp_references() -> None:
    req = {"model": "m", "task": "t", "layouts": ["TP2"], "baseline_layout": "tp1"}
    (r,) = parse_policy(base(requirements=[req])).requirements
    assert (r.layout, r.baseline_layout, r.baseline_override) == ("tp2", "tp1", True)


def test_unreadable_and_invalid_files_exit_3(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.yaml", write(tmp_path, "name: [unclosed\n")):
        with pytest.raises(EvalpipeError) as info:
            load_policy(path)
        assert info.value.exit_code == 3 and str(path) in info.value.message
    with pytest.raises(EvalpipeError, match="must be a mapping"):
        load_policy(write(tmp_path, "- a\n- b\n"))


def test_yaml_tags_are_not_code(tmp_path: Path) -> None:
    path = write(tmp_path, "!!python/object/apply:os.system ['true']\n")
    with pytest.raises(EvalpipeError, match="not valid YAML"):
        load_policy(path)


def test_hash_ignores_comments_order_and_spelling_but_not_settings(tmp_path: Path) -> None:
    a = load_policy(write(tmp_path, GOOD))
    reordered = GOOD.replace("# a comment", "").replace("dp2tp8dcp8", "DCP8DP2TP8")
    b = load_policy(write(tmp_path, "alpha: 0.05\n" + reordered.replace("alpha: 0.05\n", "")))
    assert a.content_hash == b.content_hash and a.scope_key == b.scope_key
    c = load_policy(write(tmp_path, GOOD.replace("margin: 1.0", "margin: 2")))
    assert c.content_hash != a.content_hash
    assert c.scope_key == a.scope_key  # same releases gated, less strictly


def test_model_matching_full_basename_case_and_glob() -> None:
    r = Requirement("deepseek-v3.2", "gsm8k", "tp8dcp8", "tp8")
    assert r.matches_model("/models/DeepSeek-V3.2/")
    assert r.matches_model("deepseek-ai/DeepSeek-V3.2")
    assert not r.matches_model("/models/deepseek-v3.2-exp")
    g = Requirement("deepseek-v3.*", "gsm8k", "tp8dcp8", "tp8")
    assert g.matches_model("/m/DeepSeek-V3.2-Exp") and not g.matches_model("/m/DeepSeek-R1")


def test_policy_is_frozen() -> None:
    policy = parse_policy(base())
    assert isinstance(policy, Policy)
    with pytest.raises(AttributeError):
        policy.margin = 5.0  # type: ignore[misc]
