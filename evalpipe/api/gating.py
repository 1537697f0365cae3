"""The release gate: load a policy, decide it on a store, write the JUnit and Markdown
reports; and the decision's renderings (terminal text, ``--json``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalpipe.errors import EvalpipeError

if TYPE_CHECKING:
    from evalpipe.gate.decide import GateDecision


def gate(
    store: str | None,
    policy: str | Path,
    *,
    tag: str | None = None,
    select: str | None = None,
    junit: str | Path | None = None,
    markdown: str | Path | None = None,
    record: bool = True,
) -> GateDecision:
    """Decide the release gate of the ``policy`` file on the newest finished runs (``select``
    ``latest``, the default) or the newest tagged ``tag``; the decision is stored unless not
    ``record``, and written as JUnit XML to ``junit`` and as Markdown to ``markdown`` if given.
    Its ``exit_code`` is 0 pass, 1 fail, 2 incomplete; a bad policy or usage raises with 3.

    Example::

        decision = gate("evalpipe.db", "examples/release.yaml", tag="rc1", junit="gate.xml")
        print(format_gate(decision))
    """
    from evalpipe.gate.policy import EXIT_BAD_POLICY, load_policy
    from evalpipe.gate.select import evaluate_gate
    from evalpipe.report.gate import render_junit, render_markdown
    from evalpipe.store import open_store

    if tag is not None and select not in (None, "latest"):
        raise EvalpipeError("give --select latest or --tag TAG, not both", EXIT_BAD_POLICY)
    loaded = load_policy(policy)
    with open_store(store) as s:
        decision = evaluate_gate(s, loaded, tag=tag, record=record)
    for path, render in ((junit, render_junit), (markdown, render_markdown)):
        if path:
            Path(path).write_text(render(decision), encoding="utf-8")
    return decision


def format_gate(decision: GateDecision) -> str:
    """The decision for the terminal: status, notices, one line per requirement."""
    from evalpipe.gate.decide import summarize

    return summarize(decision)


def gate_json(decision: GateDecision) -> dict[str, Any]:
    """The decision as ``evalpipe gate --json`` prints it (and as it is stored)."""
    return decision.to_dict()
