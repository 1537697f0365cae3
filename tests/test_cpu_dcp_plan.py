"""A DCP run on CPU, planned (no engine): its engine runs evalpipe's CPU DCP backend
(``EVALPIPE_CPU_DCP=1``), a sliding-window model runs without its window, and the pair's
baseline gets the same override — by ``run --with-baseline``, a sweep and a canary alike —
so both sides compute one model and pair; a run without DCP is planned as before."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from evalpipe.engine.args import pairs_for
from evalpipe.errors import EvalpipeError
from evalpipe.layout import parse
from evalpipe.options import RunOptions
from evalpipe.run.cpu_dcp import pair_engine_args
from evalpipe.run.plan import plan, run_config
from evalpipe.sweep.plan import NO_WINDOW, expand

LAYERS = (["sliding_attention"] * 5 + ["full_attention"]) * 3
GLOBAL = {"sliding_window": None}


def model_dir(tmp_path: Path, name: str, config: dict[str, Any]) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture
def gemma_like(tmp_path: Path) -> str:
    """A model folder as far as planning reads one: Gemma-3's window and layer types."""
    config = {"architectures": ["Gemma3ForCausalLM"], "sliding_window": 512}
    return model_dir(tmp_path, "gemma", {**config, "layer_types": LAYERS})


def options(model: str, layout: str, *args: str, **kw: Any) -> RunOptions:
    return RunOptions(
        task="arith", model=model, layout=layout, platform="cpu", limit=2, engine_args=args, **kw
    )


def test_a_dcp_run_gets_the_backend_and_every_layer_global(gemma_like: str) -> None:
    p = plan(options(gemma_like, "tp2dcp2"))
    assert p.engine_env["EVALPIPE_CPU_DCP"] == "1"
    assert p.engine_args.values["hf_overrides"] == GLOBAL
    assert p.engine_args.values["enforce_eager"] is True
    flags = p.engine_args.to_flags()
    assert json.loads(flags[flags.index("--hf-overrides") + 1]) == GLOBAL


def test_its_baseline_gets_the_same_override_and_the_two_pair(gemma_like: str) -> None:
    run = options(gemma_like, "tp2dcp2")
    shared = pair_engine_args(run, "tp2dcp2")
    run_plan = plan(dataclasses.replace(run, engine_args=shared))
    base_plan = plan(options(gemma_like, "tp2", *shared))
    assert base_plan.engine_args.values["hf_overrides"] == GLOBAL
    assert base_plan.engine_args.non_layout() == run_plan.engine_args.non_layout()
    assert base_plan.engine_env.get("EVALPIPE_CPU_DCP") is None  # the stock backend
    # The override the DCP run derives itself is the one it was given: one configuration.
    alone = plan(run)
    assert run_config(alone, {}).config_hash() == run_config(run_plan, {}).config_hash()


def test_the_users_own_overrides_are_kept_and_a_clash_refused(gemma_like: str) -> None:
    run = options(gemma_like, "tp2dcp2", 'hf_overrides={"rope_theta": 10000}')
    (pair,) = pair_engine_args(run, "tp2dcp2")
    assert json.loads(pair.partition("=")[2]) == {"rope_theta": 10000, **GLOBAL}
    clash = options(gemma_like, "tp2dcp2", 'hf_overrides={"sliding_window": 64}')
    with pytest.raises(EvalpipeError, match="DCP on CPU needs"):
        plan(clash)


def test_without_dcp_or_a_window_nothing_changes(gemma_like: str, tmp_path: Path) -> None:
    plain = options(gemma_like, "tp2", "dtype=float32")
    assert pair_engine_args(plain, "tp2") is plain.engine_args
    p = plan(plain)
    assert "hf_overrides" not in p.engine_args.values and "EVALPIPE_CPU_DCP" not in p.engine_env
    llama = model_dir(tmp_path, "llama", {"architectures": ["LlamaForCausalLM"]})
    run = options(llama, "tp2dcp2")
    assert pair_engine_args(run, "tp2dcp2") is run.engine_args
    assert "hf_overrides" not in plan(run).engine_args.values
    on_cuda = dataclasses.replace(options(gemma_like, "tp2dcp2"), platform="cuda")
    assert pair_engine_args(on_cuda, "tp2dcp2") is on_cuda.engine_args


