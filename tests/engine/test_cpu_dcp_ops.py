"""evalpipe's CPU DCP backend, its arithmetic on plain tensors (no vLLM): attention with the
softmax LSE against a direct softmax, the LSE merge of two ranks' shards against attention
over the whole context (and the dcp-merge canary breaking it), and the slot mapping by
interleave against its definition. The real engine's use of it: test_dcp_engine.py."""

from __future__ import annotations

import itertools

import pytest
import torch

from evalpipe.engine.plugin.cpu_dcp import kernels, ops
from evalpipe.faults import parse_fault

KV_MAP = torch.tensor([0, 0, 1, 1])  # 4 query heads over 2 KV heads (grouped-query)


def direct(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out: softmax of the scores, one query head at a time (float64)."""
    t, length = q.shape[0], k.shape[0]
    outs, lses = [], []
    for h in range(q.shape[1]):
        kv = int(KV_MAP[h])
        scores = q[:, h].double() @ k[:, kv].double().T * scale
        if causal:
            future = torch.arange(length)[None, :] > torch.arange(length - t, length)[:, None]
            scores = scores.masked_fill(future, float("-inf"))
        outs.append(torch.softmax(scores, -1) @ v[:, kv].double())
        lses.append(torch.logsumexp(scores, -1))
    return torch.stack(outs, 1).float(), torch.stack(lses, 1).float()


def data(seed: int, t: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(t, 4, 16, generator=g),
        torch.randn(length, 2, 16, generator=g),
        torch.randn(length, 2, 16, generator=g),
    )


@pytest.mark.parametrize("causal", [False, True])
def test_attention_returns_the_softmax_and_its_log_sum_exp(causal: bool) -> None:
    q, k, v = data(0, 5, 9)
    out, lse = ops.attend(q, k, v, KV_MAP, 0.25, causal)
    ref_out, ref_lse = direct(q, k, v, 0.25, causal)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)


def test_query_heads_of_several_ranks_are_grouped_by_their_kv_head() -> None:
    """Under DCP the gathered heads interleave KV heads ([0, 1] on each of two ranks gives
    [0, 1, 0, 1]): each head still attends over its own KV head, and comes back in place."""
    q, k, v = data(8, 4, 40)
    interleaved = torch.tensor([0, 1, 0, 1])
    out, lse = ops.attend(q, k, v, interleaved, 0.25, causal=False)
    same = [0, 2, 1, 3]  # the heads in KV_MAP's grouped order
    ref_out, ref_lse = direct(q[:, same], k, v, 0.25, causal=False)
    torch.testing.assert_close(out[:, same], ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse[:, same], ref_lse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_attention_on_the_fused_kernel_is_the_float32_one_rounded(causal: bool) -> None:
    """The fused kernel takes bfloat16 as the engine's cache holds it and accumulates in
    float32: within bfloat16's rounding of the float32 matmul path, the LSE within 1e-2."""
    q, k, v = data(9, 7, 7 if causal else 300)
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    out, lse = ops.attend(q, k, v, KV_MAP, 0.25, causal)
    ref_out, ref_lse = ops.attend_matmul(
        q, k.transpose(0, 1), v.transpose(0, 1), KV_MAP, 0.25, causal
    )
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-2, rtol=0)


def test_a_query_with_no_keys_gets_zero_and_an_empty_lse() -> None:
    q, k, v = data(1, 3, 0)
    out, lse = ops.attend(q, k, v, KV_MAP, 0.25, causal=False)
    assert torch.equal(out, torch.zeros_like(q)) and torch.isinf(lse).all() and (lse < 0).all()


