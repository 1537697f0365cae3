"""Whether a sweep's groups fit the devices on offer, said before anything is scheduled.

Pure: no Ray here. An executor describes what it can use as :class:`Node` s (a Ray cluster's
alive nodes, or this machine as one node) and gets back every refusal at once, each with the
numbers that decide it: a layout that needs more devices than there are in total, and one that
fits the total but no single node (evalpipe packs each engine on one node). The store rule
lives here too: one SQLite file cannot be shared by processes on different hosts.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from evalpipe.errors import EvalpipeError
from evalpipe.layout import current_platform
from evalpipe.store.connect import resolve
from evalpipe.sweep.cells import Group

DEVICE_NAMES = {"cpu": "CPU cores", "cuda": "GPU", "ascend": "NPU"}
"""What a platform's devices are called in messages (and Ray's resource names for them)."""


@dataclass(frozen=True)
class Node:
    """A place a group can run: ``host`` its address (two nodes with one address share a
    file system and a machine), ``devices`` how many of the accelerator resource it has."""

    host: str
    devices: int
    node_id: str = ""


def needs_devices(group: Group) -> bool:
    """A group with an endpoint runs on someone else's server: it holds no devices."""
    return group.endpoint is None and group.devices > 0


def _refusals(
    groups: Sequence[Group], nodes: Sequence[Node], resource: str, where: str
) -> list[str]:
    total = sum(n.devices for n in nodes)
    largest = max((n.devices for n in nodes), default=0)
    out = []
    for g in groups:
        if not needs_devices(g):
            continue
        name = f"{g.layout} (model {g.model})"
        if g.devices > total:
            out.append(f"{name} needs {g.devices} {resource}; {where} offers {total} in total")
        elif g.devices > largest:
            out.append(
                f"{name} needs {g.devices} {resource} on one node; {where} offers {total} in "
                f"total but its largest node has {largest}: evalpipe's Ray executor packs each "
                "engine on one node (placement group STRICT_PACK). Serve this pair yourself "
                f"across nodes and give its URL as the plan's endpoint for {g.model} {g.layout}"
            )
    return out


def cluster_refusals(groups: Sequence[Group], nodes: Sequence[Node], resource: str) -> list[str]:
    """Every group a cluster cannot place, one line each with both numbers (empty: all fit):
    more ``resource`` than all ``nodes`` have, or more than its largest node has."""
    return _refusals(groups, nodes, resource, "the cluster")


def local_refusals(
    groups: Sequence[Group], available: int, platform: str | None = None
) -> list[str]:
    """Every group that needs more devices than this machine's ``available`` (from
    :func:`local_devices`, or the CLI's ``--devices N``), one line each with both numbers."""
    resource = DEVICE_NAMES.get(platform or current_platform(), "devices")
    lines = _refusals(groups, [Node(socket.gethostname(), available)], resource, "this machine")
    return [f"{line} (--devices N overrides the count)" for line in lines]


def raise_refusals(refusals: Sequence[str]) -> None:
    """One :class:`EvalpipeError` listing every refusal, if there is any."""
    if refusals:
        raise EvalpipeError(
            "the sweep is refused before anything started:\n"
            + "\n".join(f"  - {line}" for line in refusals)
        )


def is_sqlite(store: str | None) -> bool:
    """Whether a ``--store`` value names an SQLite file (a path, ``sqlite://…``, or None:
    ``$EVALPIPE_STORE``, else ``./evalpipe.db``), as the store itself reads it."""
    return resolve(store).url.get_backend_name() == "sqlite"


def hosts_for(groups: Sequence[Group], nodes: Sequence[Node]) -> set[str]:
    """The hosts the groups may land on: for a group that needs devices, the nodes with enough
    of them; for one that needs none, any node."""
    out: set[str] = set()
    for g in groups:
        need = g.devices if needs_devices(g) else 0
        out.update(n.host for n in nodes if n.devices >= need)
    return out


def store_refusal(store: str | None, groups: Sequence[Group], nodes: Sequence[Node]) -> str | None:
    """Why ``store`` cannot serve these groups on these nodes, or None.

    SQLite locks through the file system of one machine: workers on several hosts would each
    write their own file (or corrupt one on a network mount), so it is refused as soon as the
    groups may land on more than one host.
    """
    if not is_sqlite(store):
        return None
    hosts = sorted(hosts_for(groups, nodes))
    if len(hosts) <= 1:
        return None
    shown = ", ".join(hosts[:5]) + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
    return (
        f"the store {store or './evalpipe.db'} is an SQLite file, but the sweep's groups may "
        f"run on {len(hosts)} hosts ({shown}) and each would write its own copy: use a store "
        "every node reaches, --store postgresql://USER@HOST/DB (move runs you already have "
        "with `evalpipe store copy FILE.db postgresql://USER@HOST/DB`)"
    )


def relative_paths(groups: Sequence[Group]) -> list[str]:
    """Cells whose SQLite store or runs folder is relative: a worker of a cluster starts in
    its own directory and would resolve it there, not where the sweep was started."""
    out = []
    for cell in (c for g in groups for c in g.cells):
        store, runs = cell.options.store, cell.options.runs_dir
        if is_sqlite(store) and store is not None and not _absolute_sqlite(store):
            out.append(f"{cell.key}: the store {store} must be an absolute path on a worker")
        if runs is not None and not Path(runs).is_absolute():
            out.append(f"{cell.key}: the runs folder {runs} must be an absolute path on a worker")
    return out


def _absolute_sqlite(store: str) -> bool:
    path = store.split("://", 1)[1][1:] if "://" in store else store
    return os.path.isabs(path)


def local_devices(
    platform: str | None = None, env: Mapping[str, str] | None = None, dev: Path = Path("/dev")
) -> int:
    """How many devices this machine offers on ``platform`` (cpu, cuda, ascend; None: the
    one this machine runs vLLM on).

    cpu: the cores this process may use; cuda: ``CUDA_VISIBLE_DEVICES`` when set, else the
    GPUs ``nvidia-smi -L`` lists; ascend: ``ASCEND_RT_VISIBLE_DEVICES`` when set, else the
    ``/dev/davinciN`` devices. A visible-devices variable wins because it is what vLLM will see.
    """
    env = os.environ if env is None else env
    platform = platform or current_platform()
    if platform == "cpu":
        return len(os.sched_getaffinity(0))
    if platform == "cuda":
        visible = env.get("CUDA_VISIBLE_DEVICES")
        return _count_list(visible) if visible is not None else _nvidia_smi_gpus()
    if platform == "ascend":
        visible = env.get("ASCEND_RT_VISIBLE_DEVICES")
        if visible is not None:
            return _count_list(visible)
        return sum(1 for p in dev.glob("davinci*") if re.fullmatch(r"davinci\d+", p.name))
    raise EvalpipeError(f"unknown platform {platform!r}: expected cpu, cuda or ascend")


def _count_list(visible: str) -> int:
    return sum(1 for part in visible.split(",") if part.strip())


def _nvidia_smi_gpus() -> int:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("GPU "))
