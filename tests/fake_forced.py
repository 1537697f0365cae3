"""A local stand-in for a vLLM server's teacher-forcing surface (no engine).

Serves ``GET /v1/models``, ``POST /tokenize`` and ``POST /v1/completions`` the way vLLM 0.32
does for a token-id prompt with ``prompt_logprobs`` (see /work/shared/ENGINE.md): the choice's
``prompt_logprobs`` is ``null`` for the first prompt token, then per position an object
``{token_id: {logprob, rank, decoded_token}}`` holding the prompt's own token and the ``k``
most likely. Its tokenizer is one token per character (``ord(c) + 10``) after a BOS of 1; a
chat prompt is tokenized as ``role: content`` lines. A prompt of more than ``max_model_len - 1``
tokens (no room for the one new token) gets vLLM's HTTP 400. ``shift`` moves every logprob,
so two fakes play two layouts. Every completion body is kept in ``bodies``.

A request naming ids to force (``vllm_xargs.evalpipe_force``, evalpipe's decode-path forcing)
is answered as vLLM with evalpipe's logits processor does: exactly those ids generated after
the prompt, each with its logprob and top-k in completion form; ``forcing=False`` plays a
server without the processor (it generates id 7 every step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fake_openai import JsonServer

BOS = 1


def fake_tokens(text: str) -> list[int]:
    """The fake tokenizer's ids for a completion prompt."""
    return [BOS, *(ord(c) + 10 for c in text)]


def fake_chat_tokens(messages: Sequence[Mapping[str, str]]) -> list[int]:
    """The fake tokenizer's ids for a chat prompt."""
    return fake_tokens("".join(f"{m['role']}: {m['content']}\n" for m in messages))


def fake_logprob(position: int, token: int, shift: float = 0.0) -> float:
    """The logprob the fake gives ``token`` at ``position`` of a sequence."""
    return -0.05 * ((position + token) % 9) - shift


def alt_logprob(rank: int, shift: float = 0.0) -> float:
    """The logprob of the fake's alternative of ``rank`` (2 = the first after the prompt's
    own token, which ranks first)."""
    return -1.0 - 0.1 * rank - shift


def alternatives(position: int, k: int) -> list[int]:
    """The ``k`` token ids the fake ranks first at ``position`` (besides the prompt's own)."""
    return [2 + (position + j) % 5 for j in range(k)]


class FakeForced(JsonServer):
    """``with FakeForced(model="m") as srv: …`` — ``srv.url`` is the base URL."""

    def __init__(
        self,
        model: str,
        max_model_len: int = 4096,
        shift: float = 0.0,
        prompt_logprobs: bool = True,
        forcing: bool = True,
    ) -> None:
        super().__init__(model)
        self.forcing = forcing
        self.max_model_len = max_model_len
        self.shift = shift
        self.prompt_logprobs = prompt_logprobs
        self.bodies: list[dict[str, Any]] = []
        self.tokenized: list[dict[str, Any]] = []

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == "/tokenize":
            self.tokenized.append(body)
            return 200, self.tokenize(body)
        if path == "/v1/completions":
            self.bodies.append(body)
            return self.complete(body)
        return 404, {"error": "not found"}

    def tokenize(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if "messages" in body:
            tokens = fake_chat_tokens(body["messages"])
        else:
            tokens = fake_tokens(body["prompt"])
        return {"tokens": tokens, "count": len(tokens), "max_model_len": self.max_model_len}

    def complete(self, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        prompt = body["prompt"]
        assert isinstance(prompt, list), "a forced request sends token ids"
        if len(prompt) + body.get("max_tokens", 16) > self.max_model_len:
            return 400, {
                "object": "error",
                "message": f"This model's maximum context length is {self.max_model_len} "
                f"tokens. However, you requested {len(prompt) + body.get('max_tokens', 16)} "
                "tokens. Please reduce the length of the messages or completion.",
                "type": "BadRequestError",
                "code": 400,
            }
        xargs = body.get("vllm_xargs") or {}
        if "evalpipe_force" in xargs:
            return 200, self._forced_decode(prompt, list(xargs["evalpipe_force"]), body)
        choice: dict[str, Any] = {"index": 0, "text": "x", "finish_reason": "length"}
        k = body.get("prompt_logprobs")
        if self.prompt_logprobs and k is not None:
            choice["prompt_logprobs"] = [None] + [
                self._position(i, int(t), int(k)) for i, t in enumerate(prompt) if i > 0
            ]
        usage = {"prompt_tokens": len(prompt), "completion_tokens": 1}
        return 200, {"choices": [choice], "usage": usage}

    def _forced_decode(
        self, prompt: list[int], force: list[int], body: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert body.get("max_tokens") == len(force) and body.get("ignore_eos") is True
        assert "stop" not in body, "nothing may stop a forced generation early"
        ids = force if self.forcing else [7] * len(force)
        k = int(body.get("logprobs") or 1)
        start = len(prompt)
        tops = [
            {f"token_id:{t}": v["logprob"] for t, v in self._position(start + i, t, k).items()}
            for i, t in enumerate(ids)
        ]
        logprobs = {
            "tokens": [f"token_id:{t}" for t in ids],
            "token_logprobs": [fake_logprob(start + i, t, self.shift) for i, t in enumerate(ids)],
            "top_logprobs": tops,
        }
        choice = {"index": 0, "text": "x", "finish_reason": "length", "logprobs": logprobs}
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(ids)}
        return {"choices": [choice], "usage": usage}

    def _position(self, i: int, token: int, k: int) -> dict[str, Any]:
        """The prompt's own token ranks first; ``k - 1`` alternatives follow it."""
        out: dict[str, Any] = {
            str(token): {
                "logprob": fake_logprob(i, token, self.shift),
                "rank": 1,
                "decoded_token": chr(max(token - 10, 32)),
            }
        }
        for alt in alternatives(i, k):
            if len(out) < k and str(alt) not in out:
                out[str(alt)] = {
                    "logprob": alt_logprob(len(out) + 1, self.shift),
                    "rank": len(out) + 1,
                    "decoded_token": "a",
                }
        return out
