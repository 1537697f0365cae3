"""Where a canary fault enters vLLM: two class-level patches, installed once per process.

- the rotary embedding's CustomOp dispatch (``RotaryEmbeddingBase.forward``): every RoPE
  attention module calls it with the batch's token positions right before its attention
  layer, so it records them (and, for ``kv-position``, rotates the chosen keys at the wrong
  position);
- the attention layer (``Attention.forward``): it scales the chosen keys or values before
  they are written to the KV cache (``key-scale``), or the chosen queries' output after
  (``out-scale``, ``out-mix``).

Both are model-level modules that exist on every platform (vllm-ascend dispatches the same
rotary CustomOp to its own kernel and runs the same ``Attention`` layer over its backend), so
the fault behaves the same on CPU, GPU and NPU; nothing here touches a kernel. Installed only
when ``EVALPIPE_FAULT`` is set: otherwise this module is never imported.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from evalpipe.engine.plugin import faultmath
from evalpipe.faults import FaultSpec

MARK = "_evalpipe_fault"
"""Attribute set on a patched function, so a second install (plugins may load twice in a
process) does not wrap it again."""

_positions: list[Any] = [None]
"""The positions of the last rotary call in this process, taken by the next attention call.
Engine workers run one forward at a time, so one slot is enough."""

_applied = [False]


def _classes() -> tuple[Any, Any]:
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbeddingBase

    try:
        from vllm.model_executor.layers.attention.attention import Attention
    except ImportError:  # vLLM before the attention layer moved (0.1x)
        from vllm.attention.layer import Attention
    return RotaryEmbeddingBase, Attention


def install(spec: FaultSpec) -> None:
    """Patch the rotary dispatch and the attention layer of this process for ``spec``."""
    rotary_cls, attention_cls = _classes()
    if getattr(attention_cls.forward, MARK, None) is not None:
        return
    rotary_forward = rotary_cls.forward
    attention_forward = attention_cls.forward

    def rotary(self: Any, positions: Any, query: Any, key: Any = None, *a: Any, **kw: Any) -> Any:
        _positions[0] = positions
        if spec.kind != "kv-position" or key is None:
            return rotary_forward(self, positions, query, key, *a, **kw)
        if a or kw:  # a variant (offsets, M-RoPE) the wrong-position rotation cannot repeat
            raise RuntimeError(
                f"{os.environ.get('EVALPIPE_FAULT')}: the kv-position fault cannot apply to "
                f"{type(self).__name__}, called with more than (positions, query, key); "
                "unset EVALPIPE_FAULT or choose another kind"
            )
        limit = int(self.cos_sin_cache.shape[0])

        def call(p: Any, q: Any, k: Any) -> Any:
            return rotary_forward(self, p, q, k)

        return faultmath.misplaced_keys(call, positions, query, key, spec, limit)

    def attention(self: Any, query: Any, key: Any, value: Any, *a: Any, **kw: Any) -> Any:
        positions, _positions[0] = _positions[0], None
        if positions is None or positions.dim() != 1 or positions.shape[0] != query.shape[0]:
            raise RuntimeError(
                f"{os.environ.get('EVALPIPE_FAULT')}: evalpipe's fault plugin cannot apply to "
                f"attention layer {getattr(self, 'layer_name', '?')}: it was not called right "
                "after a rotary embedding on the same tokens (this model's attention is not "
                "a RoPE decoder's); unset EVALPIPE_FAULT"
            )
        mask = faultmath.selected(positions, spec)
        if spec.kind == "key-scale":
            key, value = faultmath.scale_kv(key, value, mask, spec)
        out = attention_forward(self, query, key, value, *a, **kw)
        if not _applied[0]:
            _applied[0] = True
            print(f"evalpipe-fault: applied in process {os.getpid()}", file=sys.stderr, flush=True)
        if spec.kind == "out-scale":
            out = faultmath.scale_rows(out, mask, spec.size)
        elif spec.kind == "out-mix" and value is not None:
            out = faultmath.mix_own_value(out, value, mask, spec.size, self.num_heads)
        return out

    setattr(rotary, MARK, spec)
    setattr(attention, MARK, spec)
    rotary_cls.forward = rotary
    attention_cls.forward = attention
