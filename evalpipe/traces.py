"""Token traces: the token ids of a generated (or teacher-forced) sequence and the engine's
logprobs at each position, and their compact binary form.

A trace is what token-level comparison reads. At position ``i`` the engine chose (or was fed)
``token_ids[i]`` with log-probability ``logprobs[i]``, and its ``k`` most likely tokens were
``top_ids[i]`` with ``top_logprobs[i]`` (most likely first). A position with fewer than ``k``
alternatives reported is padded with id ``-1`` and logprob ``-inf``.

Stored as one binary blob per (run, item, source) — a fixed header and the four arrays
little-endian, zlib-compressed: 48 bytes a position at k = 5 before compression, so a
1 319-item run at 256 tokens stays near 16 MB. ``source`` is ``""`` for the run's own
generation (the decode path) and the id of another run for a teacher-forced trace: the
run's engine scoring that run's tokens (the prefill path).

A blob is untrusted (it may come from a file): :func:`decode` decompresses no more than its
header promises and the caller allows (:data:`~evalpipe.limits.MAX_TRACE_POSITIONS`,
:data:`~evalpipe.limits.MAX_TRACE_BYTES`, a sample's own token count), so a blob that claims
25 million positions costs nothing; and a trace holds no NaN or +inf (a logprob is finite, or
-inf for "not reported").

A decode-path trace describes one answer: :func:`answer_digest` of that answer's text is
stored with it, and a reader checks it against the stored answer, so a trace is never read
for an answer it does not describe (two processes writing one item).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from evalpipe.limits import MAX_LOGPROBS, MAX_TRACE_BYTES, MAX_TRACE_POSITIONS

DECODE = ""
"""The ``source`` of a run's own generation."""

FORCED_DECODE = "decode:"
"""How the ``source`` of a trace teacher-forced on the decode path begins: ``decode:BASELINE``
is the run's engine generating BASELINE's tokens step by step (the bare ``BASELINE`` is the
prefill path)."""

FORCE_KEY = "evalpipe_force"
"""The ``vllm_xargs`` key of a forced-decode request: the ids evalpipe's logits processor
(:mod:`evalpipe.engine.plugin.forcing`) makes the engine generate."""

FORCED_PATHS = ("forced-decode", "prefill")
"""The ways ``evalpipe score`` teacher-forces a baseline's tokens."""


def forced_source(baseline_id: str, path: str) -> str:
    """The ``source`` of a trace of ``baseline_id``'s tokens forced along ``path``."""
    if path not in FORCED_PATHS:
        raise ValueError(f"unknown forced path {path!r}")
    return FORCED_DECODE + baseline_id if path == "forced-decode" else baseline_id


