"""The Ray executor: a sweep's groups as Ray tasks, each on the devices its layout needs.

The only module that imports Ray, and only inside functions: Ray is the optional extra
``evalpipe[ray]``, and importing this module must work without it. Each group becomes one task
that calls :func:`evalpipe.sweep.group.run_group` on a worker, inside a placement group that
reserves the layout's devices on one node (STRICT_PACK): the engine's ranks talk over shared
memory, and ``vllm serve`` with the mp backend cannot span nodes. Groups run concurrently as
the devices allow; the cluster's offer is checked before anything is scheduled.

A group whose worker or node dies, or whose engine is lost, is retried as a fresh task, at
most ``max_retries`` times. Nothing else is needed to resume: ``run_group`` reuses the cells
already finished and the store resumes the interrupted one from its stored samples. Every
path a worker is given must be absolute (the caller resolves them; checked before anything
is scheduled).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.sweep.cells import CellResult, Group, GroupResult
from evalpipe.sweep.devices import (
    Node,
    cluster_refusals,
    needs_devices,
    raise_refusals,
    relative_paths,
    store_refusal,
)
from evalpipe.sweep.group import run_group
from evalpipe.sweep.local import settled

Say = Callable[[str], None]
INSTALL_HINT = "pip install 'evalpipe[ray]'"
CLIENT_PORT = 10001  # Ray's default Ray Client port on the head node


@dataclass(frozen=True)
class RaySettings:
    """Where the cluster is and what a layout's devices are called on it.

    ``address``: ``auto`` (the cluster this machine belongs to), ``HOST:PORT`` (the head's GCS
    port, from a node of the cluster) or ``ray://HOST:10001`` (Ray Client, from outside it).
    ``resource``: ``GPU``, ``NPU`` on Ascend, ``CPU`` on a CPU-only cluster. ``max_retries``:
    fresh attempts of a group after its first one is lost. ``wait_timeout_s``: how long a group
    may wait for its devices while none of the sweep's groups holds any (so none will free
    them: other work has them, or a node left) before its cells are given up.
    """

    address: str = "auto"
    resource: str = "GPU"
    max_retries: int = 2
    wait_timeout_s: float = 900.0


def import_ray() -> ModuleType:
    """Ray, or an :class:`EvalpipeError` that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise EvalpipeError(
            f"the Ray executor needs Ray, which is not installed here: {INSTALL_HINT} "
            "(the same Ray version as the cluster's)"
        ) from exc
    module: ModuleType = ray
    return module


