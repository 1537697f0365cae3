"""An attention backend for vLLM's CPU platform that can run decode context parallelism.

:class:`DCPCapableCPUBackend` takes CPU_ATTN's place in vLLM's backend registry. Without a DCP
group of more than one rank it hands out vLLM's own ``CPUAttentionBackendImpl`` and
``CPUAttentionMetadataBuilder``, so a non-DCP engine computes exactly what stock vLLM does
(unless started with ``EVALPIPE_CPU_DCP=all``, the check of the torch implementation against
vLLM's own on one rank). With one it hands out :class:`TorchDCPAttentionImpl`, which returns
the softmax LSE (the check in vllm/v1/worker/cp_utils.py passes) and follows
``FlashAttentionImpl._forward_with_dcp`` (vllm/v1/attention/backends/flash_attn.py):

1. the query is all-gathered across the DCP group on the head dim;
2. every gathered head attends, non-causally, over this rank's shard of the cached context
   (``get_dcp_local_seq_lens(seq_lens - query_lens, ...)`` tokens), with its LSE;
3. vLLM's ``cp_lse_ag_out_rs`` (LSE all-gather, correction, reduce-scatter on heads) merges
   the shards and hands each rank its own heads back;
4. the step's new tokens attend causally to themselves (local heads, the step's full K/V);
5. vLLM's ``merge_attn_states`` merges the context and new-token parts.

When no request of the batch has cached context (every rank computes this from the global
lengths, so all agree) step 4 alone is the answer and no collective runs: flash_attn's
``max_dcp_context_kv_len == 0`` branch. Prefill without cached context therefore does no
merge; decode always does.

Imported only inside an engine process whose registry resolved CPU_ATTN to this module.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from vllm.distributed import parallel_state
from vllm.v1.attention.backend import AttentionMetadataBuilder, AttentionType
from vllm.v1.attention.backends.cpu_attn import (
    CPUAttentionBackend,
    CPUAttentionBackendImpl,
    CPUAttentionMetadataBuilder,
)
from vllm.v1.attention.backends.utils import get_dcp_local_seq_lens

from evalpipe.backends import CPU_DCP_ALL, CPU_DCP_ENV
from evalpipe.engine.plugin.cpu_dcp import MARK, ops

_said: list[bool] = []
"""Whether this process has said it runs the torch implementation (once, not per layer)."""


def torch_attention() -> bool:
    """Whether this process attends with the torch implementation: it belongs to a DCP group
    of more than one rank, or the engine was started with ``EVALPIPE_CPU_DCP=all``."""
    if os.environ.get(CPU_DCP_ENV) == CPU_DCP_ALL:
        return True
    world_size, _ = parallel_state.get_dcp_world_size_and_rank()
    return bool(world_size > 1)


class DCPCapableCPUBackend(CPUAttentionBackend):  # type: ignore[misc]
    """CPU_ATTN, or under DCP the torch implementation below."""

    @staticmethod
    def get_impl_cls() -> type[Any]:
        return TorchDCPAttentionImpl if torch_attention() else CPUAttentionBackendImpl

    @staticmethod
    def get_builder_cls() -> type[Any]:
        return TorchDCPMetadataBuilder if torch_attention() else CPUAttentionMetadataBuilder


@dataclass
class TorchDCPMetadata:
    """One step's batch as the torch implementation reads it (lists: it loops over requests)."""

    num_actual_tokens: int
    max_query_len: int
    query_start_loc: list[int]
    block_table: torch.Tensor
    slot_mapping: torch.Tensor
    context_lens: list[int]
    """Cached tokens of each request before this step: global, the same on every rank."""
    local_context_lens: list[int]
    """This rank's shard of them."""


