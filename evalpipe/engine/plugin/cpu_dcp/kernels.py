"""The two vLLM module attributes the CPU DCP backend replaces, as callables with the
signatures vLLM calls them with. Both defer to :mod:`.ops` for the arithmetic.

- :class:`SlotMapping` stands in for ``vllm.utils.cpu_triton_utils.
  _compute_slot_mapping_kernel_impl``, the C++ fallback the CPU platform registers for the
  Triton ``ComputeSlotMappingKernel`` (vllm/v1/worker/block_table.py). That fallback asserts
  ``TOTAL_CP_WORLD_SIZE == 1`` ("Context Parallelism is not supported on CPU"); this one
  shards by interleave under DCP and calls the original otherwise.
- :class:`Correction` stands in for ``vllm.v1.attention.ops.dcp._CORRECT_ATTN_CP_OUT_KERNEL``,
  a Triton kernel that cannot launch without a Triton CPU backend ("'function' object has no
  attribute 'arg_names'"). With it vLLM's own ``cp_lse_ag_out_rs`` (LSE all-gather,
  correction, reduce-scatter) runs unchanged over gloo. It also applies the dcp-merge canary.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from evalpipe.engine.plugin.cpu_dcp import ops
from evalpipe.faults import FaultSpec


class SlotMapping:
    """``ComputeSlotMappingKernel.kernel``'s arguments → the slot of every scheduled token."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(
        self,
        num_tokens: int,
        max_num_tokens: int,
        query_start_loc: torch.Tensor,
        positions: torch.Tensor,
        block_table: torch.Tensor,
        block_table_stride: int,
        slot_mapping: torch.Tensor,
        KV_CACHE_BLOCK_SIZE: int,  # the kernel's own names: vLLM may pass them by name
        TOTAL_CP_WORLD_SIZE: int = 1,
        TOTAL_CP_RANK: int = 0,
        CP_KV_CACHE_INTERLEAVE_SIZE: int = 1,
        PAD_ID: int = -1,
        BLOCK_SIZE: int = 1024,
    ) -> None:
        if TOTAL_CP_WORLD_SIZE == 1:
            self.original(
                num_tokens, max_num_tokens, query_start_loc, positions, block_table,
                block_table_stride, slot_mapping, KV_CACHE_BLOCK_SIZE,
            )  # fmt: skip
            return
        slot_mapping[num_tokens:max_num_tokens] = PAD_ID
        qsl = query_start_loc.to(torch.long)
        start, end = int(qsl[0]), int(qsl[-1])
        if qsl.shape[0] < 2 or end <= start:
            return
        requests = torch.repeat_interleave(torch.arange(qsl.shape[0] - 1), qsl[1:] - qsl[:-1])
        slot_mapping[start:end] = ops.dcp_slot_mapping(
            positions[start:end],
            requests,
            block_table.view(-1, block_table_stride),
            KV_CACHE_BLOCK_SIZE,
            TOTAL_CP_WORLD_SIZE,
            TOTAL_CP_RANK,
            CP_KV_CACHE_INTERLEAVE_SIZE,
            PAD_ID,
        )


class Correction:
    """``CorrectAttnCPOutKernel.__call__``'s contract in torch; with a dcp-merge ``fault``,
    its rank drops that share of its correction."""

    def __init__(self, fault: FaultSpec | None) -> None:
        self.fault = fault
        self.said = False

    def __call__(
        self,
        outputs: torch.Tensor,
        new_output: torch.Tensor,
        lses: torch.Tensor,
        vlse: torch.Tensor,
        lse_idx: int,
        ctx: Any = None,
        *,
        is_base_e: bool = True,
    ) -> None:
        drop = 0.0
        if self.fault is not None and lse_idx == self.fault.rank:
            drop = self.fault.size
            if not self.said:
                self.said = True
                print(f"evalpipe-fault: applied in process {os.getpid()}", file=sys.stderr)
        ops.correct_attn_out(
            outputs, new_output, lses, vlse, lse_idx, is_base_e=is_base_e, drop=drop
        )


def patch(slots_module: Any, dcp_module: Any, fault: FaultSpec | None) -> None:
    """Replace the two attributes (once: a second call only updates the fault)."""
    current = slots_module._compute_slot_mapping_kernel_impl
    if not isinstance(current, SlotMapping):
        slots_module._compute_slot_mapping_kernel_impl = SlotMapping(current)
    dcp_module._CORRECT_ATTN_CP_OUT_KERNEL = Correction(fault)
