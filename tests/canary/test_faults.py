"""Fault specs (pure) and each fault's arithmetic on plain torch tensors."""

from __future__ import annotations

import pytest
import torch

from evalpipe.engine.plugin import faultmath
from evalpipe.errors import EvalpipeError
from evalpipe.faults import (
    ARCHITECTURES,
    KINDS,
    check_architecture,
    check_layout,
    fault_label,
    parse_fault,
)


def test_defaults_fill_in_and_canonical_round_trips() -> None:
    spec = parse_fault("key-scale:size=0.2")
    assert (spec.period, spec.offset, spec.width, spec.threshold, spec.target) == (
        128,
        127,
        1,
        0,
        "k",
    )
    assert spec.canonical == (
        "key-scale:size=0.2,period=128,offset=127,width=1,threshold=0,target=k"
    )
    assert parse_fault(spec.canonical) == spec
    # Order and spacing of the parameters do not matter; the canonical text is one.
    other = parse_fault(" key-scale : period=128 , size=0.2 ")
    assert other.canonical == spec.canonical


def test_offset_defaults_to_the_last_slot_of_the_period() -> None:
    assert parse_fault("out-scale:size=0.1,period=8").offset == 7
    assert parse_fault("out-scale:size=0.1,period=8,offset=0").offset == 0


def test_labels_name_kind_size_and_what_differs_from_the_defaults() -> None:
    assert parse_fault("key-scale:size=0.2").label == "key-scale 0.2"
    assert parse_fault("key-scale:size=0.5,target=kv").label == "key-scale 0.5 on kv"
    assert parse_fault("out-mix:size=0.1,period=8").label == "out-mix 0.1 p%8=7"
    assert (
        parse_fault("key-scale:size=0.5,period=16,offset=0,width=4,target=v").label
        == "key-scale 0.5 on v p%16=0-3"
    )
    assert (
        parse_fault("kv-position:size=4,period=1,offset=0,threshold=1024").label
        == "kv-position 4 p>=1024"
    )
    assert fault_label("not a spec") == "not a spec"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("scale-keys:size=1", "unknown fault kind 'scale-keys'"),
        ("key-scale", "size is required"),
        ("key-scale:size=0", "nonzero relative scale"),
        ("key-scale:size=-1", "above -1"),
        ("key-scale:size=nan", "size must be finite"),
        ("key-scale:size=0.1,colour=red", "unknown parameter 'colour'"),
        ("out-scale:size=0.1,target=v", "unknown parameter 'target'"),
        ("key-scale:size=0.1,size=0.2", "size is given twice"),
        ("key-scale:size=0.1,period=0", "period must be 1 to 2**30"),
        ("key-scale:size=0.1,period=8,offset=8", "offset must be 0 to period - 1 (7)"),
        ("key-scale:size=0.1,period=8,width=9", "width must be 1 to period (8)"),
        ("key-scale:size=0.1,threshold=-1", "threshold must be 0"),
        ("key-scale:size=0.1,target=q", "target must be one of k, v, kv"),
        ("kv-position:size=0.5", "nonzero whole number of positions"),
        ("key-scale:size=0.1,period=x", "period must be a whole number"),
        ("key-scale:size=0.1,junk", "'junk' is not KEY=VALUE"),
    ],
)
def test_bad_specs_are_refused_with_what_is_allowed(text: str, needle: str) -> None:
    with pytest.raises(EvalpipeError) as exc:
        parse_fault(text)
    assert needle in str(exc.value)


def test_an_unknown_kind_lists_every_kind() -> None:
    with pytest.raises(EvalpipeError) as exc:
        parse_fault("nope:size=1")
    assert all(kind in str(exc.value) for kind in KINDS)


def test_architecture_check_names_the_model_and_the_supported_ones() -> None:
    spec = parse_fault("key-scale:size=0.2")
    check_architecture(spec, ["Gemma3ForCausalLM"], "m")
    check_architecture(spec, ["LlamaForCausalLM"], "m")
    with pytest.raises(EvalpipeError) as exc:
        check_architecture(spec, ["GPT2LMHeadModel"], "/models/gpt2")
    text = str(exc.value)
    assert "GPT2LMHeadModel" in text and "/models/gpt2" in text
    assert all(a in text for a in ARCHITECTURES)