_MAGIC = b"EPT1"
_HEADER = struct.Struct("<4sIH")  # magic, positions, k

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class TokenTrace:
    """Token ids and logprobs of one sequence (see the module docstring)."""

    token_ids: IntArray
    logprobs: FloatArray
    top_ids: IntArray
    top_logprobs: FloatArray

    def __post_init__(self) -> None:
        n = self.token_ids.shape[0]
        if self.token_ids.shape != (n,) or self.logprobs.shape != (n,):
            raise ValueError("token_ids and logprobs must be 1-D of the same length")
        if self.top_ids.ndim != 2 or self.top_ids.shape != self.top_logprobs.shape:
            raise ValueError("top_ids and top_logprobs must be 2-D of the same shape")
        if self.top_ids.shape[0] != n:
            raise ValueError("top_ids must have one row per position")
        for name, values in (("logprobs", self.logprobs), ("top_logprobs", self.top_logprobs)):
            # NaN or +inf would turn every KL and mean of a comparison into NaN, silently.
            if np.isnan(values).any() or np.isposinf(values).any():
                raise ValueError(f"{name} hold NaN or +inf: a logprob is finite, or -inf")

    @property
    def n(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenTrace):
            return NotImplemented
        return (
            np.array_equal(self.token_ids, other.token_ids)
            and np.array_equal(self.logprobs, other.logprobs)
            and np.array_equal(self.top_ids, other.top_ids)
            and np.array_equal(self.top_logprobs, other.top_logprobs)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside


def trace_of(
    token_ids: list[int],
    logprobs: list[float],
    tops: list[list[tuple[int, float]]],
    k: int,
) -> TokenTrace:
    """A trace from plain lists: ``tops[i]`` is position ``i``'s ``(id, logprob)`` pairs in any
    order; the ``k`` most likely are kept, most likely first, padded as the module says."""
    n = len(token_ids)
    if len(logprobs) != n or len(tops) != n:
        raise ValueError(f"{n} tokens but {len(logprobs)} logprobs and {len(tops)} top lists")
    top_ids = np.full((n, k), -1, dtype=np.int32)
    top_lps = np.full((n, k), -np.inf, dtype=np.float32)
    for i, pairs in enumerate(tops):
        best = sorted(pairs, key=lambda p: (-p[1], p[0]))[:k]
        for j, (tid, lp) in enumerate(best):
            top_ids[i, j] = tid
            top_lps[i, j] = lp
    return TokenTrace(
        np.asarray(token_ids, dtype=np.int32),
        np.asarray(logprobs, dtype=np.float32),
        top_ids,
        top_lps,
    )


def encode(trace: TokenTrace) -> bytes:
    """The stored form of ``trace``."""
    parts = [
        _HEADER.pack(_MAGIC, trace.n, trace.k),
        trace.token_ids.astype("<i4").tobytes(),
        trace.logprobs.astype("<f4").tobytes(),
        trace.top_ids.astype("<i4").tobytes(),
        trace.top_logprobs.astype("<f4").tobytes(),
    ]
    return zlib.compress(b"".join(parts), 1)


def answer_digest(output: str) -> str:
    """The digest a decode-path trace keeps of the answer it describes (sha256 of its text)."""
    return hashlib.sha256(output.encode("utf-8")).hexdigest()


def decode(blob: bytes, max_positions: int | None = None) -> TokenTrace:
    """The trace stored as ``blob``; ``ValueError`` if it is not one, or if it holds more
    than ``max_positions`` positions (e.g. its sample's token count), than
    :data:`~evalpipe.limits.MAX_TRACE_POSITIONS` or than
    :data:`~evalpipe.limits.MAX_TRACE_BYTES` decompressed: the header is read first, and no
    more is decompressed than it promises."""
    raw = _inflate(blob, max_positions)
    n, k = _HEADER.unpack_from(raw)[1:]
    at = _HEADER.size

    def take(dtype: str, count: int) -> npt.NDArray[np.generic]:
        nonlocal at
        out = np.frombuffer(raw, dtype=dtype, count=count, offset=at)
        at += 4 * count
        return out

    ids = take("<i4", n).astype(np.int32)
    lps = take("<f4", n).astype(np.float32)
    top_ids = take("<i4", n * k).astype(np.int32).reshape(n, k)
    top_lps = take("<f4", n * k).astype(np.float32).reshape(n, k)
    return TokenTrace(ids, lps, top_ids, top_lps)


def _inflate(blob: bytes, max_positions: int | None) -> bytes:
    """``blob`` decompressed, header first: at most the size its header states, which must
    be within the bounds; anything more, or less, is refused."""
    inflater = zlib.decompressobj()
    try:
        head = inflater.decompress(blob, _HEADER.size)
        if len(head) < _HEADER.size:
            raise ValueError("not a stored token trace: too short")
        magic, n, k = _HEADER.unpack_from(head)
        if magic != _MAGIC:
            raise ValueError(f"not a stored token trace (magic {magic!r})")
        _check_size(n, k, max_positions)
        size = _HEADER.size + n * (8 + 8 * k)
        body = inflater.decompress(inflater.unconsumed_tail, size - _HEADER.size)
        more = inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error as exc:
        raise ValueError(f"not a stored token trace: {exc}") from exc
    if len(body) + _HEADER.size != size or not inflater.eof:
        raise ValueError(f"stored token trace is truncated (n={n}, k={k})")
    if more or inflater.unused_data:
        raise ValueError(f"stored token trace holds more than its n={n}, k={k}")
    return head + body


def _check_size(n: int, k: int, max_positions: int | None) -> None:
    if max_positions is not None and n > max_positions:
        raise ValueError(
            f"the trace has {n} positions, more than its sample's {max_positions} tokens"
        )
    if n > MAX_TRACE_POSITIONS:
        raise ValueError(
            f"the trace claims {n} positions, above the limit of {MAX_TRACE_POSITIONS}"
        )
    if k > MAX_LOGPROBS:
        raise ValueError(f"the trace claims k={k}, above the limit of {MAX_LOGPROBS}")
    if _HEADER.size + n * (8 + 8 * k) > MAX_TRACE_BYTES:
        raise ValueError(
            f"the trace claims {n} positions at k={k}, above the limit of {MAX_TRACE_BYTES} bytes"
        )


@dataclass(frozen=True)
class StoredTrace:
    """A trace as stored: whose (``run_id``, ``item_id``), of what (``source``: ``DECODE`` or
    the run whose tokens were teacher-forced) and where it starts in the whole sequence
    (``start``: the prompt's token count, so ``start + i`` is position ``i``'s place in the
    KV cache, which is what shard boundaries are counted in)."""

    run_id: str
    item_id: str
    source: str
    start: int
    trace: TokenTrace
    answer: str | None = field(default=None, compare=False)
    """:func:`answer_digest` of the answer a decode-path trace describes (None: a
    teacher-forced trace, or one stored before answers were bound to their traces); not
    part of equality: two traces are equal by what they hold."""
