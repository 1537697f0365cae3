"""Sweep plans: what a plan expands to, and every refusal with its line (no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions
from evalpipe.sweep.entries import read_plan_text
from evalpipe.sweep.plan import expand

TEMPLATE = RunOptions(task="", model="", store="/tmp/x.db")


def _expand(text: str, source: str = "plan.yaml") -> object:
    data, lines = read_plan_text(text, source)
    return expand(data, TEMPLATE, source, lines)


def _refusal(text: str) -> str:
    with pytest.raises(EvalpipeError) as info:
        _expand(text)
    return str(info.value)


def test_cp_layout_brings_its_baseline_and_groups_are_one_engine_per_model_and_layout() -> None:
    plan = _expand(
        "models: [{name: ds, endpoints: {dp2tp8: 'http://a', dp2tp8dcp8: 'http://b'}}]\n"
        "tasks: [arith, gsm8k]\n"
        "layouts: [dp2tp8dcp8]\n"
        "repeat: 2\n"
        "limit: 8\n"
    )
    assert [g.key for g in plan.groups] == ["ds@dp2tp8", "ds@dp2tp8dcp8"]  # baseline first
    base, cp = plan.groups
    assert [c.key for c in base.cells] == [
        "ds/arith/dp2tp8#0",
        "ds/arith/dp2tp8#1",
        "ds/gsm8k/dp2tp8#0",
        "ds/gsm8k/dp2tp8#1",
    ]
    assert all(c.baseline for c in base.cells) and not any(c.baseline for c in cp.cells)
    assert base.endpoint == "http://a" and cp.endpoint == "http://b"
    assert base.devices == 0  # an endpoint's devices are someone else's
    assert [(p.run, p.baseline) for p in plan.pairs][:2] == [
        ("ds/arith/dp2tp8dcp8#0", "ds/arith/dp2tp8#0"),
        ("ds/arith/dp2tp8dcp8#1", "ds/arith/dp2tp8#1"),
    ]
    o = cp.cells[0].options
    assert (o.task, o.layout, o.engine, o.endpoint, o.limit) == (
        "arith",
        "dp2tp8dcp8",
        "endpoint",
        "http://b",
        8,
    )
    assert o.reuse_finished and o.store == "/tmp/x.db"  # a sweep reuses finished cells


def test_launched_layouts_carry_devices_engine_args_and_explicit_baselines() -> None:
    plan = _expand(
        "models: [smollm2]\n"
        "tasks: [{task: arith, limit: 3, params: {n: 40}}]\n"
        "layouts: [tp2=tp1, tp1]\n"
        "engine_args: {max_model_len: 4096}\n"
        "concurrency: 4\n"
    )
    assert [(g.key, g.devices) for g in plan.groups] == [("smollm2@tp1", 1), ("smollm2@tp2", 2)]
    # tp1 is a baseline and a layout of its own: one cell, not two.
    assert [c.key for c in plan.cells] == ["smollm2/arith/tp1#0", "smollm2/arith/tp2#0"]
    o = plan.cells[1].options
    assert o.engine == "serve" and o.engine_args == ("max_model_len=4096",)
    assert (o.limit, o.concurrency, o.params) == (3, 4, ("n=40",))
    assert [(p.run, p.baseline) for p in plan.pairs] == [
        ("smollm2/arith/tp2#0", "smollm2/arith/tp1#0")
    ]


def test_a_long_context_baseline_runs_on_its_cp_layouts_grid() -> None:
    plan = _expand(
        "models: [{name: ds, endpoints: {tp8: 'http://a', tp8dcp8: 'http://b', "
        "tp8dcp4: 'http://c'}}]\n"
        "tasks: [passkey]\n"
        "layouts: [tp8dcp8, tp8dcp4]\n"
    )
    base = plan.groups[0]
    assert [c.key for c in base.cells] == ["ds/passkey/tp8@tp8dcp8#0", "ds/passkey/tp8@tp8dcp4#0"]
    assert [c.options.shard_layout for c in base.cells] == ["tp8dcp8", "tp8dcp4"]
    assert [c.options.shard_interleave for c in base.cells] == [None, None]  # the platform's


def test_a_long_context_baseline_gets_its_cp_layouts_interleave_with_its_grid() -> None:
    """The interleave is the DCP engine's alone, so the baseline's engine arguments lose it;
    its items must still straddle the DCP run's boundaries (dcp x interleave)."""
    plan = _expand(
        "models: [{name: ds, endpoints: {tp8: 'http://a', tp8dcp8: 'http://b'}}]\n"
        "tasks: [passkey, arith]\n"
        "layouts: [tp8dcp8]\n"
        "engine_args: {cp_kv_cache_interleave_size: 64}\n"
    )
    cells = {c.key: c.options for c in plan.cells}
    base = cells["ds/passkey/tp8@tp8dcp8#0"]
    assert (base.shard_layout, base.shard_interleave) == ("tp8dcp8", 64)
    assert cells["ds/arith/tp8#0"].shard_interleave is None  # no grid: nothing to carry


