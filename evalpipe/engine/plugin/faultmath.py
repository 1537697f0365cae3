"""The arithmetic of each canary fault, on plain torch tensors: which rows a fault touches and
what it does to them. No vLLM here, so every kind is unit-tested on literal tensors; the
hooks (:mod:`evalpipe.engine.plugin.hooks`) only call these.

Rows are tokens: ``positions`` is the 1-D tensor of whole-sequence positions the model runner
passes to the rotary embedding, one per row of the query, key, value and attention output.
"""

from __future__ import annotations

from typing import Any

import torch

from evalpipe.faults import FaultSpec


def selected(positions: torch.Tensor, spec: FaultSpec) -> torch.Tensor:
    """A boolean per token: ``p >= threshold`` and ``(p - offset) mod period < width``
    (the tensor form of :meth:`FaultSpec.touches`)."""
    p = positions.to(torch.int64)
    residue = torch.remainder(p - spec.offset, spec.period)
    return (p >= spec.threshold) & (residue < spec.width)


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``mask`` shaped to broadcast over the rows of ``like`` ([T, ...])."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def scale_rows(x: torch.Tensor, mask: torch.Tensor, size: float) -> torch.Tensor:
    """``x`` with the masked rows multiplied by ``1 + size`` (in ``x``'s dtype), a new
    tensor: the caller's may be a view the engine reuses."""
    return torch.where(_rows(mask, x), x * (1.0 + size), x)


def scale_kv(
    key: torch.Tensor | None, value: torch.Tensor | None, mask: torch.Tensor, spec: FaultSpec
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """key-scale: the keys and/or values (``spec.target``) of the masked tokens x (1 + size)."""
    if key is not None and "k" in spec.target:
        key = scale_rows(key, mask, spec.size)
    if value is not None and "v" in spec.target:
        value = scale_rows(value, mask, spec.size)
    return key, value


def mix_own_value(
    out: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, size: float, heads: int
) -> torch.Tensor:
    """out-mix: the masked rows of the attention output (``[T, heads * D]``) become
    ``(1 - size) * out + size * v``, ``v`` the token's own value (``[T, kv_heads * D]``),
    each KV head's value serving the query heads of its group (grouped-query attention)."""
    tokens = out.shape[0]
    kv_heads = value.reshape(tokens, -1).shape[1] * heads // out.reshape(tokens, -1).shape[1]
    own = value.reshape(tokens, kv_heads, -1).repeat_interleave(heads // kv_heads, dim=1)
    mixed = (1.0 - size) * out + size * own.reshape(out.shape).to(out.dtype)
    return torch.where(_rows(mask, out), mixed, out)


def shifted_positions(positions: torch.Tensor, spec: FaultSpec, limit: int) -> torch.Tensor:
    """kv-position: where the masked tokens' keys are rotated instead, ``p + size`` kept in
    ``[0, limit)`` (the rotary table's length)."""
    return torch.clamp(positions + int(spec.size), 0, max(limit - 1, 0))


def misplaced_keys(
    rotary: Any,
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    spec: FaultSpec,
    limit: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """kv-position: ``rotary(positions, query, key)`` with the masked tokens' keys rotated at
    ``p + size``. ``rotary`` may work in place (vLLM's CPU and CUDA kernels do), so each call
    gets its own copies."""
    mask = selected(positions, spec)
    wrong_q, wrong_k = query.clone(), key.clone()
    q, k = rotary(positions, query, key)
    _, moved = rotary(shifted_positions(positions, spec, limit), wrong_q, wrong_k)
    return q, torch.where(_rows(mask, k), moved.view_as(k), k)
