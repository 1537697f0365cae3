"""Every size evalpipe bounds, in one place, with the reason for each bound.

A value a user gives (a flag, a plan key) outside its bound is a usage error: exit 2, with
the bound named in the message (:func:`check_int`, :func:`check_seconds`). A bound on what a
file may hold (a token trace) is a bad input: exit 1, also with the bound named.
"""

from __future__ import annotations

import math

from evalpipe.errors import EvalpipeError

USAGE = 2
"""The exit code of a value out of range (README: usage error)."""

INT64_MAX = 2**63 - 1
"""The stores' integer columns are 64-bit: a count or seed above this could not be stored,
nor imported back from an export."""

MAX_CONCURRENCY = 1024
"""Requests in flight per run (``--concurrency``). A server batches at most ``max_num_seqs``
(vLLM's default 256; 1024 is the largest used in practice), so more only queue inside it, and
each request in flight holds a socket: 10^8 of them hung the client (a coroutine each) and
ran into the open-files limit (often 1024)."""

MAX_REPEAT = 100
"""Runs of one configuration (``--repeat``, a plan's ``repeat``). Repeats measure the
engine's own noise floor; 2 to 5 is what that needs, and the floor's estimate stops improving
long before 100. A plan with ``repeat: 1000000`` took 0.7 GB and 20 s to expand."""

MAX_SWEEP_CELLS = 10_000
"""Cells (runs) of one sweep plan: models x tasks x layouts (with baselines) x repeat. Ten
thousand runs is months of engine time on one machine; a larger plan is a mistake, and
expanding it costs memory and time before anything starts."""

MAX_SHARD_PERIOD = 1 << 30
"""The longest shard period (tokens) positions are located against (``--shard-period``, a
layout's dcp x interleave): a hundred times the longest context served today, and small
enough that a position times the breakdown's bins stays inside 64-bit arithmetic (a period
of 10^20 overflowed there)."""

MAX_SECONDS = 7 * 24 * 3600.0
"""The longest timeout or interval in seconds (``--request-timeout``, ``--health-timeout``,
``--progress-every``): a week. A request or an engine start that takes longer has failed; an
unbounded float (1e300) overflows the event loop's clock arithmetic."""

MAX_RETRIES = 100
"""Retries of a sweep group whose engine was lost (``--max-retries``): an engine that dies
a hundred times will not start on the next try."""

MAX_DEVICES = 1_000_000
"""Devices a machine offers (``--devices``): the largest layout size (``layout.MAX_SIZE``)."""

MAX_LOGPROBS = 64
"""Top-K logprobs per position (``--logprobs``; a stored trace's ``k``). vLLM's OpenAI server
caps a chat request at 20 and ``max_logprobs`` defaults to 20; 64 leaves room for a raised
cap while keeping a trace at most ``8 + 8 x 64`` bytes a position."""

MAX_TRACE_POSITIONS = 1 << 20
"""Positions of one stored token trace (generated or teacher-forced tokens of one item): a
million tokens, more than any engine generates for one answer. A trace claiming 25 million
took 3.5 GB to import, and as much again on every later read."""

MAX_TRACE_BYTES = 64 << 20
"""A trace's decompressed size: 64 MiB. At the default k = 5 that is a million positions
(48 bytes each); at k = 64 about 128 000. Decompression stops there, whatever the blob says."""


def check_int(flag: str, value: int | None, low: int, high: int) -> None:
    """Refuse ``value`` outside ``low`` … ``high`` (``None``: not given), naming both bounds."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EvalpipeError(
            f"{flag} must be a whole number from {low} to {high}, not {value!r}", USAGE
        )


def check_seconds(flag: str, value: float | None, high: float = MAX_SECONDS) -> None:
    """Refuse a duration that is not a number of seconds above 0 and at most ``high``."""
    if value is None:
        return
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= high):
        raise EvalpipeError(
            f"{flag} must be a number of seconds above 0 and at most {high:g}, not {value!r}",
            USAGE,
        )


def check_fraction(flag: str, value: float) -> None:
    """Refuse a rate outside 0 … 1 (``--max-error-rate``)."""
    if not (isinstance(value, (int, float)) and 0 <= value <= 1):
        raise EvalpipeError(f"{flag} is a fraction from 0 to 1 (e.g. 0.01), not {value!r}", USAGE)


def check_shard_period(period: int | None) -> None:
    """Refuse an explicit ``--shard-period`` outside 1 … :data:`MAX_SHARD_PERIOD`."""
    check_int("--shard-period", period, 1, MAX_SHARD_PERIOD)
