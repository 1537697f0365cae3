"""Which attention backend a layout runs on, the CPU DCP backend's rules (availability given,
as the engine side finds it) and the sliding-window override: pure."""

from __future__ import annotations

import json

import pytest

from evalpipe.backends import (
    CPU_DCP,
    CPU_STOCK,
    backend_for,
    cpu_dcp_errors,
    merged_overrides,
    sliding_window_override,
)
from evalpipe.errors import EvalpipeError
from evalpipe.layout import parse

EAGER = {"enforce_eager": True}


def test_the_backend_follows_the_platform_and_dcp() -> None:
    assert backend_for(parse("tp2dcp2"), "cpu").name == CPU_DCP
    assert "softmax LSE" in backend_for(parse("tp2dcp2"), "cpu").why
    assert backend_for(parse("tp2"), "cpu").name == CPU_STOCK
    assert backend_for(parse("tp8dcp8"), "cuda").name is None  # vLLM picks it at start-up
    assert "no platform" in backend_for(parse("tp2dcp2"), None).why


@pytest.mark.parametrize(
    ("args", "ok"),
    [
        ({}, True),  # interleave 1, block 128
        ({"cp_kv_cache_interleave_size": 16}, True),
        ({"cp_kv_cache_interleave_size": 16, "block_size": 32}, True),
        ({"cp_kv_cache_interleave_size": 128}, True),  # the whole block
        ({"cp_kv_cache_interleave_size": 256}, False),  # beyond the block
        ({"cp_kv_cache_interleave_size": 48, "block_size": 128}, False),  # does not divide it
        ({"dcp_kv_cache_interleave_size": 256}, False),  # the deprecated name counts too
        ({"cp_kv_cache_interleave_size": 0}, False),
    ],
)
def test_the_interleave_must_divide_the_block(args: dict[str, object], ok: bool) -> None:
    errors = cpu_dcp_errors(parse("tp2dcp2"), {**EAGER, **args}, None)
    assert (errors == []) is ok, errors


def test_eager_mode_an_fp8_cache_and_availability_are_each_named() -> None:
    errors = cpu_dcp_errors(
        parse("tp4dcp2"), {"enforce_eager": False, "kv_cache_dtype": "fp8"}, "vLLM is missing"
    )
    assert len(errors) == 3
    assert "cannot load here: vLLM is missing" in errors[0]
    assert "eager mode only" in errors[1] and "enforce_eager=false" in errors[1]
    assert "fp8" in errors[2]
    assert all(e.startswith("dcp2: ") for e in errors)


def test_a_layout_without_dcp_has_no_backend_rule() -> None:
    assert cpu_dcp_errors(parse("tp2"), {}, "unavailable") == []


def gemma_config() -> dict[str, object]:
    layers = (["sliding_attention"] * 5 + ["full_attention"]) * 3
    return {"sliding_window": 512, "layer_types": layers, "num_hidden_layers": 18}


def test_a_sliding_window_model_loses_its_window_and_keeps_its_layer_types() -> None:
    override = sliding_window_override(gemma_config())
    # The layer types stay: Gemma-3 gives each type its own RoPE (local 10 000, global 1e6).
    assert override == {"sliding_window": None}
    assert json.loads(json.dumps(override)) == override  # stored as JSON with the run
    assert sliding_window_override({"sliding_window": None}) is None  # Mistral, Llama
    assert sliding_window_override({"num_hidden_layers": 30}) is None  # SmolLM2
    # Qwen2 declares a window it does not use.
    assert sliding_window_override({"sliding_window": 131072, "use_sliding_window": False}) is None


def test_the_override_merges_into_the_users_and_refuses_a_clash() -> None:
    needed = {"sliding_window": None, "layer_types": ["full_attention"] * 2}
    assert merged_overrides(None, needed) == needed
    assert merged_overrides({"rope_theta": 1.0}, needed) == {"rope_theta": 1.0, **needed}
    assert merged_overrides(needed, needed) == needed
    with pytest.raises(EvalpipeError, match="sets sliding_window, which DCP on CPU needs"):
        merged_overrides({"sliding_window": 128}, needed)
    with pytest.raises(EvalpipeError, match="must be a mapping"):
        merged_overrides("x", needed)
