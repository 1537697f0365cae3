"""Sweeps: a plan of models × tasks × layouts (with baselines) × repeats as one job.

:func:`sweep` reads the plan (a YAML file, the flags, or both: flags win), refuses what it can
before anything starts (the plan's lines, devices, vLLM's own check), says where each cell
stands in the store, runs the groups on the chosen executor, then compares every pair, decides
the gate and renders the dashboard when asked. Running the same command again reuses the
finished cells and resumes the rest from their stored samples.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions

if TYPE_CHECKING:  # the sweep's modules load when a sweep runs, not with every command
    from evalpipe.gate.decide import GateDecision
    from evalpipe.sweep.cells import GroupResult, SweepPlan
    from evalpipe.sweep.outcome import PairOutcome, SweepOutcome
    from evalpipe.sweep.rayexec import RaySettings
    from evalpipe.sweep.state import CellState

Say = Callable[[str], None]
EXECUTORS = ("local", "ray")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SweepSettings:
    """How to run a sweep. ``plan`` is a YAML file; ``overrides`` are plan keys given as
    flags (``models``, ``tasks``, ``layouts``, ``repeat``, ``limit``, ``engine_args`` …),
    which win over the file's. ``template`` holds what every run shares (store, runs
    folder, progress); ``progress_every_s`` how often the Ray driver reads each cell's stored
    samples from the store to print them. ``devices`` overrides the local executor's device count;
    ``ray_address`` / ``ray_resource`` choose the Ray cluster and its accelerator name."""

    plan: str | None = None
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    template: RunOptions = dataclasses.field(default_factory=lambda: RunOptions(task="", model=""))
    executor: str = "local"
    devices: int | None = None
    ray_address: str = "auto"
    ray_resource: str = "GPU"
    max_retries: int = 2
    dry_run: bool = False
    margin: float = 0.01
    policy: str | None = None
    tag: str | None = None
    dashboard: str | None = None
    progress_every_s: float = 10.0


def plan_sweep(settings: SweepSettings) -> SweepPlan:
    """The expanded plan (:class:`~evalpipe.sweep.cells.SweepPlan`) of ``settings``: every
    problem of the plan refused at once with its line; built-in models built on first use."""
    from evalpipe.api.running import resolve_model
    from evalpipe.sweep.entries import read_plan_text
    from evalpipe.sweep.plan import expand

    data: dict[str, Any] = {}
    lines: dict[Any, int] = {}
    source = "<flags>"
    if settings.plan is not None:
        source = settings.plan
        try:
            text = Path(settings.plan).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalpipeError(f"cannot read the sweep plan {settings.plan}: {exc}") from exc
        data, lines = read_plan_text(text, source)
    _check_flags(settings)
    for key, value in settings.overrides.items():
        data[key] = value
        lines = {k: v for k, v in lines.items() if not k or k[0] != key}  # a flag has no line
    template = _absolute(settings.template)
    return expand(data, template, source, lines, resolve_model, tuple(settings.overrides))


def _check_flags(settings: SweepSettings) -> None:
    """The sweep's own numbers, and the plan keys given as flags, within their bounds (a
    usage error, exit 2, naming the bound; a plan file's values are refused with its line)."""
    from evalpipe import limits as lim

    if settings.executor not in EXECUTORS:
        raise EvalpipeError(f"--executor must be one of {', '.join(EXECUTORS)}", lim.USAGE)
    lim.check_int("--max-retries", settings.max_retries, 0, lim.MAX_RETRIES)
    lim.check_int("--devices", settings.devices, 1, lim.MAX_DEVICES)
    lim.check_seconds("--progress-every", settings.progress_every_s)
    flags = settings.overrides
    for key, low, high in (
        ("repeat", 1, lim.MAX_REPEAT),
        ("limit", 1, lim.INT64_MAX),
        ("concurrency", 1, lim.MAX_CONCURRENCY),
        ("logprobs", 0, lim.MAX_LOGPROBS),
    ):
        lim.check_int(f"--{key}", flags.get(key), low, high)


def _absolute(template: RunOptions) -> RunOptions:
    """Store and runs folder as absolute locations: the cells may run in another process
    (a Ray worker) whose working folder is not this one."""
    from evalpipe.run.plan import runs_dir
    from evalpipe.store.connect import resolve

    location = resolve(template.store)
    store = str(location.path) if location.path is not None else template.store
    if location.path is None and template.store is None:
        store = location.url.render_as_string(hide_password=False)
    return dataclasses.replace(template, store=store, runs_dir=runs_dir(template))


def sweep(settings: SweepSettings, say: Say = _stderr) -> SweepOutcome:
    """Run (or with ``dry_run`` only describe) the sweep; returns a
    :class:`~evalpipe.sweep.outcome.SweepOutcome` whose ``exit_code`` the CLI exits with."""
    from evalpipe.run.plan import precheck
    from evalpipe.sweep.outcome import SweepOutcome

    began = time.monotonic()
    plan = plan_sweep(settings)
    _check_outputs(plan, settings)
    ray_settings = _check_devices(plan, settings)
    precheck(*(c.options for c in plan.cells))
    states = tuple(plan_states(plan, settings.template.store))
    if settings.dry_run:
        return SweepOutcome(plan, settings.executor, states, dry_run=True)
    results = _execute(plan, settings, ray_settings, states, say)
    run_ids = {c.key: c.run_id for r in results for c in r.cells if c.run_id}
    outcome = SweepOutcome(
        plan, settings.executor, states, tuple(results), _pairs(plan, run_ids, settings)
    )
    gate = _gate(plan, settings) if settings.policy else None
    board = _dashboard(plan, settings) if settings.dashboard else None
    wall = time.monotonic() - began
    return dataclasses.replace(outcome, gate=gate, dashboard=board, wall_s=wall)