def connect(settings: RaySettings) -> list[Node]:
    """Join the cluster at ``settings.address`` (unless this process already has) and return
    its alive nodes; an unreachable address is an :class:`EvalpipeError` saying how to fix it.
    """
    ray = import_ray()
    if not ray.is_initialized():
        _probe(settings.address)
        try:
            ray.init(address=settings.address, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise EvalpipeError(_unreachable(settings.address, str(exc))) from exc
    return cluster_nodes(settings.resource)


def cluster_nodes(resource: str) -> list[Node]:
    """The connected cluster's alive nodes, with how many ``resource`` each offers."""
    ray = import_ray()
    return [
        Node(str(n["NodeManagerAddress"]), int(n["Resources"].get(resource, 0)), str(n["NodeID"]))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def check(groups: Sequence[Group], nodes: Sequence[Node], resource: str) -> None:
    """Everything that would stop the sweep on this cluster, as one :class:`EvalpipeError`:
    layouts that do not fit, a SQLite store the groups' hosts cannot share, relative paths."""
    problems = cluster_refusals(groups, nodes, resource)
    for store in sorted({c.options.store or "" for g in groups for c in g.cells}):
        refusal = store_refusal(store or None, groups, nodes)
        if refusal is not None:
            problems.append(refusal)
    problems.extend(relative_paths(groups))
    raise_refusals(problems)


def _probe(address: str) -> None:
    """Fail fast on an address nothing listens at: Ray itself retries for minutes."""
    target = address.removeprefix("ray://")
    if target == "auto":
        return  # Ray finds it (RAY_ADDRESS, or the cluster started here) and fails at once
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except ValueError as exc:
        raise EvalpipeError(
            f"Ray address {address!r} is not auto, HOST:PORT or ray://HOST:PORT"
        ) from exc
    except OSError as exc:
        raise EvalpipeError(_unreachable(address, str(exc))) from exc


def _unreachable(address: str, why: str) -> str:
    return (
        f"cannot reach the Ray cluster at {address} ({why}). Start one with "
        "`ray start --head` on its head node and check it with `ray status`; from a node of "
        "the cluster use --ray-address auto or HEAD:6379 (the head's GCS port), from outside "
        f"it ray://HEAD:{CLIENT_PORT} (the Ray Client port, which must be reachable)"
    )


def sweep_group(group: Group) -> GroupResult:
    """The task a worker runs: the group, its messages on the worker's stderr (Ray forwards
    them to the driver's terminal, prefixed with the worker's pid and node)."""
    return run_group(group)


@dataclass
class _Attempt:
    """One try of one group: placing (``ref`` is the placement group's readiness) or running
    (``ref`` is the task's result)."""

    index: int
    number: int
    pg: Any
    ref: Any
    running: bool = False
    since: float = field(default_factory=time.monotonic)
    host: str = ""


@dataclass
class _Sweep:
    """What the driver knows while the groups run."""

    ray: ModuleType
    groups: Sequence[Group]
    settings: RaySettings
    say: Say
    hosts: dict[str, str]  # node id → address
    active: dict[Any, _Attempt] = field(default_factory=dict)  # by ref
    done: dict[int, GroupResult] = field(default_factory=dict)
    cells: dict[int, dict[str, CellResult]] = field(default_factory=dict)
    last_release: float = field(default_factory=time.monotonic)


def run_groups(groups: Sequence[Group], settings: RaySettings, say: Say) -> list[GroupResult]:
    """Run ``groups`` on the cluster; their results in the groups' order.

    Connects (unless already connected; then the connection is left open), refuses before
    scheduling anything what cannot run (:func:`check`), then runs every group as a task in
    its own placement group, retrying lost ones. Ctrl-C cancels the tasks and removes the
    placement groups, then raises :class:`KeyboardInterrupt`.
    """
    ray = import_ray()
    owned = not ray.is_initialized()
    nodes = connect(settings)
    try:
        check(groups, nodes, settings.resource)
        sweep = _Sweep(ray, groups, settings, say, {n.node_id: n.host for n in nodes})
        for i in range(len(groups)):
            _start(sweep, i, 1)
        try:
            while sweep.active:
                _step(sweep)
        except BaseException:
            _cancel(sweep)
            raise
        return [sweep.done[i] for i in range(len(groups))]
    finally:
        if owned:
            ray.shutdown()


def _start(sweep: _Sweep, index: int, number: int) -> None:
    """A fresh attempt: reserve the group's devices (one bundle on one node) and launch its
    task once they are placed; a group that needs none is launched at once."""
    group = sweep.groups[index]
    if not needs_devices(group):
        attempt = _Attempt(index, number, None, None)
        _launch(sweep, attempt)
        return
    # One bundle of all the devices, so that the task holds every one of them and Ray makes
    # exactly those visible to it (CUDA_VISIBLE_DEVICES, ASCEND_RT_VISIBLE_DEVICES): the
    # engine's ranks all start from this task. A bundle never spans nodes; STRICT_PACK says so.
    # Unnamed: a name must be unique in the namespace, and two groups may share a key.
    pg = sweep.ray.util.placement_group(
        [{sweep.settings.resource: group.devices}], strategy="STRICT_PACK"
    )
    attempt = _Attempt(index, number, pg, pg.ready())
    sweep.active[attempt.ref] = attempt


def task_resources(resource: str, devices: int) -> dict[str, Any]:
    """The task's ``.options()`` asking for ``devices`` of ``resource``: CPU and GPU are
    Ray's own keywords (it refuses them inside ``resources``); a task asks for no CPU beside
    an accelerator, so that it fits its bundle of accelerators alone."""
    if resource == "CPU":
        return {"num_cpus": devices}
    if resource == "GPU":
        return {"num_gpus": devices, "num_cpus": 0}
    return {"resources": {resource: devices} if devices else {}, "num_cpus": 0}


def _launch(sweep: _Sweep, attempt: _Attempt) -> None:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = sweep.groups[attempt.index]
    devices = group.devices if needs_devices(group) else 0
    # Ray's own task retries are off: a retry here is a fresh attempt, counted and reported.
    options: dict[str, Any] = {"max_retries": 0, **task_resources(sweep.settings.resource, devices)}
    where = "no devices (its endpoint serves it)"
    if attempt.pg is not None:
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            attempt.pg, placement_group_bundle_index=0
        )
        attempt.host = _pg_host(sweep, attempt.pg)
        where = f"{devices} {sweep.settings.resource} on {attempt.host}"
    attempt.ref = sweep.ray.remote(sweep_group).options(**options).remote(group)
    attempt.running, attempt.since = True, time.monotonic()
    sweep.active[attempt.ref] = attempt
    tries = 1 + sweep.settings.max_retries
    sweep.say(f"sweep: {group.key} starts: {where} (attempt {attempt.number} of {tries})")


def _pg_host(sweep: _Sweep, pg: Any) -> str:
    node_id = sweep.ray.util.placement_group_table(pg).get("bundles_to_node_id", {}).get(0, "")
    if node_id not in sweep.hosts:  # a node that joined after the sweep started
        sweep.hosts.update({n.node_id: n.host for n in cluster_nodes(sweep.settings.resource)})
    return sweep.hosts.get(node_id, f"node {node_id[:12]}")


def _step(sweep: _Sweep) -> None:
    """Wait up to a second for a placement or a task to end, and act on it."""
    ready, _ = sweep.ray.wait(list(sweep.active), num_returns=1, timeout=1.0)
    for ref in ready:
        attempt = sweep.active.pop(ref)
        if attempt.running:
            _finish(sweep, attempt)
        else:
            _launch(sweep, attempt)
    _expire(sweep)


def _finish(sweep: _Sweep, attempt: _Attempt) -> None:
    """A task ended: keep its result, or retry the group if it was lost."""
    result, reason = _outcome(sweep, attempt)
    _release(sweep, attempt)
    group = sweep.groups[attempt.index]
    merged = _merge(sweep.cells.setdefault(attempt.index, {}), result)
    if result is not None and result.engine_lost is None:
        final = replace(result, cells=_ordered(group, merged, ""), attempts=attempt.number)
        sweep.done[attempt.index] = final
        sweep.say(f"sweep: {group.key} ended on {final.host or attempt.host}: {_counts(final)}")
        return
    host = result.host if result is not None else attempt.host
    if attempt.number <= sweep.settings.max_retries:
        sweep.say(
            f"sweep: {group.key} attempt {attempt.number} lost on {host}: {reason}; "
            f"retrying (attempt {attempt.number + 1} of {1 + sweep.settings.max_retries})"
        )
        _start(sweep, attempt.index, attempt.number + 1)
        return
    lost = GroupResult(
        group.key,
        _ordered(group, merged, reason),
        result.server_start_s if result is not None else None,
        reason,
        host,
    )
    sweep.done[attempt.index] = settled(lost, attempt.number, sweep.settings.max_retries)
    sweep.say(f"sweep: {group.key}: retries exhausted after {attempt.number} attempts: {reason}")


def _outcome(sweep: _Sweep, attempt: _Attempt) -> tuple[GroupResult | None, str]:
    """The attempt's result, and why it was lost (the engine, the worker or the node)."""
    exceptions = sweep.ray.exceptions
    try:
        result: GroupResult = sweep.ray.get(attempt.ref)
    except exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, EvalpipeError):
            return None, str(cause)
        sweep.say(f"sweep: {sweep.groups[attempt.index].key} failed on its worker:\n{exc}")
        return None, f"{type(cause or exc).__name__}: {_first_line(str(cause or exc))}"
    except exceptions.RayError as exc:
        return None, f"its Ray worker or node died ({type(exc).__name__}: {_first_line(str(exc))})"
    return result, result.engine_lost or ""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no message"


