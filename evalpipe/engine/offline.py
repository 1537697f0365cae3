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


class OfflineEngine:
    def __init__(
        self,
        model: str,
        engine_kwargs: Mapping[str, Any],
        sampling: Mapping[str, Any],
        stop: Sequence[str],
    ) -> None:
        from vllm import LLM, SamplingParams  # heavy: imported only when this engine is used

        self._llm = LLM(model=model, **dict(engine_kwargs))
        params = dict(sampling)
        self._params = SamplingParams(stop=list(stop) or None, **params)

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
        started = time.perf_counter()
        try:
            if chunk[0].messages is not None:
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
            first = out.outputs[0]
            on_result(
                Completion(
                    item_id=request.item_id,
                    text=first.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    output_tokens=len(first.token_ids),
                    finish_reason=first.finish_reason,
                    # In-process batches have no per-request latency; the chunk's is recorded.
                    latency_s=elapsed,
                )
            )

    def close(self) -> None:
        # Dropping the LLM releases the engine core processes.
        del self._llm
