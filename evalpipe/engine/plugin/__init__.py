"""evalpipe's vLLM plugin: loaded by vLLM in every engine process (API server, engine core,
each worker) through the ``vllm.general_plugins`` entry point ``evalpipe``.

Inert unless ``EVALPIPE_FAULT`` is set: then it injects that canary fault
(:mod:`evalpipe.faults`) into every attention layer (:mod:`.hooks`). Unset, :func:`register`
reads one environment variable and returns; nothing is imported or patched, so an engine
with the plugin installed computes exactly what one without it does. ``VLLM_PLUGINS`` (a
comma-separated list of plugin names) keeps it from loading at all.

Engine-side code: it imports nothing of evalpipe above the ground floor (:mod:`evalpipe.faults`).
"""

from __future__ import annotations

import os
import sys

from evalpipe.faults import ENV_VAR


def register() -> None:
    """The entry point vLLM calls (possibly more than once per process)."""
    text = os.environ.get(ENV_VAR)
    if not text:
        return
    from evalpipe.engine.plugin.hooks import install
    from evalpipe.faults import parse_fault

    spec = parse_fault(text)  # a bad spec stops the engine here, with the list of kinds
    install(spec)
    print(f"evalpipe-fault: installed {spec.canonical} in process {os.getpid()}", file=sys.stderr)
