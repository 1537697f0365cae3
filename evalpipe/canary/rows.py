"""The canary's rows from a store: each faulted or benign run compared with the clean run
(the comparison core, with the clean run's repeat as the noise floor), and the canary groups a
store holds (for the dashboard's canary page)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from evalpipe.canary.table import CanaryRow, row
from evalpipe.compare.core import Comparison, Settings
from evalpipe.compare.pairing import find_baseline, hard_differences, repeats
from evalpipe.compare.runs import compare_runs
from evalpipe.compare.tokens.inference import items_needed
from evalpipe.engine.args import EngineArgs
from evalpipe.errors import EvalpipeError, StoreError
from evalpipe.faults import fault_label, parse_fault
from evalpipe.records import Run
from evalpipe.store import Store


@dataclass(frozen=True)
class Arm:
    """A run set against the clean one: ``role`` ``fault`` or ``benign``."""

    run: Run
    role: str
    label: str


@dataclass(frozen=True)
class StoredCanary:
    """A clean run and the faulted and benign runs of the same items set against it."""

    clean: Run
    arms: tuple[Arm, ...]


def canary_rows(
    store: Store, clean: Run, arms: Sequence[Arm], period: int | None, settings: Settings
) -> list[CanaryRow]:
    """A row per arm against ``clean`` (its repeat as the noise floor); a fault is localised
    against its own period, a benign variant against ``period`` (None: each run's layout's)."""
    out = []
    for arm in arms:
        fault = None if arm.run.config.fault is None else parse_fault(arm.run.config.fault)
        c = compare_runs(
            store,
            arm.run,
            clean,
            margin=settings.margin,
            alpha=settings.alpha,
            min_n=settings.min_n,
            shard_period=fault.locating_period if fault is not None else period,
            force=arm.role == "benign",  # a benign variant may differ by design (a dtype)
        )
        items = token_items(c, settings.alpha)
        out.append(row(arm.label, arm.role, c, fault, items, _max_position(store, arm.run)))
    return out


def token_items(c: Comparison, alpha: float) -> float:
    """Items the token verdict needs to call the observed fault a drift with 80 % power: to
    show the decode path's excess over the floor above τ, items varying as these do (exact,
    at the verdict's level; ``inf`` when the excess is within τ — by design not a drift)."""
    decode = None if c.tokens is None else c.tokens.paths.get("decode")
    excess = None if decode is None else decode.excess
    if decode is None or decode.decision is None or excess is None:
        return math.inf
    if len(excess.item_values) < 2:
        return math.inf
    above = excess.estimate - decode.decision.tolerance.tau
    return items_needed(excess.item_values, above, alpha=alpha)


def _max_position(store: Store, run: Run) -> int:
    """The longest sequence of ``run``: prompt tokens + output tokens."""
    return max(
        ((s.prompt_tokens or 0) + (s.output_tokens or 0) for s in store.samples(run.run_id)),
        default=0,
    )


def stored_canaries(store: Store, runs: Sequence[Run]) -> list[StoredCanary]:
    """The canaries among ``runs`` (finished, newest first): each faulted run under the clean
    run of its own configuration, with every other clean run that answered the same items
    (another layout, dtype or request order) as a benign arm — newest of each configuration."""
    finished = [r for r in runs if r.status == "finished"]
    groups: dict[str, list[Run]] = {}
    cleans: dict[str, Run] = {}
    for run in finished:
        if run.config.fault is None:
            continue
        try:
            clean = find_baseline(store, run)
        except StoreError:
            raise
        except EvalpipeError:
            continue  # no clean run of its configuration yet: nothing to set it against
        groups.setdefault(clean.run_id, []).append(run)
        cleans[clean.run_id] = clean
    out = []
    for clean_id, faulted in groups.items():
        clean = cleans[clean_id]
        arms = [
            Arm(r, "fault", f"fault: {fault_label(r.config.fault or '')}")
            for r in sorted(faulted, key=_by_fault)
        ]
        arms += [Arm(r, "benign", _benign_label(r, clean)) for r in _benign(store, clean, finished)]
        out.append(StoredCanary(clean, tuple(arms)))
    return out


def _by_fault(run: Run) -> tuple[str, float]:
    spec = parse_fault(run.config.fault or "")
    return (spec.kind, abs(spec.size))


def _benign(store: Store, clean: Run, finished: Sequence[Run]) -> list[Run]:
    floor = {r.run_id for r in repeats(store, clean)}
    seen: set[str] = set()
    out = []
    for r in finished:  # newest first: the newest run of each configuration
        key = r.config.config_hash()
        if (
            r.config.fault is None
            and r.run_id not in floor
            and key not in seen
            and r.config.limit == clean.config.limit
            and not hard_differences(r, clean)
        ):
            seen.add(key)
            out.append(r)
    return out


def _benign_label(run: Run, clean: Run) -> str:
    """What sets a benign run apart from the clean one: layout, arguments, order."""
    a, b = run.config, clean.config
    parts = [a.layout] if a.layout != b.layout else []
    mine, theirs = EngineArgs(a.engine_args).non_layout(), EngineArgs(b.engine_args).non_layout()
    parts += [f"{k}={v}" for k, v in mine.items() if theirs.get(k) != v]
    if a.request_order != b.request_order:
        parts.append(f"{a.request_order} order")
    return ", ".join(parts) or "same configuration"