class TorchDCPMetadataBuilder(AttentionMetadataBuilder[TorchDCPMetadata]):  # type: ignore[misc]
    def __init__(self, kv_cache_spec: Any, layer_names: Any, vllm_config: Any, device: Any) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.dcp_world_size, self.dcp_rank = parallel_state.get_dcp_world_size_and_rank()
        self.interleave = vllm_config.parallel_config.cp_kv_cache_interleave_size

    def build(
        self, common_prefix_len: int, common_attn_metadata: Any, fast_build: bool = False
    ) -> TorchDCPMetadata:
        cm = common_attn_metadata
        if not isinstance(cm.causal, bool) or not cm.causal:
            raise NotImplementedError("evalpipe's CPU DCP backend: causal decoder attention only")
        n = cm.num_reqs
        qsl = cm.query_start_loc_cpu[: n + 1].to(torch.int64)
        seq_lens = cm.seq_lens[:n].to("cpu", torch.int64)
        context = seq_lens - (qsl[1:] - qsl[:-1])
        local = get_dcp_local_seq_lens(context, self.dcp_world_size, self.dcp_rank, self.interleave)
        return TorchDCPMetadata(
            num_actual_tokens=cm.num_actual_tokens,
            max_query_len=cm.max_query_len,
            query_start_loc=qsl.tolist(),
            block_table=cm.block_table_tensor,
            slot_mapping=cm.slot_mapping,
            context_lens=context.tolist(),
            local_context_lens=local.tolist(),
        )


class TorchDCPAttentionImpl(CPUAttentionBackendImpl):  # type: ignore[misc]
    """Paged attention with LSE over vLLM's CPU KV layout, and the DCP path around it."""

    can_return_lse_for_decode = True
    lse_base_on_e = True
    supports_dcp = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unsupported = [
            name
            for name, present in (
                ("non-decoder attention", self.attn_type != AttentionType.DECODER),
                ("ALiBi", self.alibi_slopes is not None),
                ("attention sinks", self.sinks is not None),
                ("a sliding window", self.sliding_window != -1),
                ("an fp8 KV cache", self.is_fp8_kv_cache),
            )
            if present
        ]
        if unsupported:
            raise NotImplementedError(
                f"evalpipe's CPU DCP backend does not support {', '.join(unsupported)}"
            )
        if not _said:
            _said.append(True)
            print(
                f"{MARK}: DCP rank {self.dcp_rank} of {self.dcp_world_size} attends with LSE "
                f"in process {os.getpid()}",
                file=sys.stderr,
                flush=True,
            )
        local = torch.arange(self.num_heads) // (self.num_heads // self.num_kv_heads)
        self.kv_map_local = local
        self.kv_map_gathered = local.repeat(self.dcp_world_size)
        self.softcap = float(self.logits_soft_cap or 0.0)

    def do_kv_cache_update(
        self, layer: Any, key: Any, value: Any, kv_cache: Any, slot_mapping: Any
    ) -> None:
        key_cache, value_cache = ops.split_kv_cache(kv_cache)
        ops.write_kv(key, value, key_cache, value_cache, slot_mapping)

    def forward(
        self,
        layer: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: TorchDCPMetadata | None,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("evalpipe's CPU DCP backend: no fused output quantization")
        if attn_metadata is None:  # warm-up
            return output
        md = attn_metadata
        n = md.num_actual_tokens
        q, k, v = query[:n], key[:n], value[:n]
        qsl = md.query_start_loc
        new_out, new_lse = ops.new_token_attention(
            q, k, v, qsl, self.kv_map_local, self.scale, self.softcap
        )
        if max(md.context_lens, default=0) == 0:
            output[:n].copy_(new_out)
            return output
        from vllm.v1.attention.ops.dcp import cp_lse_ag_out_rs
        from vllm.v1.attention.ops.merge_attn_states import merge_attn_states

        group = parallel_state.get_dcp_group()
        one_rank = group.world_size == 1  # EVALPIPE_CPU_DCP=all without DCP: nothing to merge
        gathered = q if one_rank else group.all_gather(q.contiguous(), dim=1)
        context_out, context_lse = ops.paged_context_attention(
            gathered, kv_cache, md.block_table, qsl, md.local_context_lens,
            self.kv_map_gathered, self.scale, self.softcap,
        )  # fmt: skip
        if not one_rank:
            context_out, context_lse = cp_lse_ag_out_rs(
                context_out, context_lse, group, return_lse=True, is_lse_base_on_e=True
            )
        merge_attn_states(
            output[:n], context_out, context_lse.transpose(0, 1), new_out, new_lse.transpose(0, 1)
        )
        return output
