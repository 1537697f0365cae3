"""The release gate: load a policy, decide it on a store, write the JUnit and Markdown
reports; and the decision's renderings (terminal text, ``--json``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalpipe.errors import EXIT_GATE_STORE, EvalpipeError, StoreError

if TYPE_CHECKING:
    from evalpipe.gate.decide import GateDecision
    from evalpipe.gate.policy import Policy


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
    Its ``exit_code`` is 0 pass, 1 fail, 2 incomplete. A bad policy or usage raises with 3; a
    store that cannot be opened or read raises :class:`~evalpipe.errors.StoreError` with
    :data:`~evalpipe.errors.EXIT_GATE_STORE` (4), and a missing store is never created.

    Example::

        decision = gate("evalpipe.db", "examples/release.yaml", tag="rc1", junit="gate.xml")
        print(format_gate(decision))
    """
    from evalpipe.api.stored import store_inputs
    from evalpipe.gate.policy import EXIT_BAD_POLICY, load_policy
    from evalpipe.paths import check_outputs, write_atomic
    from evalpipe.report.gate import render_junit, render_markdown

    if tag is not None and select not in (None, "latest"):
        raise EvalpipeError("give --select latest or --tag TAG, not both", EXIT_BAD_POLICY)
    loaded = load_policy(policy)  # first: a bad policy is reported even without a store
    # Before deciding: a refused output must leave no decision behind (later "loosened since
    # decision #N" notices count them), and must never overwrite the store or the policy.
    check_outputs(
        [("--junit", junit), ("--markdown", markdown)],
        [*store_inputs(store), ("the policy", policy)],
        exit_code=EXIT_BAD_POLICY,
    )
    decision = _decide(store, loaded, tag=tag, record=record)
    for path, render in ((junit, render_junit), (markdown, render_markdown)):
        if path:
            # A --junit path that cannot be written is usage (3), never 1 (= drift).
            write_atomic(path, render(decision).encode("utf-8"), exit_code=EXIT_BAD_POLICY)
    return decision


def _decide(store: str | None, policy: Policy, *, tag: str | None, record: bool) -> GateDecision:
    """:func:`evaluate_gate` on the store at ``store``, which must exist: every failure to open
    or read it is a :class:`StoreError` with exit code 4, so CI never reads it as drift (1) or
    as a missing run (2)."""
    import sqlite3

    import sqlalchemy as sa

    from evalpipe.gate.select import evaluate_gate
    from evalpipe.store import open_store

    try:
        # A typo in --store must not leave a new store behind, nor an empty file become one.
        opened = open_store(store, create=False, empty_ok=False)
    except EvalpipeError as exc:  # missing, empty, unreachable, not a store, newer schema
        raise StoreError(exc.message, EXIT_GATE_STORE) from exc
    with opened as s:
        try:
            return evaluate_gate(s, policy, tag=tag, record=record)
        except StoreError as exc:
            raise StoreError(exc.message, EXIT_GATE_STORE) from exc
        except (sa.exc.DBAPIError, sqlite3.Error) as exc:  # a read outside Store.transaction
            detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
            raise StoreError(
                f"store {s.name} cannot be read ({detail}): it may be damaged; restore it or "
                "point --store elsewhere",
                EXIT_GATE_STORE,
            ) from exc


def format_gate(decision: GateDecision) -> str:
    """The decision for the terminal: status, notices, one line per requirement."""
    from evalpipe.gate.decide import summarize

    return summarize(decision)


def gate_json(decision: GateDecision) -> dict[str, Any]:
    """The decision as ``evalpipe gate --json`` prints it (and as it is stored)."""
    return decision.to_dict()
