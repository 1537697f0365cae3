"""Layout grammar, canonical form, vLLM / platform rules, flags and explain(); literal inputs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.layout import (
    ATTENTIONS,
    PLATFORMS,
    Layout,
    LayoutError,
    current_platform,
    explain,
    parse,
    validate,
)

EXPLAIN_KEYS = {
    "layout",
    "valid",
    "errors",
    "dp",
    "tp",
    "pp",
    "pcp",
    "dcp",
    "ep",
    "devices",
    "baseline",
    "vllm_args",
}


# --- grammar -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dp2tp8dcp8", Layout(dp=2, tp=8, dcp=8)),
        ("tp8", Layout(tp=8)),
        ("TP4PCP2DCP2", Layout(tp=4, pcp=2, dcp=2)),
        ("pp2tp4", Layout(tp=4, pp=2)),
        ("tp1", Layout()),
        ("dcp2tp2", Layout(tp=2, dcp=2)),
        ("pcp2pp2dp3tp4dcp2", Layout(dp=3, tp=4, pp=2, pcp=2, dcp=2)),
        ("tp8ep", Layout(tp=8, ep=True)),
        ("eptp8", Layout(tp=8, ep=True)),
        ("EP", Layout(ep=True)),
        ("Tp16", Layout(tp=16)),
        ("  tp2  ", Layout(tp=2)),
        ("dp2", Layout(dp=2)),  # tp missing -> 1
    ],
)
def test_parse_valid(text: str, expected: Layout) -> None:
    assert parse(text) == expected


def test_parse_longest_keyword_first() -> None:
    # "dcp" must not be read as d + cp or as "dp"; "pcp" not as "p" + "cp" or "pp".
    assert parse("dcp4tp4") == Layout(tp=4, dcp=4)
    assert parse("pcp2pp2") == Layout(pp=2, pcp=2)
    assert parse("dp2dcp2tp2") == Layout(dp=2, tp=2, dcp=2)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("tp8x", "'x'"),
        ("cp2tp8", "'cp2'"),
        ("tp8sp2", "'sp2'"),
        ("foo", "'foo'"),
        ("tp", "'tp' needs a size"),
        ("tp0", "'tp0': the size must be at least 1"),
        ("tp-2", "'tp-2': the size must be a positive integer"),
        ("tp2.5", "'tp2.5'"),
        ("tp08", "'tp08': write the size without leading zeros"),
        ("ep2", "'ep2': 'ep' takes no size"),
        ("tp2tp4", "duplicate 'tp'"),
        ("epep", "duplicate 'ep'"),
        ("tp2 dcp2", "'tp2 '"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_parse_rejects_and_names_token(text: str, named: str) -> None:
    with pytest.raises(LayoutError) as info:
        parse(text)
    assert named in info.value.message
    assert "dp|tp|pp|pcp|dcp" in info.value.message  # the grammar is shown
    assert isinstance(info.value, EvalpipeError)
    assert info.value.exit_code == 1


def test_parse_reports_every_bad_token() -> None:
    with pytest.raises(LayoutError) as info:
        parse("tp0xdcp2dcp4")
    message = info.value.message
    assert "'tp0'" in message
    assert "'x'" in message
    assert "duplicate 'dcp'" in message


def test_bad_token_keeps_original_case() -> None:
    with pytest.raises(LayoutError, match="'XY'"):
        parse("TP2XY")


# --- Layout -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("tp1", "tp1"),
        ("dp1tp1", "tp1"),
        ("pp1", "tp1"),
        ("ep", "tp1ep"),
        ("dp2", "dp2"),
        ("pp2tp4", "tp4pp2"),
        ("DCP8TP8DP2", "dp2tp8dcp8"),
        ("dcp2pcp2tp4", "tp4pcp2dcp2"),
        ("eptp8dp2", "dp2tp8ep"),
        ("dcp2pcp2pp2tp2dp1ep", "tp2pp2pcp2dcp2ep"),
    ],
)
def test_canonical(text: str, canonical: str) -> None:
    assert parse(text).canonical == canonical


def test_canonical_round_trips() -> None:
    for text in ["tp1", "tp1ep", "dp2tp8dcp8", "tp4pp2pcp2dcp8ep", "dp4"]:
        assert parse(text).canonical == text


@pytest.mark.parametrize(
    ("text", "devices"),
    [
        ("tp1", 1),
        ("tp8", 8),
        ("tp8dcp8", 8),  # DCP reuses the TP ranks
        ("dp2tp8dcp8", 16),
        ("tp4pcp2dcp8", 8),  # PCP adds ranks, DCP does not
        ("dp2tp2pp3pcp2", 24),
        ("tp4ep", 4),
    ],
)
def test_devices(text: str, devices: int) -> None:
    assert parse(text).devices == devices


def test_is_cp() -> None:
    assert parse("tp8dcp2").is_cp
    assert parse("tp2pcp2").is_cp
    assert not parse("dp2tp8pp2ep").is_cp


def test_baseline_drops_only_cp() -> None:
    assert parse("dp2tp8pp2pcp2dcp4ep").baseline() == Layout(dp=2, tp=8, pp=2, ep=True)
    assert parse("tp8dcp8").baseline() == Layout(tp=8)
    assert parse("tp4").baseline() == Layout(tp=4)


def test_vllm_args() -> None:
    assert parse("tp8dcp8").vllm_args() == [
        "--tensor-parallel-size",
        "8",
        "--decode-context-parallel-size",
        "8",
    ]
    assert parse("tp1").vllm_args() == ["--tensor-parallel-size", "1"]
    assert parse("dp2tp4pp2pcp2dcp2ep").vllm_args() == [
        "--data-parallel-size",
        "2",
        "--tensor-parallel-size",
        "4",
        "--pipeline-parallel-size",
        "2",
        "--prefill-context-parallel-size",
        "2",
        "--decode-context-parallel-size",
        "2",
        "--enable-expert-parallel",
    ]


def test_engine_kwargs() -> None:
    assert parse("tp1").engine_kwargs() == {"tensor_parallel_size": 1}
    assert parse("dp2tp4pp2pcp2dcp2ep").engine_kwargs() == {
        "data_parallel_size": 2,
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 2,
        "prefill_context_parallel_size": 2,
        "decode_context_parallel_size": 2,
        "enable_expert_parallel": True,
    }


def test_layout_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse("tp2").tp = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"tp": 0}, {"dcp": -1}, {"dp": True}, {"pp": 2.0}, {"ep": 1}],
)
def test_layout_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(LayoutError):
        Layout(**kwargs)  # type: ignore[arg-type]


# --- vLLM's generic rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "tp1",
        "tp8dcp8",
        "tp8dcp4",
        "tp8dcp1",
        "dp2tp8dcp8",
        "tp4pcp2",
        "tp4pcp2dcp2",  # dcp spans the PCP axis
        "tp4pcp2dcp8",  # dcp spans TP x PCP
        "pp2tp4dcp2",
        "dp2tp2pcp2",  # vLLM 0.32 allows PCP with DP
        "tp8ep",
    ],
)
def test_generic_valid(text: str) -> None:
    assert validate(parse(text)) == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tp8dcp3", "dcp3 must divide tp8"),
        ("dcp2", "dcp2 must divide tp1"),
        ("tp4dcp8", "dcp8 must divide tp4"),
        ("tp4pcp2dcp4", "dcp in {1, 2, 8}"),
        ("tp1pcp4dcp2", "dcp in {1, 4}"),
    ],
)
def test_generic_invalid(text: str, fragment: str) -> None:
    errors = validate(parse(text))
    assert len(errors) == 1
    assert fragment in errors[0]


# --- platform rules ---------------------------------------------------------------------


def test_cuda_adds_no_size_rule() -> None:
    assert validate(parse("tp4pcp2dcp8"), platform="cuda") == []
    assert validate(parse("tp8dcp3"), platform="cuda") == validate(parse("tp8dcp3"))


def test_cpu_rejects_pcp_and_leaves_dcp_to_its_backend() -> None:
    assert validate(parse("tp2pp2"), platform="cpu") == []
    # DCP runs on evalpipe's CPU DCP backend, whose rules are tests/test_backends.py's
    assert validate(parse("tp2dcp2"), platform="cpu") == []
    (pcp_error,) = validate(parse("tp2pcp2"), platform="cpu")
    assert "pcp2" in pcp_error
    assert "PCP" in pcp_error


def test_ascend_rejects_pcp() -> None:
    assert validate(parse("tp4pcp2"), platform=None) == []
    (error,) = validate(parse("tp4pcp2"), platform="ascend")
    assert "prefill context parallel" in error
    assert validate(parse("tp8dcp2"), platform="ascend") == []


def test_ascend_sfa_needs_dcp_equal_tp() -> None:
    assert validate(parse("tp8dcp8"), platform="ascend", attention="sfa") == []
    assert validate(parse("tp8"), platform="ascend", attention="sfa") == []
    (error,) = validate(parse("tp8dcp4"), platform="ascend", attention="sfa")
    assert "dcp4 with tp8" in error
    # dense attention and other platforms do not have this rule
    assert validate(parse("tp8dcp4"), platform="ascend") == []
    assert validate(parse("tp8dcp4"), platform="cuda", attention="sfa") == []
    assert validate(parse("tp8dcp4"), attention="sfa") == []


def test_collects_every_violation() -> None:
    # generic (dcp not in {1, pcp, tp*pcp}) + Ascend PCP + Ascend SFA: three messages
    errors = validate(parse("tp4pcp2dcp3"), platform="ascend", attention="sfa")
    assert len(errors) == 3
    assert "dcp in {1, 2, 8}" in errors[0]
    assert "prefill context parallel" in errors[1]
    assert "only with dcp equal to tp" in errors[2]
    # generic + CPU PCP
    assert len(validate(parse("tp8pcp2dcp3"), platform="cpu")) == 2


@pytest.mark.parametrize(("platform", "attention"), [("tpu", None), ("CUDA", None), (None, "mla")])
def test_unknown_platform_or_attention(platform: str | None, attention: str | None) -> None:
    with pytest.raises(LayoutError, match="unknown"):
        validate(parse("tp1"), platform=platform, attention=attention)
    with pytest.raises(LayoutError, match="unknown"):
        explain("tp1", platform=platform, attention=attention)


def test_platform_and_attention_names() -> None:
    assert PLATFORMS == ("cuda", "ascend", "cpu")
    assert ATTENTIONS == ("sfa",)


# --- explain ----------------------------------------------------------------------------


def test_explain_valid_cp_layout() -> None:
    info = explain("DCP8TP8DP2")
    assert info == {
        "layout": "dp2tp8dcp8",
        "valid": True,
        "errors": [],
        "dp": 2,
        "tp": 8,
        "pp": 1,
        "pcp": 1,
        "dcp": 8,
        "ep": False,
        "devices": 16,
        "baseline": "dp2tp8",
        "vllm_args": [
            "--data-parallel-size",
            "2",
            "--tensor-parallel-size",
            "8",
            "--decode-context-parallel-size",
            "8",
        ],
    }
    json.dumps(info)  # JSON-ready


def test_explain_non_cp_layout_has_no_baseline() -> None:
    info = explain("tp4ep")
    assert set(info) == EXPLAIN_KEYS
    assert info["baseline"] is None
    assert info["ep"] is True
    assert info["valid"] is True


def test_explain_invalid_layout() -> None:
    info = explain("tp8dcp3", platform="ascend", attention="sfa")
    assert set(info) == EXPLAIN_KEYS
    assert info["valid"] is False
    assert len(info["errors"]) == 2
    assert info["baseline"] == "tp8"
    assert info["vllm_args"][-2:] == ["--decode-context-parallel-size", "3"]


def test_explain_unparseable_keeps_key_set() -> None:
    info = explain("tp8zz")
    assert set(info) == EXPLAIN_KEYS
    assert info["layout"] == "tp8zz"
    assert info["valid"] is False
    assert len(info["errors"]) == 1
    assert "'zz'" in info["errors"][0]
    for key in ("dp", "tp", "pp", "pcp", "dcp", "ep", "devices", "baseline", "vllm_args"):
        assert info[key] is None, key
    json.dumps(info)


# --- current_platform -------------------------------------------------------------------


def test_current_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    present: set[str] = set()
    monkeypatch.setattr(
        "importlib.util.find_spec",
        lambda name: object() if name in present else None,
    )
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("os.path.exists", lambda path: False)
    assert current_platform() == "cpu"
    monkeypatch.setattr("os.path.exists", lambda path: path == "/dev/nvidia0")
    assert current_platform() == "cuda"
    monkeypatch.setattr("os.path.exists", lambda path: False)
    monkeypatch.setattr(
        "shutil.which", lambda name: "/x/nvidia-smi" if name == "nvidia-smi" else None
    )
    assert current_platform() == "cuda"
    present.add("vllm_ascend")
    assert current_platform() == "ascend"
    present.clear()
    present.add("torch_npu")
    assert current_platform() == "ascend"


def test_layout_imports_nothing_heavy() -> None:
    # `evalpipe layout explain` must work without vLLM/torch and stay fast: check in a fresh
    # interpreter, since this one may already hold them from other tests.
    code = (
        "import sys; from evalpipe.layout import current_platform, explain; "
        "current_platform(); explain('tp8dcp8', platform='cpu'); "
        "heavy = sorted({'torch', 'vllm', 'torch_npu', 'vllm_ascend'} & set(sys.modules)); "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
