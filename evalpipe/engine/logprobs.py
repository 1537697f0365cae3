"""Token traces from what an engine returns: OpenAI-compatible JSON or vLLM's output objects.

What a request asks for (vLLM's OpenAI server, ../shared/ENGINE.md has the measured shapes):

- a completion's own tokens: ``"logprobs": k`` and ``"return_tokens_as_token_ids": true``;
  ``choices[0].logprobs`` then has ``tokens`` (``"token_id:N"``), ``token_logprobs`` and
  ``top_logprobs`` (``{"token_id:N": logprob}`` per position; the chosen token may be
  listed beside the top k);
- a chat completion's: ``"logprobs": true, "top_logprobs": k`` and token ids; then
  ``choices[0].logprobs.content`` is a list of ``{token, logprob, top_logprobs: [{token,
  logprob}]}``;
- teacher forcing: a token-id prompt with ``"prompt_logprobs": k`` and one new token;
  ``choices[0].prompt_logprobs`` has ``null`` for the first prompt token, then per position
  ``{"N": {"logprob", "rank", "decoded_token"}}``: the prompt's own token (whatever its rank)
  and the top k.

Parsing never raises on a server that ignores the request: the trace is ``None`` and the
caller says so once. A malformed answer (lengths that disagree) raises ``ValueError``, which
the client turns into an infrastructure error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalpipe.traces import TokenTrace, trace_of

_PREFIX = "token_id:"


def token_id(text: str) -> int:
    """``"token_id:42"`` (or ``"42"``) → 42; anything else is a server that returned token
    strings although ids were asked for."""
    raw = text[len(_PREFIX) :] if text.startswith(_PREFIX) else text
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"the engine returned token {text!r} instead of a token id "
            "(it ignores return_tokens_as_token_ids)"
        ) from None


def request_fields(k: int, chat: bool) -> dict[str, Any]:
    """The body fields that ask for a generation's top-``k`` logprobs with token ids."""
    if k <= 0:
        return {}
    if chat:
        return {"logprobs": True, "top_logprobs": k, "return_tokens_as_token_ids": True}
    return {"logprobs": k, "return_tokens_as_token_ids": True}


def completion_trace(choice: Mapping[str, Any], k: int) -> TokenTrace | None:
    """The trace of a ``/v1/completions`` choice, or None when it carries no logprobs."""
    lp = choice.get("logprobs")
    if not lp or lp.get("tokens") is None:
        return None
    ids = [token_id(t) for t in lp["tokens"]]
    chosen = [_number(x) for x in lp["token_logprobs"]]
    tops = [
        [(token_id(t), _number(v)) for t, v in (row or {}).items()] for row in lp["top_logprobs"]
    ]
    return trace_of(ids, chosen, tops, k)


def chat_trace(choice: Mapping[str, Any], k: int) -> TokenTrace | None:
    """The trace of a ``/v1/chat/completions`` choice, or None when it carries no logprobs."""
    lp = choice.get("logprobs")
    if not lp or lp.get("content") is None:
        return None
    content = lp["content"]
    ids = [token_id(c["token"]) for c in content]
    chosen = [_number(c["logprob"]) for c in content]
    tops = [
        [(token_id(t["token"]), _number(t["logprob"])) for t in c.get("top_logprobs") or ()]
        for c in content
    ]
    return trace_of(ids, chosen, tops, k)


def prompt_trace(
    entries: Sequence[Mapping[str, Any] | None] | None,
    prompt_ids: Sequence[int],
    start: int,
    k: int,
) -> TokenTrace | None:
    """The trace of ``prompt_ids[start:]`` from a response's ``prompt_logprobs`` (None when
    the response has none). Entries are keyed by token id as text (JSON) or int (vLLM's
    objects); a value is a mapping with ``logprob`` and ``rank``, or an object with those
    attributes. A position's own token is its chosen token; the top list keeps ranks 1..k."""
    if entries is None:
        return None
    if len(entries) != len(prompt_ids):
        raise ValueError(
            f"prompt_logprobs has {len(entries)} positions for a {len(prompt_ids)}-token prompt"
        )
    if start < 1:
        raise ValueError("the first prompt token has no logprob: forced tokens start at 1+")
    ids, chosen, tops = [], [], []
    for position in range(start, len(prompt_ids)):
        entry = entries[position] or {}
        own = prompt_ids[position]
        by_id = {int(key): (_field(v, "logprob"), _field(v, "rank")) for key, v in entry.items()}
        if own not in by_id:
            raise ValueError(f"prompt_logprobs lacks the prompt's own token at {position}")
        ids.append(own)
        chosen.append(by_id[own][0])
        tops.append([(t, lp) for t, (lp, rank) in by_id.items() if rank is None or rank <= k])
    return trace_of(ids, chosen, tops, k)


def output_trace(
    logprobs: Sequence[Mapping[int, Any]] | None, ids: Sequence[int], k: int
) -> TokenTrace | None:
    """The trace of a vLLM ``CompletionOutput``: its ``logprobs`` (one ``{id: Logprob}`` a
    generated token) and ``token_ids``; None when logprobs were not asked for."""
    if logprobs is None:
        return None
    if len(logprobs) != len(ids):
        raise ValueError(f"{len(logprobs)} logprob positions for {len(ids)} tokens")
    chosen, tops = [], []
    for own, entry in zip(ids, logprobs, strict=True):
        by_id = {int(t): (_field(v, "logprob"), _field(v, "rank")) for t, v in entry.items()}
        chosen.append(by_id[own][0] if own in by_id else float("-inf"))
        tops.append([(t, lp) for t, (lp, rank) in by_id.items() if rank is None or rank <= k])
    return trace_of(list(ids), chosen, tops, k)


def _field(value: Any, name: str) -> Any:
    got = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
    return _number(got) if name == "logprob" else got


def _number(value: Any) -> float:
    """A logprob as a float: vLLM writes ``-inf`` as ``-9999.0`` in JSON, or may send null."""
    if value is None:
        return float("-inf")
    return float(value)