def shards(length: int, world: int, interleave: int) -> list[list[int]]:
    """The positions each rank keeps: chunks of ``interleave`` round-robin (vLLM's DCP)."""
    return [[p for p in range(length) if (p // interleave) % world == r] for r in range(world)]


def merged(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, interleave: int, drop: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each rank attends over its shard; each corrects its part with every rank's LSE; the
    parts are summed (the reduce-scatter), as ``cp_lse_ag_out_rs`` does over gloo."""
    parts = [
        ops.attend(q, k[s], v[s], KV_MAP, 0.3, False) for s in shards(k.shape[0], 2, interleave)
    ]
    lses = torch.stack([lse for _, lse in parts])
    total = torch.zeros_like(q)
    vlse = torch.empty(q.shape[:2])
    for rank, (out, _) in enumerate(parts):
        corrected = torch.empty_like(out)
        ops.correct_attn_out(out, corrected, lses, vlse, rank, drop=drop if rank == 0 else 0.0)
        total += corrected
    return total, vlse


@pytest.mark.parametrize("interleave", [1, 16])
def test_the_merge_of_two_ranks_is_attention_over_the_whole_context(interleave: int) -> None:
    q, k, v = data(2, 3, 40)
    out, lse = merged(q, k, v, interleave)
    ref_out, ref_lse = direct(q, k, v, 0.3, causal=False)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)


def test_a_rank_with_an_empty_shard_adds_nothing() -> None:
    q, k, v = data(3, 2, 10)  # interleave 16: rank 1 holds none of 10 tokens
    out, _ = merged(q, k, v, 16)
    torch.testing.assert_close(out, direct(q, k, v, 0.3, causal=False)[0], atol=1e-5, rtol=1e-5)


def test_the_merge_fault_drops_a_share_of_one_ranks_correction() -> None:
    q, k, v = data(4, 3, 40)
    clean, _ = merged(q, k, v, 1)
    dropped, _ = merged(q, k, v, 1, drop=1.0)
    own = ops.attend(q, k[0::2], v[0::2], KV_MAP, 0.3, False)[0]
    # drop=1: rank 0's partial output enters the sum unscaled, rank 1's is corrected as ever.
    assert (dropped - clean).abs().max() > 0.1
    torch.testing.assert_close(dropped - clean, own - merged_part(q, k, v, 0), atol=1e-5, rtol=0)
    half, _ = merged(q, k, v, 1, drop=0.5)
    assert 0 < (half - clean).abs().max() < (dropped - clean).abs().max()


def merged_part(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rank: int) -> torch.Tensor:
    """Rank ``rank``'s corrected share of the clean merge (interleave 1)."""
    parts = [ops.attend(q, k[r::2], v[r::2], KV_MAP, 0.3, False) for r in range(2)]
    lses = torch.stack([lse for _, lse in parts])
    corrected = torch.empty_like(parts[rank][0])
    ops.correct_attn_out(parts[rank][0], corrected, lses, torch.empty(q.shape[:2]), rank)
    return corrected


def test_the_correction_kernel_applies_the_fault_on_its_rank_only() -> None:
    fault = parse_fault("dcp-merge:size=1,rank=1")
    out = torch.randn(2, 4, 8)
    lses = torch.tensor([[[0.0] * 4] * 2, [[1.0] * 4] * 2])  # rank 1 holds e/(1+e) of the mass
    results = []
    for rank in (0, 1):
        new = torch.empty_like(out)
        kernels.Correction(fault)(out, new, lses, torch.empty(2, 4), rank, None, is_base_e=True)
        results.append(new)
    share0 = 1 / (1 + torch.e)
    torch.testing.assert_close(results[0], out * share0)  # rank 0: corrected
    torch.testing.assert_close(results[1], out)  # rank 1: its correction dropped


def python_slot(pos: int, row: list[int], block: int, world: int, rank: int, inter: int) -> int:
    """The definition: virtual blocks of block * world positions, chunks round-robin."""
    vblock, voffset = divmod(pos, block * world)
    if (voffset // inter) % world != rank:
        return -1
    return row[vblock] * block + (voffset // (world * inter)) * inter + voffset % inter


@pytest.mark.parametrize(("interleave", "block"), [(1, 32), (16, 32), (16, 16)])
def test_slot_mapping_shards_a_sequence_that_each_rank_reads_back_in_order(
    interleave: int, block: int
) -> None:
    """150 tokens of request 1 go through each rank's slot mapping (the kernel's signature,
    request 0 empty, padding past the batch), into its KV cache, and back out of it: the
    shards partition the sequence, each in order, as vLLM's local lengths count them."""
    length, world, stride = 150, 2, 8
    table = torch.zeros(3, stride, dtype=torch.int32)
    table[1, :5] = torch.tensor([5, 2, 7, 1, 4], dtype=torch.int32)
    qsl = torch.tensor([0, 0, length], dtype=torch.int32)
    keys = torch.randn(length, 1, 8)
    owned: list[int] = []
    for rank in range(world):
        slots = torch.full((length + 4,), 99, dtype=torch.long)
        kernel = kernels.SlotMapping(original=None)
        kernel(length, length + 4, qsl, torch.arange(length), table.flatten(), stride, slots,
               block, world, rank, interleave)  # fmt: skip
        row = table[1].tolist()
        expect = [python_slot(p, row, block, world, rank, interleave) for p in range(length)]
        assert slots.tolist() == expect + [-1] * 4
        cache = torch.zeros(8, 1, block, 16)
        key_cache, value_cache = ops.split_kv_cache(cache)
        ops.write_kv(keys, -keys, key_cache, value_cache, slots)
        mine = [p for p in range(length) if expect[p] >= 0]
        assert mine == shards(length, world, interleave)[rank]
        k, v = ops.gather_local_kv(cache, table[1], len(mine))  # head-major
        assert torch.equal(k[0], keys[mine, 0]) and torch.equal(v[0], -keys[mine, 0])
        owned += mine
    assert sorted(owned) == list(range(length))


def test_without_context_parallelism_the_slot_mapping_is_vllms_own() -> None:
    calls: list[tuple[int, int]] = []

    def original(*args: object) -> None:  # stands in for vLLM's C++ op (8 arguments)
        assert len(args) == 8
        calls.append((int(args[0]), int(args[7])))  # type: ignore[call-overload]

    kernel = kernels.SlotMapping(original)
    slots = torch.zeros(4, dtype=torch.long)
    qsl, table = torch.tensor([0, 4]), torch.zeros(1, 2, dtype=torch.int32)
    kernel(4, 4, qsl, torch.arange(4), table, 2, slots, 32)
    assert calls == [(4, 32)]


def paged_cache(
    k: torch.Tensor, v: torch.Tensor, table: torch.Tensor, lens: list[int]
) -> torch.Tensor:
    """A CPU-layout KV cache of 32-token blocks holding request r's first lens[r] tokens in
    the blocks of table row r."""
    cache = torch.zeros(8, 2, 32, 32)
    key_cache, value_cache = ops.split_kv_cache(cache)
    for r, n in enumerate(lens):
        slots = torch.tensor([int(table[r, p // 32]) * 32 + p % 32 for p in range(n)])
        ops.write_kv(k[:n], v[:n], key_cache, value_cache, slots.long())
    return cache


def test_paged_context_attention_reads_each_requests_shard() -> None:
    """Two requests in one batch (3 query tokens), each over its own blocks of the cache:
    the same as attention over the tokens directly."""
    q, k, v = data(5, 3, 70)
    table = torch.tensor([[3, 1, 0], [4, 5, 2]])
    lens = [70, 33]
    cache = paged_cache(k, v, table, lens)
    qsl = [0, 1, 3]
    out, lse = ops.paged_context_attention(q, cache, table, qsl, lens, KV_MAP, 0.2)
    for r, n in enumerate(lens):
        s = slice(qsl[r], qsl[r + 1])
        ref_out, ref_lse = direct(q[s], k[:n], v[:n], 0.2, causal=False)
        torch.testing.assert_close(out[s], ref_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse[s], ref_lse, atol=1e-5, rtol=1e-5)


def test_decode_attends_every_request_in_one_pass() -> None:
    """One query token per request (decode): shards of 70, 0, 33 and 1 tokens, padded to the
    longest and masked, with a logit soft-cap: each as attention over its own tokens."""
    q, k, v = data(7, 4, 70)
    table = torch.tensor([[3, 1, 0], [6, 6, 6], [4, 5, 2], [7, 6, 6]])
    lens = [70, 0, 33, 1]
    cache = paged_cache(k, v, table, lens)
    out, lse = ops.paged_context_attention(q, cache, table, [0, 1, 2, 3, 4], lens, KV_MAP, 0.2)
    for r, n in enumerate(lens):
        if n == 0:
            assert torch.equal(out[r], torch.zeros_like(out[r])) and torch.isinf(lse[r]).all()
            continue
        ref_out, ref_lse = direct(q[r : r + 1], k[:n], v[:n], 0.2, causal=False)
        torch.testing.assert_close(out[r : r + 1], ref_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse[r : r + 1], ref_lse, atol=1e-5, rtol=1e-5)
    capped = ops.paged_decode_attention(q, cache, table, lens, KV_MAP, 0.2, softcap=5.0)
    looped = ops.attend(q[:1], k, v, KV_MAP, 0.2, causal=False, softcap=5.0)
    torch.testing.assert_close(capped[0][:1], looped[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(capped[1][:1], looped[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qsl", [[0, 2, 5], [0, 1, 2, 3, 4, 5]])
def test_new_tokens_attend_causally_to_their_own_request_only(qsl: list[int]) -> None:
    q, k, v = data(6, 5, 5)
    out, lse = ops.new_token_attention(q, k, v, qsl, KV_MAP, 0.2)
    for s in (slice(a, b) for a, b in itertools.pairwise(qsl)):
        ref_out, ref_lse = direct(q[s], k[s], v[s], 0.2, causal=True)
        torch.testing.assert_close(out[s], ref_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse[s], ref_lse, atol=1e-5, rtol=1e-5)
