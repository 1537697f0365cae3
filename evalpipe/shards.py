"""Where a layout's context-parallel shard boundaries fall, in prompt tokens; pure.

vLLM's DCP stores ``cp_kv_cache_interleave_size`` consecutive tokens of a sequence on one
rank, then the next chunk on the next rank (vllm/config/parallel.py), so the KV cache's
round-robin repeats every ``dcp x interleave`` tokens: the *shard period*. A sequence longer
than one period spans every rank; lengths near its multiples are where bookkeeping bugs
(an off-by-one chunk, a wrong local length) show first. ``evalpipe compare`` locates every
prompt relative to the nearest boundary, and the long-context generators build their
default length grid around them.
"""

from __future__ import annotations

from collections.abc import Sequence

from evalpipe.layout import Layout

INTERLEAVE_FLAGS = ("--cp-kv-cache-interleave-size", "--dcp-kv-cache-interleave-size")
"""vLLM 0.32's flag and its deprecated predecessor (vllm/engine/arg_utils.py)."""

MIN_PERIOD = 64
"""Below this a boundary falls every few tokens (dcp8 with interleave 1: every 8), so every
prompt is "near" one: no length grid is built around it and no breakdown is shown."""

DEFAULT_INTERLEAVE = {"ascend": 128}
"""Platform defaults when no flag is given: vLLM's own default is 1; vllm-ascend's SFA path
keeps the KV cache in 128-token blocks and interleaves by block."""


def interleave_size(engine_flags: Sequence[str], platform: str) -> int:
    """The interleave size an engine started with ``engine_flags`` on ``platform`` uses."""
    value: int | None = None
    for i, flag in enumerate(engine_flags):
        name, sep, inline = flag.partition("=")
        if name in INTERLEAVE_FLAGS:
            raw = inline if sep else (engine_flags[i + 1] if i + 1 < len(engine_flags) else "")
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name} needs an integer, not {raw!r}") from None
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
    return value if value is not None else DEFAULT_INTERLEAVE.get(platform, 1)


def shard_period(layout: Layout, engine_flags: Sequence[str], platform: str) -> int | None:
    """``dcp x interleave`` tokens, or None when the layout does not split the KV cache."""
    if layout.dcp == 1:
        return None
    return layout.dcp * interleave_size(engine_flags, platform)
