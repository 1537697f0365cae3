"""A :class:`~evalpipe.compare.core.Comparison` as JSON: the one place it becomes a dict.

The shape is what ``evalpipe compare --json`` prints (and what scripts downstream read), so
keys only ever get added. The token-level comparison (``tokens``, null without one) is
:mod:`evalpipe.compare.tokens.json`.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from evalpipe.compare.core import Comparison, Flip
from evalpipe.compare.tokens.json import tokens_to_json


def flip_to_json(f: Flip) -> dict[str, Any]:
    return {
        "item_id": f.item_id,
        "direction": f.direction,
        "target": f.target,
        "run_output": f.run_output,
        "baseline_output": f.baseline_output,
        "run_extracted": dict(f.run_extracted),
        "baseline_extracted": dict(f.baseline_extracted),
        "first_difference": f.first_difference,
    }


def to_json(c: Comparison) -> dict[str, Any]:
    """Plain JSON-able dict of ``c`` (an infinite MDE becomes None; ``tokens`` is None when
    the comparison had no token traces)."""
    r, b = c.run, c.baseline
    fd = c.first_difference_chars
    return {
        "run_id": r.run_id,
        "baseline_run_id": b.run_id,
        "model": r.config.model,
        "task": r.config.task,
        "task_version": r.config.task_version,
        "layout": r.config.layout,
        "baseline_layout": b.config.layout,
        # A canary run names its fault wherever it is named (None: a clean run).
        "fault": r.config.fault,
        "baseline_fault": b.config.fault,
        "request_order": r.config.request_order,
        "baseline_request_order": b.config.request_order,
        "platform": r.config.platform,
        "engine_versions": dict(r.config.engine_versions),
        **c.result.to_dict(),
        "excluded": c.n_excluded,
        "excluded_by_reason": dict(c.excluded),
        "agreement": c.agreement,
        "first_difference_chars": {
            "n": len(fd),
            "min": min(fd) if fd else None,
            "median": statistics.median(fd) if fd else None,
        },
        "flips": {k: list(v) for k, v in c.flips.items()},
        "flip_examples": [flip_to_json(f) for f in c.flip_examples],
        "length_buckets": [
            {
                "low": x.low,
                "high": x.high,
                "n": x.n,
                "only_run": x.only_run,
                "only_baseline": x.only_baseline,
                "delta": x.delta,
            }
            for x in c.buckets
        ],
        "noise_floor": c.noise.floor,
        "noise_repeats": c.noise.repeats,
        "shard_period": c.shard.period,
        "shard_period_source": c.shard.source,
        "shard_boundaries": [{**dataclasses.asdict(g), "delta": g.delta} for g in c.boundaries],
        "accuracy_by_verdict": {
            k: {"run": a, "baseline": b} for k, (a, b) in c.per_verdict.items()
        },
        "warnings": list(c.warnings),
        "tokens": tokens_to_json(c.tokens),
    }
