"""In-process engine: ``vllm.LLM`` generating in chunks so samples are stored as they finish.

vLLM batches internally, so each chunk of ``concurrency`` prompts is one ``generate`` call;
chunking bounds what a crash can lose to one chunk. An exception from the engine turns every
prompt of the chunk into an infrastructure error, never into a wrong answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from evalpipe.engine.client import Completion, Request
from evalpipe.engine.logprobs import output_trace, prompt_trace


class OfflineEngine:
    def __init__(
        self,
        model: str,
        engine_kwargs: Mapping[str, Any],
        sampling: Mapping[str, Any],
        stop: Sequence[str],
        logprobs: int = 0,
    ) -> None:
        from vllm import LLM, SamplingParams  # heavy: imported only when this engine is used

        self._llm = LLM(model=model, **dict(engine_kwargs))
        params = dict(sampling)
        self._k = logprobs
        self._params = SamplingParams(stop=list(stop) or None, logprobs=logprobs or None, **params)
        # Teacher forcing: the prompt's logprobs, one new token.
        self._forced = SamplingParams(
            **{**params, "max_tokens": 1}, prompt_logprobs=max(1, logprobs)
        )

    def tokenize(self, request: Request) -> list[int]:
        """The prompt's token ids as ``generate`` / ``chat`` would encode it."""
        tokenizer = self._llm.get_tokenizer()
        if request.messages is not None:
            messages = [dict(m) for m in request.messages]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            return [int(t) for t in ids]
        return [int(t) for t in tokenizer(request.text or "")["input_ids"]]

    def generate(
        self,
        requests: Iterable[Request],
        on_result: Callable[[Completion], None],
        chunk_size: int,
    ) -> None:
        chunk: list[Request] = []
        for request in requests:
            chunk.append(request)
            if len(chunk) >= chunk_size:
                self._run_chunk(chunk, on_result)
                chunk = []
        if chunk:
            self._run_chunk(chunk, on_result)

    def _run_chunk(self, chunk: list[Request], on_result: Callable[[Completion], None]) -> None:
        # A token prompt the engine cannot hold is that item's error, not the whole chunk's.
        limit = self._llm.llm_engine.model_config.max_model_len
        for r in [r for r in chunk if r.prompt_ids is not None and len(r.prompt_ids) >= limit]:
            reason = f"prompt of {len(r.prompt_ids or ())} tokens exceeds max_model_len {limit}"
            on_result(Completion(r.item_id, None, latency_s=0.0, error=reason))
        chunk = [r for r in chunk if r.prompt_ids is None or len(r.prompt_ids) < limit]
        if not chunk:
            return
        started = time.perf_counter()
        try:
            if chunk[0].forced_from is not None:
                prompts = [{"prompt_token_ids": list(r.prompt_ids or ())} for r in chunk]
                outputs = self._llm.generate(prompts, self._forced, use_tqdm=False)
            elif chunk[0].prompt_ids is not None:
                prompts = [{"prompt_token_ids": list(r.prompt_ids or ())} for r in chunk]
                outputs = self._llm.generate(prompts, self._params, use_tqdm=False)
            elif chunk[0].messages is not None:
                conversations = [[dict(m) for m in r.messages or ()] for r in chunk]
                outputs = self._llm.chat(conversations, self._params, use_tqdm=False)
            else:
                outputs = self._llm.generate(
                    [r.text or "" for r in chunk], self._params, use_tqdm=False
                )
        except Exception as exc:  # engine crash: infrastructure error for the whole chunk
            elapsed = time.perf_counter() - started
            for r in chunk:
                on_result(
                    Completion(r.item_id, None, latency_s=elapsed, error=f"engine error: {exc}")
                )
            return
        elapsed = time.perf_counter() - started
        for request, out in zip(chunk, outputs, strict=True):
            on_result(self._completion(request, out, elapsed))

    def _completion(self, request: Request, out: Any, elapsed: float) -> Completion:
        first = out.outputs[0]
        try:
            if request.forced_from is not None:
                ids = list(out.prompt_token_ids or ())
                trace = prompt_trace(out.prompt_logprobs, ids, request.forced_from, self._k)
            else:
                trace = output_trace(first.logprobs, list(first.token_ids), self._k)
        except (ValueError, KeyError) as exc:
            if request.forced_from is not None:
                return Completion(request.item_id, None, latency_s=elapsed, error=str(exc))
            trace = None
        return Completion(
            item_id=request.item_id,
            text=first.text,
            prompt_tokens=len(out.prompt_token_ids or []),
            output_tokens=len(first.token_ids),
            finish_reason=first.finish_reason,
            # In-process batches have no per-request latency; the chunk's is recorded.
            latency_s=elapsed,
            trace=trace,
        )

    def close(self) -> None:
        # Dropping the LLM releases the engine core processes.
        del self._llm
