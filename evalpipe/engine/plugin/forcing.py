"""Teacher forcing on the decode path: a v1 logits processor that makes the engine generate
exactly the token ids a request names, one decode step at a time.

Loaded by vLLM with ``--logits-processors evalpipe.engine.plugin.forcing:ForceTokens`` (evalpipe
adds the flag to the engines it starts). A request asks for it with the body field
``"vllm_xargs": {"evalpipe_force": [id, id, ...]}``; at step i every logit but ``ids[i]`` is
masked, so the sampled token is the forced one whatever the sampling settings. vLLM's default
``logprobs_mode`` (``raw_logprobs``) reports the model's own logprobs, computed before any
logits processor, so each forced position comes back with the model's top-K beside the
forced token's own logprob: the decode kernels' view of every position of another run's
sequence. Requests without the field are left alone (the processor returns None for them).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from evalpipe.traces import FORCE_KEY

__all__ = ["FORCE_KEY", "ForceTokens", "force_step"]


def force_step(ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
    """The logits of one request at the step after ``output_ids``: everything but the next
    forced id at -inf (unchanged once every forced id is out)."""
    step = len(output_ids)
    if step >= len(ids):
        return logits
    keep = ids[step]
    masked = torch.full_like(logits, float("-inf"))
    masked[keep] = logits[keep]
    return masked


class ForceTokens(AdapterLogitsProcessor):  # type: ignore[misc]  # vLLM is untyped here
    """The processor vLLM instantiates once per engine (see the module docstring)."""

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is chosen: vLLM must apply it under greedy too

    def new_req_logits_processor(self, params: Any) -> Any:
        extra = getattr(params, "extra_args", None) or {}
        raw = extra.get(FORCE_KEY)
        if not raw:
            return None
        ids = [int(i) for i in raw]

        def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            return force_step(ids, output_ids, logits)

        return force