def test_a_shell_setting_of_the_backend_never_reaches_a_plain_engine(
    gemma_like: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALPIPE_CPU_DCP", "1")
    assert plan(options(gemma_like, "tp2")).engine_env["EVALPIPE_CPU_DCP"] == ""


def test_the_backends_rules_refuse_before_anything_starts(gemma_like: str) -> None:
    with pytest.raises(EvalpipeError, match="eager mode only"):
        plan(options(gemma_like, "tp2dcp2", "enforce_eager=false"))
    with pytest.raises(EvalpipeError, match="must divide the KV block size"):
        plan(options(gemma_like, "tp2dcp2", "cp_kv_cache_interleave_size=48"))
    with pytest.raises(EvalpipeError, match=r"cannot read the config\.json"):
        pair_engine_args(options("some-org/some-model", "tp2dcp2"), "tp2dcp2")


def test_a_merge_fault_is_refused_on_a_layout_without_dcp(gemma_like: str) -> None:
    with pytest.raises(EvalpipeError, match="this layout has no DCP"):
        plan(options(gemma_like, "tp2", fault="dcp-merge:size=1"))
    faulted = plan(options(gemma_like, "tp2dcp2", fault="dcp-merge:size=1,rank=1"))
    assert faulted.engine_env["EVALPIPE_FAULT"] == "dcp-merge:size=1,rank=1"
    assert faulted.engine_env["EVALPIPE_CPU_DCP"] == "1"


def test_a_sweep_gives_both_cells_of_a_pair_the_override_on_their_own_engines(
    gemma_like: str,
) -> None:
    """tp2 as the baseline of tp2dcp2 runs without the window; tp2 alone runs the model
    as it is: two engines of one layout."""
    data = {"models": [gemma_like], "tasks": ["arith"], "layouts": ["tp2dcp2", "tp2=tp1"]}
    swept = expand(data, RunOptions(task="", model="", platform="cpu", limit=2))
    keys = [g.key for g in swept.groups]
    assert keys == [
        f"gemma@tp2{NO_WINDOW}",
        f"gemma@tp2dcp2{NO_WINDOW}",
        "gemma@tp1",
        "gemma@tp2",
    ]
    pair_args = {g.layout: g.cells[0].options.engine_args for g in swept.groups if g.variant}
    assert pair_args["tp2"] == pair_args["tp2dcp2"]
    assert any(a.startswith("hf_overrides=") for a in pair_args["tp2"])
    plain = next(g for g in swept.groups if g.key == "gemma@tp2")
    assert plain.cells[0].options.engine_args == ()
    run, base = swept.pairs[0].run, swept.pairs[0].baseline
    assert "tp2dcp2" in run and "/tp2 " in base


def test_one_baseline_serves_every_interleave(gemma_like: str) -> None:
    """The KV interleave is DCP's alone: a sweep's baseline runs without it, and pairs with
    the DCP run that has it."""
    data = {
        "models": [gemma_like],
        "tasks": ["arith"],
        "layouts": ["tp2dcp2"],
        "engine_args": {"cp_kv_cache_interleave_size": 16},
    }
    swept = expand(data, RunOptions(task="", model="", platform="cpu", limit=2))
    base, run = (g.cells[0].options for g in swept.groups)
    assert "cp_kv_cache_interleave_size=16" in run.engine_args
    assert not any("interleave" in a for a in base.engine_args)
    assert plan(base).engine_args.non_layout() == plan(run).engine_args.non_layout()
    assert pairs_for(parse("tp2dcp2"), run.engine_args) == run.engine_args


def test_scoring_a_dcp_run_re_creates_its_engine_on_the_backend(
    gemma_like: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``evalpipe score`` starts a stored run's engine again: a DCP run on CPU gets the CPU
    DCP backend and keeps its override; a tp2 run never inherits the backend from the shell."""
    from builders import run_config as stored

    from evalpipe.records import Run
    from evalpipe.run.score_engine import engine_spec

    monkeypatch.setenv("EVALPIPE_CPU_DCP", "1")
    args = {"hf_overrides": GLOBAL, "tensor_parallel_size": 2, "decode_context_parallel_size": 2}
    config = stored("tp2dcp2", model=gemma_like, engine_kind="serve", platform="cpu")
    dcp = Run("d", dataclasses.replace(config, engine_args=args), "finished", "t")
    spec = engine_spec(dcp, None, "--endpoint", 5)
    assert spec.env["EVALPIPE_CPU_DCP"] == "1" and spec.args.values["hf_overrides"] == GLOBAL
    tp2 = Run(
        "t", stored("tp2", model=gemma_like, engine_kind="serve", platform="cpu"), "finished", "t"
    )
    assert engine_spec(tp2, None, "--endpoint", 5).env["EVALPIPE_CPU_DCP"] == ""


def test_run_with_baseline_gives_the_baseline_the_dcp_runs_interleave_for_its_grid(
    gemma_like: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline's engine arguments lose the interleave (DCP's alone), but its generated
    long-context items must straddle the DCP run's boundaries: the interleave goes with the
    grid. (Found by the DCP engine test: the tp2 baseline of passkey at interleave 64 got
    another grid and its prompts did not pair.)"""
    from evalpipe import api
    from evalpipe.api import running
    from evalpipe.run import plan as run_plan

    seen: list[RunOptions] = []
    monkeypatch.setattr(run_plan, "precheck", lambda *options: None)
    monkeypatch.setattr(
        running, "run_repeated", lambda options, repeat, reuse: seen.append(options) or []
    )
    options = RunOptions(
        task="passkey",
        model=gemma_like,
        layout="tp2dcp2",
        platform="cpu",
        engine_args=("cp_kv_cache_interleave_size=64",),
    )
    api.run_with_baseline(options, "tp2")
    base, run = seen
    assert (base.layout, base.shard_layout, base.shard_interleave) == ("tp2", "tp2dcp2", 64)
    assert not any(a.startswith("cp_kv_cache_interleave_size") for a in base.engine_args)
    assert "cp_kv_cache_interleave_size=64" in run.engine_args
    seen.clear()
    api.run_with_baseline(dataclasses.replace(options, engine_args=()), "tp2")
    assert seen[0].shard_interleave is None  # the platform's default on both sides
