"""The tensor arithmetic of evalpipe's CPU DCP backend, on plain torch tensors (no vLLM), so
every piece is unit-tested against a direct computation:

- :func:`attend` / :func:`attend_heads`: attention of queries over one request's keys and
  values, with the softmax log-sum-exp (natural log) that DCP's merge needs and vLLM's CPU
  kernel does not return. It runs on torch's fused CPU flash-attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``, which returns the LSE), query heads
  grouped by their KV head so no key is copied per query head; a logit soft-cap, which that
  kernel lacks, takes the float32 matmul path (:func:`attend_matmul`);
- :func:`paged_context_attention`: the same over each request's local shard of the paged KV
  cache, decode included, and :func:`new_token_attention`: the step's own tokens, causally;
- :func:`write_kv` / :func:`gather_blocks`: the KV cache in vLLM's CPU layout
  (``[num_blocks, num_kv_heads, block_size, 2 * head_size]``, viewed as keys in the first
  ``block_size`` rows of ``[2 * block_size, head_size]`` and values in the rest);
- :func:`correct_attn_out`: the LSE correction of one rank's partial output (the contract of
  vLLM's Triton ``CorrectAttnCPOutKernel``), with the dcp-merge canary's ``drop``;
- :func:`dcp_slot_mapping`: where each token's KV goes under DCP, by interleave (the contract
  of vLLM's ``ComputeSlotMappingKernel``, whose CPU fallback refuses context parallelism).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def split_kv_cache(kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Views ``(key_cache, value_cache)``, each ``[num_blocks, num_kv_heads, block_size, D]``."""
    num_blocks, num_kv_heads, block_size, two_d = kv_cache.shape
    view = kv_cache.view(num_blocks, num_kv_heads, 2 * block_size, two_d // 2)
    return view[:, :, :block_size], view[:, :, block_size:]


def write_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store the tokens whose slot is >= 0: under DCP, the ones this rank owns."""
    n = key.shape[0]
    slots = slot_mapping[:n].to(torch.long)
    keep = slots >= 0
    if not bool(keep.any()):
        return
    slots = slots[keep]
    block_size = key_cache.shape[2]
    blocks, offsets = slots // block_size, slots % block_size
    key_cache[blocks, :, offsets] = key[:n][keep].to(key_cache.dtype)
    value_cache[blocks, :, offsets] = value[:n][keep].to(value_cache.dtype)


def capped(scores: torch.Tensor, softcap: float) -> torch.Tensor:
    """Scores under a logit soft-cap (Gemma-2's ``softcap * tanh(s / softcap)``; 0: none)."""
    return softcap * torch.tanh(scores / softcap) if softcap > 0 else scores


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_map: torch.Tensor,
    scale: float,
    causal: bool,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q ``[t, Hq, D]`` over k/v ``[L, Hkv, D]`` (token-major, as a step's keys come);
    ``kv_map`` ``[Hq]`` is each query head's KV head. Causal puts query i at key position
    ``L - t + i``. Returns (out ``[t, Hq, D]`` in q's dtype, lse ``[t, Hq]`` float32); a query
    without keys gets out 0 and lse -inf."""
    return attend_heads(q, k.transpose(0, 1), v.transpose(0, 1), kv_map, scale, causal, softcap)


def attend_heads(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_map: torch.Tensor,
    scale: float,
    causal: bool,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attend` over head-major k/v ``[Hkv, L, D]`` (as a shard comes out of the cache),
    on the fused flash kernel; the float32 matmul path under a soft-cap, or causal with fewer
    queries than keys (the kernel's causal mask is aligned at the top left)."""
    t, num_heads, _ = q.shape
    length = k.shape[1]
    if length == 0:
        empty = torch.full((t, num_heads), float("-inf"), dtype=torch.float32)
        return torch.zeros_like(q), empty
    if softcap > 0 or (causal and t != length):
        return attend_matmul(q, k, v, kv_map, scale, causal, softcap)
    k, v = k.to(q.dtype), v.to(q.dtype)
    if causal:  # the step's tokens over themselves: one copy of K/V per query head is cheap
        out, lse = _flash(q.transpose(0, 1), k[kv_map], v[kv_map], scale, causal=True)
        return out.transpose(0, 1), lse.transpose(0, 1).contiguous()
    kv_heads = k.shape[0]
    group = num_heads // kv_heads
    order = torch.argsort(kv_map, stable=True)  # query heads grouped by KV head
    grouped = (
        q[:, order].view(t, kv_heads, group, -1).transpose(0, 1).reshape(kv_heads, t * group, -1)
    )
    out, lse = _flash(grouped, k, v, scale, causal=False)  # [Hkv, t * G, D], [Hkv, t * G]
    restore = torch.argsort(order)
    out = out.view(kv_heads, t, group, -1).transpose(0, 1).reshape(t, num_heads, -1)
    lse = lse.view(kv_heads, t, group).transpose(0, 1).reshape(t, num_heads)
    return out[:, restore], lse[:, restore].contiguous()


def _flash(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's CPU flash attention on one batch of heads: q ``[H, t, D]`` over k/v ``[H, L,
    D]``; returns out ``[H, t, D]`` and the natural-log LSE ``[H, t]`` in float32."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), 0.0, causal, scale=scale
    )
    return out[0], lse[0].float()


def attend_matmul(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_map: torch.Tensor,
    scale: float,
    causal: bool,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attend_heads` written out in float32 matmuls, with a logit soft-cap."""
    t, length = q.shape[0], k.shape[1]
    kf = k.float()[kv_map]
    vf = v.float()[kv_map]
    scores = torch.einsum("thd,hld->htl", q.float(), kf) * scale
    scores = capped(scores, softcap)
    if causal:
        query_pos = torch.arange(length - t, length).unsqueeze(1)
        key_pos = torch.arange(length).unsqueeze(0)
        scores = scores.masked_fill((key_pos > query_pos).unsqueeze(0), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [Hq, t]
    probs = torch.exp(scores - lse.unsqueeze(-1))
    out = torch.einsum("htl,hld->thd", probs, vf)
    return out.to(q.dtype), lse.transpose(0, 1).contiguous()


def gather_blocks(
    kv_cache: torch.Tensor, blocks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of ``blocks`` (``[R, nb]`` block numbers), ``[R, nb, Hkv, block_size,
    D]`` each: a block's keys (and its values) are contiguous in vLLM's CPU layout, so each is
    one gather, with no copy per token."""
    _, kv_heads, block_size, two_d = kv_cache.shape
    halves = kv_cache.view(-1, kv_heads, 2, block_size, two_d // 2)
    index = blocks.reshape(-1).to(torch.long)
    shape = (*blocks.shape, kv_heads, block_size, two_d // 2)
    k = halves[:, :, 0].index_select(0, index).view(shape)
    v = halves[:, :, 1].index_select(0, index).view(shape)
    return k, v


def gather_local_kv(
    kv_cache: torch.Tensor, block_row: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``length`` tokens of one request's local shard, head-major ``[Hkv, L, D]``
    each (with one KV head, a view of the gathered blocks: no copy)."""
    num_blocks = -(-length // kv_cache.shape[2])
    k, v = gather_blocks(kv_cache, block_row[:num_blocks].view(1, -1))

    def heads(x: torch.Tensor) -> torch.Tensor:  # [1, nb, H, bs, D] -> [H, nb * bs, D]
        return x[0].transpose(0, 1).reshape(x.shape[2], -1, x.shape[4])[:, :length]

    return heads(k), heads(v)


def paged_context_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    query_start_loc: Sequence[int],
    kv_lens: Sequence[int],
    kv_map: torch.Tensor,
    scale: float,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every query token of request r over the first ``kv_lens[r]`` tokens of r's local KV
    shard, non-causally (all of them precede the step's tokens): flash_attn.py's DCP context
    attention (``causal=False, seqused_k=dcp_context_kv_lens``), one request at a time. Under
    a soft-cap, one query token per request (decode) goes through
    :func:`paged_decode_attention` in one pass."""
    if softcap > 0 and len(query_start_loc) - 1 == q.shape[0]:
        return paged_decode_attention(q, kv_cache, block_table, kv_lens, kv_map, scale, softcap)
    out = torch.zeros_like(q)
    lse = torch.full(q.shape[:2], float("-inf"), dtype=torch.float32)
    for r in range(len(query_start_loc) - 1):
        start, end = query_start_loc[r], query_start_loc[r + 1]
        if end <= start or kv_lens[r] == 0:
            continue
        k, v = gather_local_kv(kv_cache, block_table[r], kv_lens[r])
        out[start:end], lse[start:end] = attend_heads(
            q[start:end], k, v, kv_map, scale, False, softcap
        )
    return out, lse


def paged_decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    kv_lens: Sequence[int],
    kv_map: torch.Tensor,
    scale: float,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`paged_context_attention` for one query token per request in float32 matmuls,
    with a soft-cap: every request's blocks gathered at once (up to the longest shard, the
    rest masked) and attended block by block in batched matmuls. Query heads are grouped by
    their KV head, so no key or value is copied per query head."""
    requests = len(kv_lens)
    longest = max(kv_lens, default=0)
    if longest == 0:
        return torch.zeros_like(q), torch.full(q.shape[:2], float("-inf"))
    block_size = kv_cache.shape[2]
    num_blocks = -(-longest // block_size)
    k, v = gather_blocks(kv_cache, block_table[:requests, :num_blocks])  # [R, nb, Hkv, bs, D]
    kv_heads, head_size = k.shape[2], k.shape[4]
    order = torch.argsort(kv_map, stable=True)  # query heads grouped by KV head
    grouped = q.float()[:, order].view(requests, 1, kv_heads, -1, head_size)
    scores = torch.matmul(grouped, k.float().transpose(-1, -2)) * scale  # [R, nb, Hkv, G, bs]
    scores = capped(scores, softcap)
    position = torch.arange(num_blocks * block_size).view(1, num_blocks, 1, 1, block_size)
    lengths = torch.tensor(list(kv_lens)).view(requests, 1, 1, 1, 1)
    scores = scores.masked_fill(position >= lengths, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1).logsumexp(dim=1)  # [R, Hkv, G]
    shift = torch.where(lse.isinf(), 0.0, lse).unsqueeze(1).unsqueeze(-1)
    out = torch.matmul(torch.exp(scores - shift), v.float()).sum(dim=1)  # [R, Hkv, G, D]
    restore = torch.argsort(order)
    out = out.reshape(requests, -1, head_size)[:, restore]
    return out.to(q.dtype), lse.reshape(requests, -1)[:, restore].contiguous()


def new_token_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    query_start_loc: Sequence[int],
    kv_map: torch.Tensor,
    scale: float,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each request's step tokens over themselves, causally (every rank holds the step's
    full K/V before it is written to the sharded cache). With one token per request (decode)
    each attends to itself alone: its own value, and its own score as the LSE."""
    if len(query_start_loc) - 1 == q.shape[0]:
        score = capped((q.float() * k.float()[:, kv_map]).sum(-1) * scale, softcap)
        return v[:, kv_map].to(q.dtype), score
    out = torch.empty_like(q)
    lse = torch.full(q.shape[:2], float("-inf"), dtype=torch.float32)
    for r in range(len(query_start_loc) - 1):
        start, end = query_start_loc[r], query_start_loc[r + 1]
        if end <= start:
            continue
        s = slice(start, end)
        out[s], lse[s] = attend(q[s], k[s], v[s], kv_map, scale, True, softcap)
    return out, lse


def correct_attn_out(
    outputs: torch.Tensor,
    new_output: torch.Tensor,
    lses: torch.Tensor,
    vlse: torch.Tensor,
    lse_idx: int,
    *,
    is_base_e: bool = True,
    drop: float = 0.0,
) -> None:
    """One rank's share of the merge: ``outputs`` ``[B, H, D]`` (this rank's partial output),
    ``lses`` ``[N, B, H]`` (every rank's). Writes the global LSE into ``vlse`` ``[B, H]`` and
    ``outputs * exp(lse[lse_idx] - lse_global)`` into ``new_output``; summed over the ranks
    that is the attention over the whole context. NaN and +inf LSEs count as empty shards,
    as in vLLM's kernel. ``drop`` (the dcp-merge canary) keeps only ``1 - drop`` of the
    correction's exponent: 1 adds the partial output unscaled."""
    lse = lses.float()
    lse = torch.where(torch.isnan(lse) | (lse == float("inf")), float("-inf"), lse)
    lse_max = lse.amax(dim=0)
    lse_max = torch.where(lse_max == float("-inf"), 0.0, lse_max)
    shifted = lse - lse_max
    if is_base_e:
        total = torch.log(torch.exp(shifted).sum(dim=0)) + lse_max
    else:
        total = torch.log2(torch.exp2(shifted).sum(dim=0)) + lse_max
    vlse.copy_(total)
    mine = (lse[lse_idx] - total) * (1.0 - drop)
    mine = torch.where(torch.isnan(mine) | (mine == float("inf")), float("-inf"), mine)
    factor = (torch.exp(mine) if is_base_e else torch.exp2(mine)).unsqueeze(-1)
    corrected = torch.where(factor == 0.0, 0.0, outputs.float() * factor)
    new_output.copy_(corrected.to(new_output.dtype))


def dcp_slot_mapping(
    positions: torch.Tensor,
    requests: torch.Tensor,
    block_table: torch.Tensor,
    block_size: int,
    world: int,
    rank: int,
    interleave: int,
    pad: int = -1,
) -> torch.Tensor:
    """The KV slot of each token on ``rank`` (``pad`` where another rank keeps it).

    Under DCP a request's block-table entry names a *virtual* block of ``block_size * world``
    positions; within it, position chunks of ``interleave`` go round-robin to the ranks, and
    each rank packs its chunks in order into its own block of ``block_size``.
    ``requests[i]`` is the row of ``block_table`` (``[num_reqs, blocks_per_req]``) of token i.
    """
    pos = positions.to(torch.long)
    virtual = block_size * world
    vblock, voffset = pos // virtual, pos % virtual
    owned = (voffset // interleave) % world == rank
    local = (voffset // (world * interleave)) * interleave + voffset % interleave
    last = block_table.shape[1] - 1
    blocks = block_table[requests.to(torch.long), vblock.clamp_max(last)].to(torch.long)
    slots = blocks * block_size + local
    return torch.where(owned, slots, torch.full_like(slots, pad))
