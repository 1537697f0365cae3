"""Long-context retrieval generators (``passkey``, ``needle-multi``) with exact token lengths.

Context parallelism (DCP) interleaves a sequence's KV cache across ranks in chunks of
``cp_kv_cache_interleave_size`` tokens, so its bookkeeping is exercised only by sequences
longer than ``dcp x interleave`` tokens (the *shard period*), and most sharply near its
multiples. These generators therefore build prompts of chosen token lengths, by default a
grid straddling multiples of the period (``k*period - 16``, ``k*period + 16``).

Lengths are exact for the run's model: the runner passes ``count_tokens`` (the model's own
tokenizer, counting the way the engine does, special tokens included), and each prompt is
grown from a seeded haystack until it has exactly the target count. The prompt is the whole
request (the task template is ``{{ prompt }}``), so the engine's ``prompt_tokens`` equals the
target. Everything else comes from ``random.Random(seed)``: the same parameters and tokenizer
give the same rows, and the rows' sha256 records both.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

from evalpipe.layout import MIN_PERIOD
from evalpipe.tasks.generators.registry import Rows, register

CountTokens = Callable[[str], int]

DEFAULT_MULTIPLES = (1, 2, 3)
DEFAULT_OFFSETS = (-16, 16)
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
REFERENCE_PERIOD = 1024
"""Grid period when the layout has no context parallelism to speak of: dcp8 x 128 tokens,
the SFA-DCP deployment evalpipe was built for (so a non-CP baseline run on its own gets the
same items as that CP run)."""

# Filler in the style of the passkey paper (Mohtashami & Jaggi, 2023): plain sentences with
# no digits, so the only numbers in a prompt are the keys.
_HAYSTACK = (
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
    "The river runs past the old mill.",
    "A quiet wind moves through the trees.",
    "The road bends toward the hills.",
    "Clouds drift slowly over the valley.",
    "The market opens early in the morning.",
    "Birds gather on the roof of the barn.",
    "The lamp in the window stays lit all night.",
)
_PAD_UNITS = (" .", " ,", "\n", " and")
_NAMES = (
    "apple", "harbor", "violet", "granite", "falcon", "meadow", "copper", "lantern",
    "willow", "summit", "ember", "glacier", "orchid", "canyon", "saffron", "thistle",
    "marble", "tundra", "juniper", "quartz", "heron", "cobalt", "prairie", "beacon",
)  # fmt: skip

PASSKEY_INTRO = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about it.\n\n"
)


def resolve_period(period: Any, shard_period: int | None) -> tuple[int, str]:
    """The grid period and where it came from: an explicit integer, or ``"auto"`` (the
    run's shard period when it is at least :data:`MIN_PERIOD`, else the reference)."""
    if period == "auto":
        if shard_period is not None and shard_period >= MIN_PERIOD:
            return shard_period, "layout"
        return REFERENCE_PERIOD, "reference"
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"period must be a positive integer or 'auto', not {period!r}")
    return period, "param"


def length_grid(period: int, multiples: Sequence[int], offsets: Sequence[int]) -> list[int]:
    """``k*period + o`` for each multiple k and offset o, sorted, without duplicates."""
    for name, values in (("multiples", multiples), ("offsets", offsets)):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ValueError(f"{name} must be a non-empty list of integers, not {values!r}")
    if any(k < 1 for k in multiples):
        raise ValueError(f"multiples must be at least 1, not {list(multiples)}")
    return sorted({k * period + o for k in multiples for o in offsets})


def boundary_offset(tokens: int, period: int) -> tuple[int, int]:
    """The nearest shard boundary ``k*period`` (k >= 1) to ``tokens`` and the signed offset."""
    k = max(1, round(tokens / period))
    return k * period, tokens - k * period


def _haystack(rng: random.Random, words: int) -> list[str]:
    out: list[str] = []
    while len(out) < words:
        out.extend(rng.choice(_HAYSTACK).split())
    return out[:words]


def fit_to_length(
    target: int, build: Callable[[int, str], str], count_tokens: CountTokens, max_words: int
) -> str:
    """``build(m, pad)`` with exactly ``target`` tokens: the largest filler word count m
    that does not overshoot, then single-token pad units until the count is exact."""
    if count_tokens(build(0, "")) > target:
        raise ValueError(
            f"a target length of {target} tokens is shorter than the prompt without filler "
            f"({count_tokens(build(0, ''))} tokens)"
        )
    lo, hi = 0, max_words  # invariant: count(build(lo)) <= target
    if count_tokens(build(hi, "")) <= target:
        raise ValueError(f"{max_words} filler words do not reach {target} tokens")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_tokens(build(mid, "")) <= target:
            lo = mid
        else:
            hi = mid
    for unit in _PAD_UNITS:
        pad = ""
        for _ in range(16):
            n = count_tokens(build(lo, pad))
            if n == target:
                return build(lo, pad)
            if n > target:
                break
            pad += unit
    raise ValueError(f"could not pad the prompt to exactly {target} tokens")


def _common(
    n: int,
    period: Any,
    shard_period: int | None,
    lengths: Sequence[int] | None,
    multiples: Sequence[int],
    offsets: Sequence[int],
) -> tuple[list[int], int, str]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (items per grid cell) must be a positive integer, not {n!r}")
    grid_period, source = resolve_period(period, shard_period)
    if lengths is None:
        grid = length_grid(grid_period, multiples, offsets)
    else:
        if not lengths or any(isinstance(x, bool) or not isinstance(x, int) for x in lengths):
            raise ValueError(f"lengths must be a non-empty list of integers, not {lengths!r}")
        grid = list(lengths)
    if any(x < 1 for x in grid):
        raise ValueError(f"lengths must be positive, not {grid}")
    return grid, grid_period, source


