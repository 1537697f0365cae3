"""Synthetic run configurations for tests that need stored runs without an engine."""

from __future__ import annotations

import dataclasses
from typing import Any

from evalpipe.records import RunConfig

_BASE = RunConfig(
    model="/models/m",
    model_fingerprint="sha256:abc",
    task="gsm8k",
    task_version="1.0",
    prompt_hash="p1",
    data_source="file:/d/test.jsonl",
    data_sha256="d1",
    layout="tp1",
    platform="cuda",
    engine_kind="serve",
    engine_args={"tensor_parallel_size": 8},
    sampling={"temperature": 0.0, "max_tokens": 256, "seed": 0},
    seed=0,
    limit=None,
    concurrency=256,
    engine_versions={"vllm": "0.32.0"},
)


def run_config(layout: str, **changes: Any) -> RunConfig:
    """A GSM8K-on-CUDA config for ``layout``; ``changes`` override any field."""
    return dataclasses.replace(_BASE, layout=layout, **changes)
