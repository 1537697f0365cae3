"""The dashboard's cache of comparison results, kept in the output folder between renders.

Each entry is keyed by a digest of everything that can change a comparison (see
:func:`comparison_key`) and holds its figures: the paired result, exclusions, agreement, flip
ids, length buckets, shard panel, noise floor and the token-level comparison (exactly, by
:mod:`evalpipe.report.tokens.cache`). Flip examples (both outputs, up to 200 per
comparison) are left out, which keeps the file small: a comparison page is rendered again
only when its inputs changed, and then its comparison is computed again anyway, with them.

The file is JSON, not pickle: a dashboard folder may come from elsewhere (a CI artifact), and
reading it must never run code. Anything unreadable, of another format or another evalpipe
version, is an empty cache: a cold render, never an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evalpipe import __version__
from evalpipe.compare.breakdown import BoundaryGroup, BucketResult
from evalpipe.compare.core import DIRECTIONS, Comparison, Noise, Settings, ShardPeriod
from evalpipe.compare.stats import PairedResult
from evalpipe.paths import write_atomic
from evalpipe.records import Run, canonical_json, sha256_text
from evalpipe.report.tokens.cache import from_dict, to_dict

FORMAT = 3
CACHE_NAME = "comparisons.json"


def run_stamp(run: Run) -> list[Any]:
    """What identifies a run's stored answers: they change only with these."""
    return [run.run_id, run.status, run.finished_at, run.n_samples, run.n_correct, run.n_errors]


def comparison_key(
    run: Run,
    baseline: Run,
    repeats: Iterable[Run],
    shard: ShardPeriod,
    settings: Settings,
    traces: Mapping[str, Any] | None = None,
) -> str:
    """Digest of every input of a comparison: both runs' and the noise repeats' stamps, the
    shard period, the settings, the evalpipe version and this cache's format; ``traces``
    holds the trace stamps (:func:`evalpipe.store.traces.trace_stamp`) of those runs that
    have token traces, so traces added later (a teacher-forced score) count as a change."""
    return sha256_text(
        canonical_json(
            {
                "format": FORMAT,
                "evalpipe": __version__,
                "run": run_stamp(run),
                "baseline": run_stamp(baseline),
                "repeats": [run_stamp(r) for r in repeats],
                "shard": asdict(shard),
                "settings": asdict(settings),
                "traces": dict(sorted((traces or {}).items())),
            }
        )
    )


def to_entry(c: Comparison) -> dict[str, Any]:
    """The cached part of a comparison, as JSON values."""
    return {
        "result": asdict(c.result),
        "excluded": dict(c.excluded),
        "agreement": c.agreement,
        "flips": {d: list(c.flips.get(d, ())) for d in DIRECTIONS},
        "buckets": [asdict(b) for b in c.buckets],
        "noise": asdict(c.noise),
        "warnings": list(c.warnings),
        "shard": asdict(c.shard),
        "boundaries": [asdict(b) for b in c.boundaries],
        "per_verdict": {k: list(v) for k, v in c.per_verdict.items()},
        "tokens": None if c.tokens is None else to_dict(c.tokens),
    }


def from_entry(entry: Mapping[str, Any], run: Run, baseline: Run) -> Comparison:
    """A comparison from a cached entry, without flip examples or first-difference offsets.

    Raises ``KeyError``/``TypeError``/``ValueError`` on an entry of another shape."""
    return Comparison(
        run=run,
        baseline=baseline,
        result=PairedResult(**entry["result"]),
        excluded={str(k): int(v) for k, v in entry["excluded"].items()},
        agreement=entry["agreement"],
        first_difference_chars=(),
        flips={d: tuple(entry["flips"][d]) for d in DIRECTIONS},
        flip_examples=(),
        buckets=tuple(BucketResult(**b) for b in entry["buckets"]),
        noise=Noise(**entry["noise"]),
        warnings=tuple(entry["warnings"]),
        shard=ShardPeriod(**entry["shard"]),
        boundaries=tuple(BoundaryGroup(**b) for b in entry["boundaries"]),
        per_verdict={k: (float(a), float(b)) for k, (a, b) in entry["per_verdict"].items()},
        tokens=None if entry["tokens"] is None else from_dict(entry["tokens"]),
    )


def load(folder: Path) -> dict[str, dict[str, Any]]:
    """The cached entries by key; empty when the file is missing, unreadable or foreign."""
    try:
        data = json.loads((folder / CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or data.get("evalpipe") != __version__
        or not isinstance(data.get("entries"), dict)
    ):
        return {}
    return {k: v for k, v in data["entries"].items() if isinstance(v, dict)}


def save(folder: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the cache with ``entries`` (those of the render that just finished)."""
    data = {"format": FORMAT, "evalpipe": __version__, "entries": entries}
    write_atomic(folder / CACHE_NAME, json.dumps(data, separators=(",", ":")).encode())
