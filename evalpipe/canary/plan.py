"""A canary grid as runs: the clean baseline and its repeat (one engine), then one engine per
fault and per benign variant, each run the one ``evalpipe run`` would make with the same
options, so a canary resumes, reuses finished runs and pairs like any run.

Refused before anything starts: a grid needing more engine starts than ``max_starts``, and a
fault the model's architecture cannot take (:func:`evalpipe.run.plan.precheck`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from evalpipe.canary.grid import Grid, Variant
from evalpipe.errors import EvalpipeError
from evalpipe.faults import FaultSpec
from evalpipe.layout import parse
from evalpipe.options import RunOptions
from evalpipe.sweep.cells import Cell, Group

MAX_STARTS = 20
"""Default ``--max-starts``: each fault and benign variant costs one engine start (about a
minute on the CPU engine, more on a cluster) before any item runs."""


@dataclass(frozen=True)
class Arm:
    """One engine's runs: the clean baseline and its repeat, one fault, or one benign
    variant. ``options`` are its runs' options (repeat index 0)."""

    role: str  # "clean" | "fault" | "benign"
    options: RunOptions
    label: str
    fault: FaultSpec | None = None
    variant: Variant | None = None

    @property
    def marks(self) -> str:
        return "" if self.role == "clean" else f" [{self.label}]"


@dataclass(frozen=True)
class CanaryPlan:
    clean: Arm
    arms: tuple[Arm, ...]  # faults first, then benign variants, in grid order

    @property
    def starts(self) -> int:
        return 1 + len(self.arms)

    def groups(self) -> tuple[Group, ...]:
        """One group (one engine start) per arm, the clean one with both repeats first."""
        return tuple(_group(a, 2 if a.role == "clean" else 1) for a in (self.clean, *self.arms))


def plan_canary(template: RunOptions, grid: Grid, max_starts: int = MAX_STARTS) -> CanaryPlan:
    """The runs of a canary on ``template``'s model, task and layout (its fault and request
    order must be unset: the clean run is the template itself)."""
    if template.fault is not None or template.request_order != "dataset":
        raise EvalpipeError("a canary's clean run has no fault and the dataset's request order")
    clean = dataclasses.replace(template, reuse_finished=True, repeat_index=0)
    arms = [
        Arm("fault", dataclasses.replace(clean, fault=f.canonical), f"fault: {f.label}", fault=f)
        for f in grid.faults
    ]
    arms += [Arm("benign", _variant(clean, v), v.label, variant=v) for v in grid.benign]
    planned = CanaryPlan(Arm("clean", clean, "clean"), tuple(arms))
    if planned.starts > max_starts:
        raise EvalpipeError(
            f"the canary grid needs {planned.starts} engine starts (1 clean + "
            f"{len(grid.faults)} faults + {len(grid.benign)} benign variants), more than "
            f"--max-starts {max_starts}: raise --max-starts or give a smaller --grid"
        )
    return planned


def _variant(clean: RunOptions, v: Variant) -> RunOptions:
    return dataclasses.replace(
        clean,
        layout=v.layout or clean.layout,
        engine_args=(*clean.engine_args, *v.engine_args),
        request_order=v.request_order,
    )


def _group(arm: Arm, repeats: int) -> Group:
    o = arm.options
    layout = parse(o.layout)
    cells = tuple(
        Cell(
            model=o.model,
            task=o.task,
            layout=layout.canonical,
            repeat_index=i,
            options=dataclasses.replace(o, repeat_index=i),
            baseline=arm.role == "clean",
            variant=arm.marks,
        )
        for i in range(repeats)
    )
    endpoint = o.endpoint if o.engine == "endpoint" else None
    return Group(o.model, layout.canonical, layout.devices, cells, endpoint, arm.marks)