@pytest.mark.parametrize(
    "text",
    [
        "key-scale:size=0.2",
        "out-scale:size=0.1,period=8,offset=3,width=2",
        "kv-position:size=2,period=1,offset=0,threshold=5",
        "key-scale:size=0.2,period=16,offset=15,threshold=40",
    ],
)
def test_the_tensor_mask_is_the_reference_rule(text: str) -> None:
    spec = parse_fault(text)
    positions = torch.arange(0, 600)
    mask = faultmath.selected(positions, spec)
    assert mask.tolist() == [spec.touches(p) for p in range(600)]
    assert mask.any()


def test_key_scale_multiplies_exactly_the_chosen_rows() -> None:
    spec = parse_fault("key-scale:size=0.5,period=4,offset=3")
    positions = torch.tensor([0, 1, 2, 3, 4, 7, 8])
    key = torch.arange(7 * 6, dtype=torch.float32).view(7, 6) + 1
    value = -key
    mask = faultmath.selected(positions, spec)
    k2, v2 = faultmath.scale_kv(key.clone(), value.clone(), mask, spec)
    assert k2 is not None and v2 is not None
    scaled = {3, 5}  # positions 3 and 7
    for i in range(7):
        factor = 1.5 if i in scaled else 1.0
        assert torch.equal(k2[i], key[i] * factor)
    assert torch.equal(v2, value)  # target k leaves the values alone


@pytest.mark.parametrize(
    ("target", "k_changed", "v_changed"), [("v", False, True), ("kv", True, True)]
)
def test_key_scale_targets(target: str, k_changed: bool, v_changed: bool) -> None:
    spec = parse_fault(f"key-scale:size=1,period=2,offset=1,target={target}")
    positions = torch.tensor([0, 1])
    key, value = torch.ones(2, 3), torch.ones(2, 3)
    k2, v2 = faultmath.scale_kv(key, value, faultmath.selected(positions, spec), spec)
    assert k2 is not None and v2 is not None
    assert (k2[1, 0].item() == 2.0) is k_changed
    assert (v2[1, 0].item() == 2.0) is v_changed
    assert k2[0, 0].item() == 1.0 and v2[0, 0].item() == 1.0


def test_scaling_keeps_dtype_and_3d_shapes() -> None:
    spec = parse_fault("out-scale:size=0.25,period=2,offset=0")
    out = torch.ones(4, 2, 3, dtype=torch.bfloat16)
    got = faultmath.scale_rows(out, faultmath.selected(torch.arange(4), spec), spec.size)
    assert got.dtype == torch.bfloat16 and got.shape == out.shape
    assert got[:, 0, 0].tolist() == [1.25, 1.0, 1.25, 1.0]
    assert torch.equal(out, torch.ones(4, 2, 3, dtype=torch.bfloat16))  # input untouched


