"""The forced-decoding logits processor's arithmetic, on plain tensors (the real engine's
use of it: tests/engine)."""

from __future__ import annotations

import torch

from evalpipe.engine.plugin.forcing import FORCE_KEY, ForceTokens, force_step


def test_each_step_keeps_only_the_forced_id_with_its_own_logit() -> None:
    logits = torch.tensor([0.5, 2.0, -1.0, 0.1])
    ids = [2, 0]
    first = force_step(ids, [], logits.clone())
    assert int(first.argmax()) == 2 and first[2].item() == -1.0
    assert torch.isinf(first[[0, 1, 3]]).all()
    second = force_step(ids, [2], logits.clone())
    assert int(second.argmax()) == 0
    # Past the forced ids the engine's own logits are left alone.
    assert torch.equal(force_step(ids, [2, 0], logits.clone()), logits)


def test_requests_without_the_key_are_left_alone() -> None:
    from types import SimpleNamespace

    proc = ForceTokens.__new__(ForceTokens)  # no engine config needed for this method
    assert proc.new_req_logits_processor(SimpleNamespace(extra_args={"other": 1})) is None
    # vllm_xargs lists may arrive as text
    fn = proc.new_req_logits_processor(SimpleNamespace(extra_args={FORCE_KEY: ["3", 1]}))
    assert int(fn([], torch.zeros(5)).argmax()) == 3 and int(fn([3], torch.zeros(5)).argmax()) == 1
    assert proc.is_argmax_invariant() is False
