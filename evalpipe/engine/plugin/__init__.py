"""evalpipe's vLLM plugin: loaded by vLLM in every engine process (API server, engine core,
each worker) through the ``vllm.general_plugins`` entry point ``evalpipe``.

Inert unless one of two environment variables is set:

- ``EVALPIPE_CPU_DCP=1`` installs evalpipe's CPU DCP backend (:mod:`.cpu_dcp`), which lets
  vLLM's CPU platform run decode context parallelism; evalpipe sets it only for DCP layouts
  on CPU (``all``: its torch attention without DCP too, to check it against vLLM's own);
- ``EVALPIPE_FAULT`` injects that canary fault (:mod:`evalpipe.faults`): into every attention
  layer (:mod:`.hooks`), or for a dcp-merge fault into the CPU DCP backend's merge.

Unset, :func:`register` reads the two variables and returns; nothing is imported or patched,
so an engine with the plugin installed computes exactly what one without it does.
``VLLM_PLUGINS`` (a comma-separated list of plugin names) keeps it from loading at all.

Engine-side code: it imports nothing of evalpipe above the ground floor (:mod:`evalpipe.faults`,
:mod:`evalpipe.backends`).
"""

from __future__ import annotations

import os
import sys

from evalpipe.backends import CPU_DCP_ALL, CPU_DCP_ENV
from evalpipe.faults import ENV_VAR, MERGE_KIND


def register() -> None:
    """The entry point vLLM calls (possibly more than once per process)."""
    text = os.environ.get(ENV_VAR)
    backend = os.environ.get(CPU_DCP_ENV, "")
    if backend not in ("", "1", CPU_DCP_ALL):
        raise RuntimeError(
            f"{CPU_DCP_ENV}={backend!r}: expected 1 (the CPU DCP backend for DCP engines), "
            f"{CPU_DCP_ALL!r} (its torch attention in every engine) or nothing"
        )
    cpu_dcp = backend != ""
    if not text and not cpu_dcp:
        return
    from evalpipe.faults import parse_fault

    spec = parse_fault(text) if text else None  # a bad spec stops the engine, with the kinds
    merge_fault = spec if spec is not None and spec.kind == MERGE_KIND else None
    if merge_fault is not None and not cpu_dcp:
        raise RuntimeError(
            f"{ENV_VAR}={text}: a {MERGE_KIND} fault acts in evalpipe's CPU DCP backend, which "
            f"this engine does not run ({CPU_DCP_ENV} is not set); run it on a DCP layout on CPU"
        )
    if cpu_dcp:
        from evalpipe.engine.plugin.cpu_dcp import install as install_cpu_dcp

        install_cpu_dcp(merge_fault)
    if spec is None:
        return
    if merge_fault is None:
        from evalpipe.engine.plugin.hooks import install

        install(spec)
    print(f"evalpipe-fault: installed {spec.canonical} in process {os.getpid()}", file=sys.stderr)
