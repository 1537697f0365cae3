"""Sample recording: each completion scored and committed to the store the moment it ends.

An engine error becomes a sample with ``error`` set and no verdict: an infrastructure error
is never a wrong answer. A completion's token trace (``--logprobs``) is stored with its
sample, in one transaction and bound to that answer (:func:`evalpipe.store.traces.put_answer`);
an engine that returns none is said once, and nothing is stored for it, as for a trace whose
length is not the answer's token count.

Capture can also complete a run answered without it: the items are generated again and a
regenerated trace is kept only when its text is the stored answer (greedy decoding at one
configuration gives the same tokens), checked as it is written; the stored sample is never
touched.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evalpipe.engine.client import Completion, Request
from evalpipe.records import Sample, utcnow
from evalpipe.run.progress import Progress
from evalpipe.store import Store
from evalpipe.store.holders import Claim
from evalpipe.store.traces import put_answer, put_trace_for_answer
from evalpipe.tasks.prompts import Prompt
from evalpipe.tasks.scoring import score
from evalpipe.tasks.spec import Dataset, TaskSpec
from evalpipe.traces import DECODE, StoredTrace


@dataclass
class Tally:
    """What the run's throughput is computed from."""

    output_tokens: int = 0
    generation_s: float = 0.0
    traces: int = 0
    untraced: int = 0  # good answers that came without a usable trace
    mismatched: int = 0  # capture completions whose text differed from the stored answer


def sample_of(task: TaskSpec, run_id: str, prompt: Prompt, target: str, c: Completion) -> Sample:
    """The stored sample of completion ``c``: scored, or an infrastructure error."""
    if c.error is not None or c.text is None:
        return Sample(
            run_id=run_id,
            item_id=c.item_id,
            prompt_hash=prompt.prompt_hash,
            output=None,
            target=target,
            correct=None,
            latency_s=c.latency_s,
            error=c.error or "empty response",
            completed_at=utcnow(),
        )
    s = score(task, c.text, target)
    return Sample(
        run_id=run_id,
        item_id=c.item_id,
        prompt_hash=prompt.prompt_hash,
        output=c.text,
        target=target,
        correct=s.correct,
        extracted=s.extracted,
        correct_by=s.correct_by,
        prompt_tokens=c.prompt_tokens,
        output_tokens=c.output_tokens,
        finish_reason=c.finish_reason,
        latency_s=c.latency_s,
        completed_at=utcnow(),
    )


class Recorder:
    """The ``on_result`` of a run's engine session: score, store, count, show progress."""

    def __init__(
        self,
        task: TaskSpec,
        dataset: Dataset,
        prompts: Sequence[Prompt],
        run_id: str,
        store: Store,
        progress: Progress,
        capture: int = 0,
        capture_only: Mapping[str, str] | None = None,
        holder: Claim | None = None,
    ) -> None:
        self.task = task
        self.run_id = run_id
        self.store = store
        self.progress = progress
        self.tally = Tally()
        self.capture = capture
        self._capture_only = dict(capture_only or {})
        self._prompts = {q.item_id: q for q in prompts}
        self._targets = {it.item_id: it.target for it in dataset.items}
        self._said = False
        self.holder = holder

    def __call__(self, c: Completion) -> None:
        if self.holder is not None:
            self.holder.check()  # taken over by another process: write nothing more
        if c.item_id in self._capture_only:
            self._complete_capture(c, self._capture_only[c.item_id])
            return
        prompt = self._prompts[c.item_id]
        sample = sample_of(self.task, self.run_id, prompt, self._targets[c.item_id], c)
        trace = self._trace(c) if sample.error is None else None
        put_answer(self.store, sample, trace)
        self.tally.traces += trace is not None
        self.tally.output_tokens += sample.output_tokens or 0
        self.progress.update(sample.correct, sample.error is not None)

    def _trace(self, c: Completion) -> StoredTrace | None:
        """The trace to store with ``c``'s answer, or None (said once)."""
        if not self.capture:
            return None
        why = c.trace_error or "the engine ignores `logprobs`"
        if c.trace is not None and c.output_tokens not in (None, c.trace.n):
            why = f"{c.trace.n} logprob positions for {c.output_tokens} generated tokens"
        elif c.trace is not None:
            return StoredTrace(self.run_id, c.item_id, DECODE, c.prompt_tokens or 0, c.trace)
        self.tally.untraced += 1
        if not self._said:
            self._said = True
            print(
                f"notice: item {c.item_id} came back without usable token logprobs ({why}); "
                "token traces are not stored for such items",
                file=sys.stderr,
                flush=True,
            )
        return None

    def _complete_capture(self, c: Completion, stored_output: str) -> None:
        if c.error is None and c.text is not None and c.text != stored_output:
            self.tally.mismatched += 1
        elif c.error is None and c.text is not None:
            trace = self._trace(c)
            if trace is not None and put_trace_for_answer(self.store, trace, c.text):
                self.tally.traces += 1
            elif trace is not None:
                self.tally.mismatched += 1  # the stored answer changed meanwhile
        self.progress.update(None, c.error is not None)


def requests_of(todo: Sequence[Prompt]) -> list[Request]:
    """The engine requests for the prompts still to run."""
    return [Request(q.item_id, text=q.text, messages=q.messages) for q in todo]