def _merge(best: dict[str, CellResult], result: GroupResult | None) -> dict[str, CellResult]:
    """Cells' outcomes over the attempts: a cell one attempt finished is ``reused`` by the
    next, and is reported as finished (this sweep generated it); ``not run`` never hides an
    earlier outcome."""
    for cell in result.cells if result is not None else ():
        before = best.get(cell.key)
        if cell.state == "not run":
            continue
        if cell.state == "reused" and before is not None and before.state == "finished":
            continue
        best[cell.key] = cell
    return best


def _ordered(group: Group, best: dict[str, CellResult], why: str) -> tuple[CellResult, ...]:
    return tuple(best.get(c.key) or CellResult(c.key, "not run", message=why) for c in group.cells)


def _counts(result: GroupResult) -> str:
    states = [c.state for c in result.cells]
    return ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))


def _release(sweep: _Sweep, attempt: _Attempt) -> None:
    if attempt.pg is not None:
        sweep.ray.util.remove_placement_group(attempt.pg)
        sweep.last_release = time.monotonic()


def _expire(sweep: _Sweep) -> None:
    """Give up groups that waited ``wait_timeout_s`` for devices while none of the sweep's
    groups held any: nothing of the sweep's will free them."""
    if any(a.running and a.pg is not None for a in sweep.active.values()):
        return
    now, timeout = time.monotonic(), sweep.settings.wait_timeout_s
    for ref, attempt in list(sweep.active.items()):
        if attempt.running or now - max(attempt.since, sweep.last_release) < timeout:
            continue
        del sweep.active[ref]
        _release(sweep, attempt)
        group = sweep.groups[attempt.index]
        why = (
            f"waited {timeout:.0f} s for {group.devices} {sweep.settings.resource} on one node "
            "while the sweep held none: other work holds them (see `ray status`)"
        )
        best = sweep.cells.get(attempt.index, {})
        sweep.done[attempt.index] = GroupResult(
            group.key, _ordered(group, best, why), attempts=attempt.number
        )
        sweep.say(f"sweep: {group.key} not run: {why}")


def _cancel(sweep: _Sweep, grace_s: float = 30.0) -> None:
    """Stop every attempt (Ctrl-C on the driver): running tasks get a KeyboardInterrupt, so
    their runs are stored as interrupted and their engines stopped; those still running after
    ``grace_s`` are killed; every placement group is removed."""
    running = [a.ref for a in sweep.active.values() if a.running]
    for ref in running:
        sweep.ray.cancel(ref, force=False)
    if running:
        _, left = sweep.ray.wait(running, num_returns=len(running), timeout=grace_s)
        for ref in left:
            sweep.ray.cancel(ref, force=True)
    for attempt in sweep.active.values():
        _release(sweep, attempt)
    sweep.active.clear()
