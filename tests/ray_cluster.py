"""A real local Ray cluster for the tests: a head and one worker node on loopback, each with
fake accelerators (a custom resource such as ``{"NPU": 4}``), and the sweep builders the Ray
and device tests share.

``with ray_cluster() as cluster: …`` starts both nodes (about 7 s here), yields their address
and always stops them. Each node runs as ``ray start --block`` in a session of its own, so the
cluster is stopped, and a worker process found, by the ids of processes this helper started,
never by name: other Ray clusters on the machine (another test run) are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from evalpipe.options import RunOptions
from evalpipe.sweep.cells import Cell, Group

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Cluster:
    """A running test cluster. ``address`` is the head's ``HOST:PORT``; ``client_address``
    the Ray Client's ``ray://HOST:PORT``; ``started_s`` how long both nodes took to be up."""

    address: str
    client_address: str
    nodes: list[subprocess.Popen[bytes]]
    temp_dir: Path
    started_s: float = 0.0

    def processes(self, title_prefix: str) -> list[int]:
        """Pids of this cluster's processes whose title starts with ``title_prefix`` (a task
        runs as ``ray::FUNCTION_NAME``)."""
        return [
            pid
            for pid in _session_pids({p.pid for p in self.nodes})
            if _cmdline(pid).startswith(title_prefix)
        ]

    def stop(self) -> None:
        """SIGTERM each node's ``ray start --block`` (it stops its own processes), then
        SIGKILL whatever of their sessions is left."""
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.nodes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in _session_pids({p.pid for p in self.nodes}):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _session_pids(sessions: set[int]) -> list[int]:
    """Live processes whose session id is one of ``sessions`` (the nodes' own)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        if int(fields[3]) in sessions and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _wait_for(cluster: Cluster, n_nodes: int) -> None:
    """Until ``n_nodes`` are alive (joining and leaving the cluster from this process)."""
    import ray

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", int(cluster.address.split(":")[1])), 1):
                break
        except OSError:
            time.sleep(0.2)
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        while sum(1 for n in ray.nodes() if n["Alive"]) < n_nodes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in cluster.nodes):
                logs = "\n".join(p.read_text()[-2000:] for p in cluster.temp_dir.glob("*.log"))
                raise RuntimeError(f"the test Ray cluster did not come up:\n{logs}")
            time.sleep(0.2)
    finally:
        ray.shutdown()


@contextmanager
def ray_cluster(
    head: dict[str, float] | None = None,
    worker: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """A head (default ``{"NPU": 2}``) and a worker node (default ``{"NPU": 4}``), one CPU
    each, on 127.0.0.1, on free ports; ``env`` is added to the nodes' environment (their
    workers see it, not the test's)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # socket paths stay short
    port, client_port = free_port(), free_port()
    node_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    cluster = Cluster(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", [], temp_dir)
    began = time.monotonic()
    try:
        head_args = ["--head", "--port", str(port), "--ray-client-server-port", str(client_port)]
        head_args += ["--include-dashboard", "false", "--temp-dir", str(temp_dir)]
        head_args += ["--resources", json.dumps(head or {"NPU": 2})]
        cluster.nodes.append(_start_node([*head_args, *common], temp_dir / "head.log", node_env))
        worker_args = [
            "--address",
            cluster.address,
            "--resources",
            json.dumps(worker or {"NPU": 4}),
        ]
        cluster.nodes.append(
            _start_node([*worker_args, *common], temp_dir / "worker.log", node_env)
        )
        _wait_for(cluster, 2)
        cluster.started_s = time.monotonic() - began
        yield cluster
    finally:
        cluster.stop()


def cell(
    url: str,
    store: str,
    runs_dir: Path,
    *,
    task: str = "arith",
    model: str = "m",
    layout: str = "tp1",
    limit: int = 4,
    repeat: int = 0,
    concurrency: int = 4,
) -> Cell:
    """A cell whose runs go to the OpenAI-compatible server at ``url``."""
    options = RunOptions(
        task=task,
        model=model,
        layout=layout,
        engine="endpoint",
        endpoint=url,
        limit=limit,
        concurrency=concurrency,
        store=store,
        runs_dir=runs_dir,
        progress=False,
        repeat_index=repeat,
        reuse_finished=True,
    )
    return Cell(model, task, layout, repeat, options)


def group(devices: int, *cells: Cell, endpoint: str | None = None) -> Group:
    """The group of ``cells`` (one model and layout). Without ``endpoint`` it asks for
    ``devices`` (a placement group) although its cells reach a server by URL: the scheduling
    of a launched engine, with a fake answering in its place."""
    return Group(cells[0].model, cells[0].layout, devices, cells, endpoint)