def _check_outputs(plan: SweepPlan, settings: SweepSettings) -> None:
    """A bad policy or dashboard folder is refused now, not after hours of engine time; so
    is a dashboard folder that would write over the sweep's inputs."""
    from evalpipe.api.stored import store_inputs
    from evalpipe.gate.policy import load_policy
    from evalpipe.paths import check_folder_output
    from evalpipe.report.site import check_out_dir, writes

    if settings.policy is not None:
        load_policy(settings.policy)
    if settings.dashboard is not None:
        inputs = [
            *store_inputs(_store(plan)),
            ("the plan", settings.plan),
            ("the policy", settings.policy),
            *(("a data file", c.options.data) for c in plan.cells),
        ]
        check_folder_output("--dashboard", settings.dashboard, inputs, writes)
        check_out_dir(Path(settings.dashboard))


def plan_states(plan: SweepPlan, store_url: str | None) -> list[CellState]:
    """Each cell as the store has it, with the configuration hash that finds its run. Nothing
    is written (but an older store's schema migration, as any command's): a SQLite store that
    does not exist yet is not created (every cell is new), and an unreachable store or a
    plan's endpoint is refused here, before anything starts."""
    from evalpipe.store import open_store
    from evalpipe.store.connect import check_sqlite_path, resolve
    from evalpipe.sweep.state import cell_states

    where = _store(plan) or store_url
    path = resolve(where).path
    if path is not None and not path.exists():
        check_sqlite_path(path, create=True)  # a missing folder now, not in every group
    store = open_store(":memory:" if path is not None and not path.exists() else where)
    with store:
        out: list[CellState] = []
        for group in plan.groups:
            try:
                out.extend(cell_states(store, group))
            except EvalpipeError as exc:
                raise EvalpipeError(f"{group.key}: {exc} (nothing was started)") from exc
        return out


def _check_devices(plan: SweepPlan, settings: SweepSettings) -> RaySettings | None:
    """Refuse, before anything starts, a layout that needs more devices than the executor
    offers (both numbers said), and a SQLite store for cells on several hosts. Returns the
    Ray settings for the Ray executor."""
    from evalpipe.sweep import devices

    if settings.executor == "local":
        available = settings.devices
        if available is None:
            available = devices.local_devices(settings.template.platform)
        refusals = devices.local_refusals(plan.groups, available, settings.template.platform)
        devices.raise_refusals(refusals)
        return None
    from evalpipe.sweep import rayexec

    ray_settings = rayexec.RaySettings(
        address=settings.ray_address,
        resource=settings.ray_resource,
        max_retries=settings.max_retries,
    )
    nodes = rayexec.connect(ray_settings)
    rayexec.check(plan.groups, nodes, settings.ray_resource)
    return ray_settings


def _execute(
    plan: SweepPlan,
    settings: SweepSettings,
    ray_settings: RaySettings | None,
    states: Sequence[CellState],
    say: Say,
) -> list[GroupResult]:
    from evalpipe.sweep.local import run_local
    from evalpipe.sweep.monitor import Monitor

    if ray_settings is None:
        return run_local(plan.groups, settings.max_retries, say)
    from evalpipe.sweep import rayexec

    with Monitor(_store(plan), states, say, settings.progress_every_s):
        return list(rayexec.run_groups(plan.groups, ray_settings, say))


def _pairs(
    plan: SweepPlan, run_ids: Mapping[str, str], settings: SweepSettings
) -> tuple[PairOutcome, ...]:
    """Each pair compared, or why it is not: a cell without a finished run, or a refusal."""
    from evalpipe.api.comparing import compare
    from evalpipe.sweep.outcome import PairOutcome

    out = []
    for pair in plan.pairs:
        missing = [k for k in (pair.run, pair.baseline) if k not in run_ids]
        if missing:
            out.append(PairOutcome(pair, missing=f"no finished run for {', '.join(missing)}"))
            continue
        try:
            (c,) = compare(
                _store(plan),
                [run_ids[pair.run]],
                baseline=run_ids[pair.baseline],
                margin=settings.margin,
            )
        except EvalpipeError as exc:
            out.append(PairOutcome(pair, missing=str(exc)))
            continue
        out.append(PairOutcome(pair, comparison=c))
    return tuple(out)


def _gate(plan: SweepPlan, settings: SweepSettings) -> GateDecision:
    from evalpipe.api.gating import gate

    return gate(_store(plan), settings.policy or "", tag=settings.tag)


def _store(plan: SweepPlan) -> str | None:
    """The store every cell writes to (resolved once, for all of them)."""
    return plan.cells[0].options.store if plan.cells else None


def _dashboard(plan: SweepPlan, settings: SweepSettings) -> str:
    """Render the dashboard; non-CP pairs (tp2=tp1) are passed as the reference pairs."""
    from evalpipe.api.dashboard import dashboard
    from evalpipe.layout import parse

    layouts = {c.key: c.layout for c in plan.cells}
    named = sorted(
        {
            f"{layouts[p.run]}={layouts[p.baseline]}"
            for p in plan.pairs
            if not parse(layouts[p.run]).is_cp
        }
    )
    out = settings.dashboard or "site"
    dashboard(_store(plan), out, pairs=named)
    return out


def format_sweep(outcome: SweepOutcome) -> str:
    """The one-screen summary (or, for a dry run, the cells and what each needs)."""
    from evalpipe.report.sweeptext import format_outcome

    return format_outcome(outcome)


def sweep_json(outcome: SweepOutcome) -> dict[str, Any]:
    """The outcome as ``evalpipe sweep --json`` prints it."""
    from evalpipe.report.sweeptext import outcome_json

    return outcome_json(outcome)
