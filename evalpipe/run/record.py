"""Sample recording: each completion scored and committed to the store the moment it ends.

An engine error becomes a sample with ``error`` set and no verdict: an infrastructure error
is never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evalpipe.engine.client import Completion, Request
from evalpipe.records import Sample, utcnow
from evalpipe.run.progress import Progress
from evalpipe.store import Store
from evalpipe.tasks.prompts import Prompt
from evalpipe.tasks.scoring import score
from evalpipe.tasks.spec import Dataset, TaskSpec


@dataclass
class Tally:
    """What the run's throughput is computed from."""

    output_tokens: int = 0
    generation_s: float = 0.0


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
    ) -> None:
        self.task = task
        self.run_id = run_id
        self.store = store
        self.progress = progress
        self.tally = Tally()
        self._prompts = {q.item_id: q for q in prompts}
        self._targets = {it.item_id: it.target for it in dataset.items}

    def __call__(self, c: Completion) -> None:
        prompt = self._prompts[c.item_id]
        sample = sample_of(self.task, self.run_id, prompt, self._targets[c.item_id], c)
        self.store.put_sample(sample)
        self.tally.output_tokens += sample.output_tokens or 0
        self.progress.update(sample.correct, sample.error is not None)


def requests_of(todo: Sequence[Prompt]) -> list[Request]:
    """The engine requests for the prompts still to run."""
    return [Request(q.item_id, text=q.text, messages=q.messages) for q in todo]
