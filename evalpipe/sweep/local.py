"""The local executor: every group on this machine, one engine at a time, in plan order.

One server per (model, layout) serves every task of the pair before it is torn down
(:func:`~evalpipe.sweep.group.run_group`). An engine that dies under a group is started again,
at most ``max_retries`` times: the group's finished cells are reused and the interrupted cell
resumes from its stored samples, so nothing is lost or generated twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from evalpipe.sweep.cells import Group, GroupResult
from evalpipe.sweep.group import run_group

Say = Callable[[str], None]


def run_local(groups: Sequence[Group], max_retries: int, say: Say) -> list[GroupResult]:
    """Run the groups one after another; see the module docstring."""
    results = []
    for n, group in enumerate(groups, 1):
        say(f"sweep: group {n}/{len(groups)} {group.key}: {len(group.cells)} cells")
        attempt = 1
        result = run_group(group, say)
        while result.engine_lost is not None and attempt <= max_retries:
            say(
                f"sweep: {group.key}: {result.engine_lost}; retrying the group "
                f"(attempt {attempt + 1} of {max_retries + 1}): finished cells are reused, "
                "the interrupted one resumes from its stored samples"
            )
            attempt += 1
            result = run_group(group, say)
        results.append(settled(result, attempt, max_retries))
    return results


def settled(result: GroupResult, attempts: int, max_retries: int) -> GroupResult:
    """``result`` after its last attempt: cells a lost engine never ran say the retries
    are exhausted and why, so the summary and a rerun know what is left."""
    if result.engine_lost is None:
        return dataclasses.replace(result, attempts=attempts)
    why = f"retries exhausted ({attempts} attempts, max_retries {max_retries}): "
    cells = tuple(
        dataclasses.replace(c, message=why + (c.message or result.engine_lost or ""))
        if c.state == "not run"
        else c
        for c in result.cells
    )
    return dataclasses.replace(result, cells=cells, attempts=attempts)