def _rotary(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in rotary embedding that works in place, as vLLM's CPU and CUDA kernels do:
    it adds the position to every element."""
    q.add_(positions.view(-1, 1).to(q.dtype))
    k.add_(positions.view(-1, 1).to(k.dtype))
    return q, k


def test_kv_position_rotates_chosen_keys_at_the_shifted_position() -> None:
    spec = parse_fault("kv-position:size=3,period=1,offset=0,threshold=2")
    positions = torch.tensor([0, 1, 2, 3, 9])
    query, key = torch.zeros(5, 2), torch.zeros(5, 2)
    q, k = faultmath.misplaced_keys(_rotary, positions, query, key, spec, limit=11)
    assert q[:, 0].tolist() == [0, 1, 2, 3, 9]  # queries always at their own position
    # keys at p >= 2 are rotated as if at p + 3, clamped to the table's last row (10)
    assert k[:, 0].tolist() == [0, 1, 5, 6, 10]


def test_kv_position_negative_shift_clamps_at_zero() -> None:
    spec = parse_fault("kv-position:size=-5,period=1,offset=0")
    positions = torch.tensor([0, 3, 7])
    _, k = faultmath.misplaced_keys(
        _rotary, positions, torch.zeros(3, 1), torch.zeros(3, 1), spec, limit=100
    )
    assert k[:, 0].tolist() == [0, 0, 2]


def test_out_mix_pulls_chosen_rows_to_their_own_value_per_kv_group() -> None:
    """Two query heads share one KV head (grouped-query attention): each takes its group's
    value; rows off the mask are untouched."""
    spec = parse_fault("out-mix:size=0.25,period=2,offset=1")
    positions = torch.tensor([0, 1, 2, 3])
    out = torch.zeros(4, 2 * 3)  # 2 query heads of 3
    value = torch.arange(4 * 3, dtype=torch.float32).view(4, 3)  # 1 KV head of 3
    got = faultmath.mix_own_value(out, value, faultmath.selected(positions, spec), 0.25, heads=2)
    assert got.shape == out.shape
    assert torch.equal(got[0], out[0]) and torch.equal(got[2], out[2])
    for row in (1, 3):
        assert got[row].tolist() == (0.25 * value[row]).repeat(2).tolist()


def test_out_mix_size_is_a_share() -> None:
    assert parse_fault("out-mix:size=1").size == 1.0
    for bad in ("out-mix:size=0", "out-mix:size=1.5", "out-mix:size=-0.1"):
        with pytest.raises(EvalpipeError, match="out-mix size is a share"):
            parse_fault(bad)


# --- dcp-merge: a fault in the DCP merge itself ---------------------------------------------


def test_a_merge_fault_is_placed_by_rank_not_by_position() -> None:
    spec = parse_fault("dcp-merge:size=1")
    assert (spec.kind, spec.size, spec.rank, spec.placed) == ("dcp-merge", 1.0, 0, False)
    assert spec.canonical == "dcp-merge:size=1,rank=0"
    assert parse_fault(spec.canonical) == spec
    assert parse_fault("dcp-merge:size=0.5,rank=1").label == "dcp-merge 0.5 on rank 1"
    assert all(spec.touches(p) for p in range(300))  # every query with context merges
    assert parse_fault("key-scale:size=0.2").placed


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "dcp-merge:size=1,period=8",
            "unknown parameter 'period' (a dcp-merge fault takes size, rank)",
        ),
        ("dcp-merge:size=0", "share above 0 and at most 1"),
        ("dcp-merge:size=1.5", "share above 0 and at most 1"),
        ("dcp-merge:size=1,rank=-1", "rank is a DCP rank"),
        ("key-scale:size=0.2,rank=1", "unknown parameter 'rank'"),
    ],
)
def test_bad_merge_faults_are_refused(text: str, needle: str) -> None:
    with pytest.raises(EvalpipeError) as exc:
        parse_fault(text)
    assert needle in str(exc.value)


def test_a_merge_fault_needs_a_dcp_layout_holding_its_rank_on_cpu() -> None:
    spec = parse_fault("dcp-merge:size=1,rank=1")
    check_layout(spec, 2, "cpu")
    check_layout(spec, 2, None)  # an endpoint's run is only labelled
    for dcp, platform, needle in [
        (1, "cpu", "this layout has no DCP"),
        (1, None, "this layout has no DCP"),
        (4, "cuda", "runs only on the CPU platform"),
    ]:
        with pytest.raises(EvalpipeError, match=needle):
            check_layout(spec, dcp, platform)
    with pytest.raises(EvalpipeError, match=r"rank=0 to 1"):
        check_layout(parse_fault("dcp-merge:size=1,rank=2"), 2, "cpu")
    check_layout(parse_fault("key-scale:size=0.2"), 1, "cuda")  # placed faults go anywhere
    check_architecture(spec, ["GPT2LMHeadModel"], "m")  # the merge is the backend's, any model


def test_the_plugin_refuses_a_backend_value_it_does_not_know(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A typo must not leave an engine on vLLM's own backend while the user thinks otherwise."""
    from evalpipe.engine.plugin import register

    monkeypatch.delenv("EVALPIPE_FAULT", raising=False)
    monkeypatch.setenv("EVALPIPE_CPU_DCP", "yes")
    with pytest.raises(RuntimeError, match="EVALPIPE_CPU_DCP='yes': expected 1"):
        register()
    monkeypatch.setenv("EVALPIPE_CPU_DCP", "")  # what evalpipe gives a non-DCP engine
    register()


def test_the_plugin_refuses_a_merge_fault_without_the_cpu_dcp_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from evalpipe.engine.plugin import register

    monkeypatch.setenv("EVALPIPE_FAULT", "dcp-merge:size=1")
    monkeypatch.delenv("EVALPIPE_CPU_DCP", raising=False)
    with pytest.raises(RuntimeError, match="EVALPIPE_CPU_DCP is not set"):
        register()
