"""Bulk reads of runs: many run ids (or unique prefixes) resolved in one query and read in
another, instead of one ``get_run`` a run."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from evalpipe.errors import EvalpipeError
from evalpipe.records import Run
from evalpipe.store import Store
from evalpipe.store.rows import run_from_row
from evalpipe.store.schema import runs

IDS_PER_QUERY = 400  # SQLite caps the bound parameters of one statement
AMBIGUOUS_SHOWN = 5


def resolve_run_ids(store: Store, wanted: Sequence[str]) -> list[str]:
    """The full ids of ``wanted`` (ids or unique prefixes, as ``evalpipe runs show`` takes),
    in the order given, each once. Every unknown id is named in one
    :class:`EvalpipeError`; so is an ambiguous prefix, with the ids it starts."""
    asked = list(dict.fromkeys(wanted))
    found: set[str] = set()
    with store.transaction(write=False) as conn:
        for start in range(0, len(asked), IDS_PER_QUERY):
            chunk = [w for w in asked[start : start + IDS_PER_QUERY] if w]
            if chunk:
                where = sa.or_(*(runs.c.run_id.startswith(w, autoescape=True) for w in chunk))
                found.update(conn.execute(sa.select(runs.c.run_id).where(where)).scalars())
    out: list[str] = []
    unknown: list[str] = []
    ambiguous: list[str] = []
    for w in asked:
        matches = sorted(f for f in found if f.startswith(w)) if w else []
        if w in found or len(matches) == 1:
            out.append(w if w in found else matches[0])
        elif not matches:
            unknown.append(w)
        else:
            more = ", …" if len(matches) > AMBIGUOUS_SHOWN else ""
            ambiguous.append(f"{w!r} starts {', '.join(matches[:AMBIGUOUS_SHOWN])}{more}")
    problems = []
    if unknown:
        problems.append(
            f"no run {', '.join(map(repr, unknown))} in {store.name}; `evalpipe runs list` "
            "shows the ids"
        )
    if ambiguous:
        problems.append(f"ambiguous run id {'; '.join(ambiguous)}: give more of the id")
    if problems:
        raise EvalpipeError("; ".join(problems))
    return list(dict.fromkeys(out))


def read_runs(store: Store, run_ids: Iterable[str]) -> list[Run]:
    """The stored runs with these exact ids (unknown ids left out), newest first as
    :meth:`Store.list_runs` orders them."""
    ids = sorted(set(run_ids))
    found: list[Run] = []
    with store.transaction(write=False) as conn:
        for start in range(0, len(ids), IDS_PER_QUERY):
            query = sa.select(runs).where(runs.c.run_id.in_(ids[start : start + IDS_PER_QUERY]))
            found += [run_from_row(row) for row in conn.execute(query).mappings()]
    return sorted(found, key=lambda r: (r.started_at, r.run_id), reverse=True)