def _meta(target: int, period: int, source: str) -> dict[str, Any]:
    boundary, offset = boundary_offset(target, period)
    return {
        "target_tokens": target,
        "period": period,
        "period_source": source,
        "boundary": boundary,
        "offset": offset,
    }


PASSKEY_QUESTION = "\n\nWhat is the pass key? The pass key is"


def _passkey_prompt(words: list[str], needle: str, depth: float, m: int, pad: str) -> str:
    """The passkey prompt with ``m`` filler words, the needle at ``depth`` of them."""
    cut = round(depth * m)
    before, after = " ".join(words[:cut]), " ".join(words[cut:m])
    body = (before + needle + (" " + after if after else "")).strip()
    return PASSKEY_INTRO + body + pad + PASSKEY_QUESTION


def _needles_prompt(words: list[str], sentences: list[str], question: str, m: int, pad: str) -> str:
    """``m`` filler words with the needle sentences spread evenly through them."""
    cuts = [round(m * (i + 1) / (len(sentences) + 1)) for i in range(len(sentences))]
    parts: list[str] = []
    start = 0
    for cut, sentence in zip(cuts, sentences, strict=True):
        parts += [*words[start:cut], sentence]
        start = cut
    parts += words[start:m]
    return PASSKEY_INTRO + " ".join(parts) + pad + question


@register("passkey", "1", requires=("count_tokens", "shard_period"))
def passkey(
    n: int,
    seed: int,
    count_tokens: CountTokens,
    shard_period: int | None,
    period: Any = "auto",
    lengths: Sequence[int] | None = None,
    multiples: Sequence[int] = DEFAULT_MULTIPLES,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    depths: Sequence[float] = DEFAULT_DEPTHS,
    key_digits: int = 5,
) -> Rows:
    """Pass-key retrieval prompts: ``n`` per (length, depth), a random ``key_digits``-digit
    key placed at ``depth`` (0..1) of the haystack; the answer is the key.

    Items are ordered repeat, then length, then depth, so ``--limit`` keeps whole grids.
    Rows hold ``prompt``, ``answer``, ``depth`` and the length bookkeeping of :func:`_meta`.
    """
    grid, grid_period, source = _common(n, period, shard_period, lengths, multiples, offsets)
    if not depths or any(not isinstance(d, int | float) or not 0 <= d <= 1 for d in depths):
        raise ValueError(f"depths must be a non-empty list of numbers in [0, 1], not {depths!r}")
    if isinstance(key_digits, bool) or not isinstance(key_digits, int):
        raise ValueError(f"key_digits must be an integer, not {key_digits!r}")
    if not 3 <= key_digits <= 12:
        raise ValueError("key_digits must be between 3 and 12")
    rng = random.Random(seed)
    rows: Rows = []
    for _ in range(n):
        for target in grid:
            for depth in depths:
                key = str(rng.randint(10 ** (key_digits - 1), 10**key_digits - 1))
                words = _haystack(rng, 2 * target + 64)
                needle = f" The pass key is {key}. Remember it. {key} is the pass key."
                build = functools.partial(_passkey_prompt, words, needle, depth)
                prompt = fit_to_length(target, build, count_tokens, len(words))
                rows.append(
                    {"prompt": prompt, "answer": key, "depth": depth}
                    | _meta(target, grid_period, source)
                )
    return rows


@register("needle-multi", "1", requires=("count_tokens", "shard_period"))
def needle_multi(
    n: int,
    seed: int,
    count_tokens: CountTokens,
    shard_period: int | None,
    period: Any = "auto",
    lengths: Sequence[int] | None = None,
    multiples: Sequence[int] = DEFAULT_MULTIPLES,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    needles: int = 3,
) -> Rows:
    """Several needles ("The special magic number for NAME is N.") spread evenly through
    the haystack; the question asks for all of them. ``answer`` lists the numbers in
    needle order, space-separated, for the ``all_of`` metric (scored per needle)."""
    grid, grid_period, source = _common(n, period, shard_period, lengths, multiples, offsets)
    if isinstance(needles, bool) or not isinstance(needles, int) or not 2 <= needles <= 8:
        raise ValueError(f"needles must be an integer from 2 to 8, not {needles!r}")
    rng = random.Random(seed)
    rows: Rows = []
    for _ in range(n):
        for target in grid:
            names = rng.sample(_NAMES, needles)
            numbers = [str(rng.randint(1000, 9999)) for _ in names]
            words = _haystack(rng, 2 * target + 64)
            sentences = [
                f"The special magic number for {a} is {b}."
                for a, b in zip(names, numbers, strict=True)
            ]
            listed = ", ".join(names[:-1]) + f" and {names[-1]}"
            question = (
                f"\n\nWhat are the special magic numbers for {listed}? "
                f"The special magic numbers for {listed} are"
            )

            build = functools.partial(_needles_prompt, words, sentences, question)
            prompt = fit_to_length(target, build, count_tokens, len(words))
            rows.append(
                {"prompt": prompt, "answer": " ".join(numbers), "names": names}
                | _meta(target, grid_period, source)
            )
    return rows
