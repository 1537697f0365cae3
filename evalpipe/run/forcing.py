"""Teacher-forced requests and their results: a baseline's generated tokens appended to each
item's prompt, sent for prompt logprobs, and each answer stored as a trace (or as an error).

The prompt is tokenized by the scoring engine itself, and its length must equal the prompt
token count the baseline's decode trace starts at (``StoredTrace.start``): otherwise the forced
tokens would follow a different prompt than the one they were generated from, and the item is
stored as an infrastructure error with that reason, never sent. A request the engine refuses
(a prompt plus forced tokens longer than its context: HTTP 400) is an error with the engine's
text, never a score. A server that answers without prompt logprobs raises
:class:`NoPromptLogprobs` at the first such answer, so nothing half-made is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from evalpipe.engine.client import Completion, Request
from evalpipe.engine.server import FORCING_FLAGS
from evalpipe.errors import EvalpipeError
from evalpipe.records import canonical_json
from evalpipe.run.progress import Progress
from evalpipe.store import Store
from evalpipe.store.traces import put_trace_errors, put_traces
from evalpipe.traces import FORCED_DECODE, StoredTrace


class NoPromptLogprobs(EvalpipeError):
    """The engine answered a forced request without prompt logprobs (it ignores them)."""


FORCING_FLAG = " ".join(FORCING_FLAGS)
"""What a server needs to force tokens on the decode path (evalpipe adds it to every engine it
starts)."""


class NoForcing(EvalpipeError):
    """The engine generated other tokens than the forced ones: it runs without evalpipe's
    forced-decoding logits processor."""


def prompt_request(item_id: str, text: str) -> Request:
    """The request that renders a stored prompt: chat messages when ``text`` is the canonical
    JSON of a message list (how :class:`~evalpipe.tasks.prompts.Prompt` stores chat prompts),
    else completion text. A completion prompt that is itself the canonical JSON of role/content
    pairs is the one case this reads wrongly; no task renders one."""
    try:
        value = json.loads(text)
    except ValueError:
        return Request(item_id, text=text)
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
        and canonical_json(value) == text
    ):
        return Request(item_id, messages=tuple(value))
    return Request(item_id, text=text)


@dataclass(frozen=True)
class Forced:
    """What to send for one target run: the requests, and the items refused before sending
    (item → reason)."""

    requests: tuple[Request, ...]
    refused: Mapping[str, str]


def forced_requests(
    todo: Sequence[str],
    prompt_ids: Mapping[str, list[int] | str],
    forced: Mapping[str, StoredTrace],
    path: str = "prefill",
    vocab: int | None = None,
) -> Forced:
    """Token-id requests for the items ``todo``: ``prompt ids + forced ids`` scored as a
    prompt (``prefill``), or the forced ids generated after the prompt ids step by step
    (``forced-decode``); see the module docstring for the items refused instead, and those
    whose forced ids fall outside the scoring model's ``vocab`` (another tokenizer's ids)."""
    requests: list[Request] = []
    refused: dict[str, str] = {}
    for item in todo:
        ids = prompt_ids.get(item, "the engine returned no tokens for it")
        base = forced[item]
        outside = _outside_vocab(base, vocab)
        if outside:
            refused[item] = outside
        elif isinstance(ids, str):
            refused[item] = f"cannot tokenize the prompt: {ids}"
        elif len(ids) != base.start:
            refused[item] = (
                f"the engine tokenizes the prompt to {len(ids)} tokens but run "
                f"{base.run_id} generated from {base.start}: its tokens would not follow "
                "the prompt they were generated from"
            )
        elif path == "forced-decode":
            force = tuple(int(t) for t in base.trace.token_ids)
            requests.append(Request(item, prompt_ids=tuple(ids), force_ids=force))
        else:
            tokens = tuple(ids) + tuple(int(t) for t in base.trace.token_ids)
            requests.append(Request(item, prompt_ids=tokens, forced_from=len(ids)))
    return Forced(tuple(requests), refused)


def _outside_vocab(base: StoredTrace, vocab: int | None) -> str | None:
    """Why ``base``'s ids cannot be forced on a model of ``vocab`` tokens, or None."""
    ids = base.trace.token_ids
    if vocab is None or not ids.size or (int(ids.min()) >= 0 and int(ids.max()) < vocab):
        return None
    bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
    return (
        f"run {base.run_id}'s token id {bad} is outside the scoring model's vocabulary of "
        f"{vocab}: its tokens come from another tokenizer, and are never scored"
    )


@dataclass
class TraceWriter:
    """The ``on_result`` of a forced session: each answer stored the moment it arrives, as
    the trace of ``run_id`` for ``source`` or as an error with the reason."""

    store: Store
    run_id: str
    source: str
    forced: Mapping[str, StoredTrace]
    progress: Progress
    scored: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def refuse(self, refused: Mapping[str, str]) -> None:
        """Store the items refused before sending."""
        put_trace_errors(self.store, self.run_id, self.source, refused)
        self.errors.update(refused)
        for _ in refused:
            self.progress.update(None, True)

    def __call__(self, c: Completion) -> None:
        base = self.forced[c.item_id]
        reason = self._failure(c, base)
        if reason is None:
            assert c.trace is not None  # _failure checked it
            put_traces(
                self.store,
                [StoredTrace(self.run_id, c.item_id, self.source, base.start, c.trace)],
            )
            self.scored += 1
        else:
            put_trace_errors(self.store, self.run_id, self.source, {c.item_id: reason})
            self.errors[c.item_id] = reason
        self.progress.update(None, reason is not None)

    def _failure(self, c: Completion, base: StoredTrace) -> str | None:
        sent = f"prompt {base.start} + {base.trace.n} forced tokens"
        if c.error is not None:
            return f"teacher-forced request ({sent}) failed: {c.error}"
        if c.trace is None and self.source.startswith(FORCED_DECODE):
            raise NoForcing(
                "the engine answered a forced-decode request without token logprobs; nothing "
                "was stored for that item. Score with a vLLM server, which returns them"
            )
        if c.trace is None:
            raise NoPromptLogprobs(
                "the engine answered a teacher-forced request without prompt logprobs (it "
                "ignores `prompt_logprobs`); nothing was stored for that item. Score with a "
                "vLLM server, which returns them"
            )
        got, want = c.trace.token_ids, base.trace.token_ids
        if np.array_equal(got, want):
            return None
        if self.source.startswith(FORCED_DECODE):
            if len(got) < len(want) and np.array_equal(got, want[: len(got)]):
                return (
                    f"the engine stopped after {len(got)} of the {len(want)} forced tokens "
                    f"({sent}; finish reason {c.finish_reason}): the sequence is longer "
                    "than its context"
                )
            raise NoForcing(
                "the engine generated other tokens than the forced ones: it runs without "
                f"evalpipe's forced-decoding processor. Start the server with {FORCING_FLAG} "
                "(evalpipe installed in its environment), or score with --path prefill; "
                "nothing was stored for that item"
            )
        return (
            f"the engine returned logprobs for {c.trace.n} tokens that are not the "
            f"{base.trace.n} forced ({sent})"
        )