def test_every_problem_is_refused_at_once_with_its_line() -> None:
    text = (
        "models:\n"  # 1
        "  - smollm3\n"  # 2
        "tasks:\n"  # 3
        "  - arith\n"  # 4
        "  - gsm9k\n"  # 5
        "layouts:\n"  # 6
        "  - tp2dcp3\n"  # 7
        "  - tp1=tp1\n"  # 8
        "repeat: 0\n"  # 9
        "colour: blue\n"  # 10
    )
    message = _refusal(text)
    assert "plan.yaml:2: unknown model 'smollm3'" in message and "smollm2" in message
    assert "plan.yaml:5: unknown task 'gsm9k'" in message
    assert "plan.yaml:7: layout tp2dcp3 cannot run on platform" in message
    assert "plan.yaml:8: tp1=tp1: a layout is not its own baseline" in message
    assert "plan.yaml:9: repeat must be a whole number from 1 to 100, not 0" in message
    assert "plan.yaml:10: unknown key 'colour'" in message


def test_missing_lists_duplicates_and_bad_yaml_are_refused() -> None:
    # A missing key is on no line (not the plan's line 1); an empty one is on its own.
    assert "  plan.yaml: models is missing" in _refusal("tasks: [arith]\nlayouts: [tp1]\n")
    assert "plan.yaml:2: tasks is empty" in _refusal("models: [m]\ntasks: []\nlayouts: [tp1]\n")
    dup = _refusal("models: [smollm2]\ntasks: [arith, arith]\nlayouts: [tp1]\n")
    assert "plan.yaml:2: task arith is listed twice" in dup
    with pytest.raises(EvalpipeError, match=r"plan.yaml: not a valid sweep plan: line 2"):
        _expand("models: [a]\nmodels: [b]\n")
    with pytest.raises(EvalpipeError, match="a sweep plan is a mapping"):
        _expand("- just a list\n")


def test_lm_eval_tasks_and_bad_params_are_refused_with_their_line() -> None:
    message = _refusal(
        "models: [smollm2]\ntasks:\n  - lm-eval:gsm8k\n  - {task: passkey, params: {nope: 1}}\n"
        "layouts: [tp1]\n"
    )
    assert "plan.yaml:3: lm-eval:gsm8k: lm-eval tasks are not swept" in message
    assert "plan.yaml:4:" in message and "nope" in message


def test_a_model_folder_is_named_by_its_last_part_and_must_be_unique(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name / "m").mkdir(parents=True)
    plan = _expand(f"models: [{tmp_path}/a/m/]\ntasks: [arith]\nlayouts: [tp1]\n")
    assert [c.key for c in plan.cells] == ["m/arith/tp1#0"]
    assert plan.cells[0].options.model == str(tmp_path / "a" / "m")  # absolute, for workers
    twice = _refusal(f"models: [{tmp_path}/a/m, {tmp_path}/b/m]\ntasks: [arith]\nlayouts: [tp1]\n")
    assert "plan.yaml:1: model m is listed twice" in twice


def test_a_model_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    message = _refusal(f"models: [{tmp_path}/none]\ntasks: [arith]\nlayouts: [tp1]\n")
    assert "plan.yaml:1:" in message and "does not exist" in message


def test_a_path_or_name_that_is_not_text_is_refused_with_its_line() -> None:
    message = _refusal(
        "models:\n  - {name: smollm2, path: 5}\ntasks:\n  - {task: arith, data: [1]}\n"
        "layouts: [tp1]\n"
    )
    assert "plan.yaml:2: model path is text, not 5" in message
    assert "plan.yaml:4: task data is text, not [1]" in message
