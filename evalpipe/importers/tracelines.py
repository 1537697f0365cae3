"""Token traces in the run exchange format: the ``{"trace": {...}}`` lines after the samples.

Exchange version 3 writes one line per stored trace row of the run (see
:mod:`evalpipe.store.traces`), sorted by ``source`` (``""``, the run's own generation, first)
and then in the order of the sample lines::

    {"trace": {"item_id": "0", "source": "", "start": 57, "k": 5, "n_tokens": 212,
               "data": "<base64 of the stored binary form, evalpipe.traces.encode>"}}
    {"trace": {"item_id": "7", "source": "20261128-031642-ab12cd", "error": "HTTP 400: …"}}

The second form is an item that could not be scored for that source (an infrastructure
error). ``source`` is kept as written, whether or not that run is in the destination store.
``k`` and ``n_tokens`` repeat what ``data`` holds, for readers; an import checks they agree.
A trace row of an item the run has no sample for has no place in the format and is not
written.

Re-importing traces follows the store's rule for trace rows: a row the store lacks is added;
the same row is not written again; a stored trace is never replaced by an error row; a stored
trace that differs from the file's for the same (item, source) is a conflict, reported before
anything is written. Rows only the store holds (traces scored after the export) are kept.

Import-light like :mod:`evalpipe.importers.jsonl`: numpy and SQLAlchemy are imported inside
the functions that need them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from evalpipe.errors import EvalpipeError
from evalpipe.importers.lines import INT, STR, TEXT, Check, checked, json_line

if TYPE_CHECKING:
    from evalpipe.store import Store
    from evalpipe.traces import TokenTrace

FIRST_VERSION = 3
"""The exchange version that introduced trace lines; older files have none."""

_COUNT: Check = (lambda v: INT[0](v) and v >= 0, "a non-negative integer")
TRACE_KEYS: dict[str, Check] = {
    "item_id": TEXT,
    "source": STR,
    "start": _COUNT,
    "k": _COUNT,
    "n_tokens": _COUNT,
    "data": STR,
    "error": STR,
}
TRACE_REQUIRED = ("item_id", "source", "start", "k", "n_tokens", "data")
ERROR_REQUIRED = ("item_id", "source", "error")


@dataclass(frozen=True, eq=False)
class TraceLine:
    """One validated trace line: a trace (``data`` and ``trace`` set) or the reason there
    is none (``error`` set), for ``item_id`` and ``source``."""

    item_id: str
    source: str
    start: int = 0
    data: bytes | None = None
    trace: TokenTrace | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.item_id, self.source)

    def same_as(self, other: TraceLine) -> bool:
        """Whether both hold the same trace (compared by content, not by compressed bytes)
        or the same error."""
        if self.error is not None or other.error is not None:
            return self.error == other.error
        if self.start != other.start:
            return False
        return self.data == other.data or _trace(self) == _trace(other)


def _trace(line: TraceLine) -> TokenTrace:
    if line.trace is not None:
        return line.trace
    from evalpipe.traces import decode

    assert line.data is not None  # an error row has no trace and is compared by its error
    return decode(line.data)


def is_trace_line(value: Any) -> bool:
    """Whether a parsed JSON line is a trace line (``{"trace": …}``), not a sample."""
    return isinstance(value, dict) and set(value) == {"trace"}


def parse_trace_line(value: Mapping[str, Any], where: str) -> TraceLine:
    """The trace line ``value`` (``{"trace": {...}}``) checked and decoded; an
    :class:`EvalpipeError` naming ``where`` when it is not a valid one."""
    body = value["trace"]
    if isinstance(body, dict) and "error" in body and "data" in body:
        raise EvalpipeError(f"{where}: a trace line holds either 'data' or 'error', not both")
    form = ERROR_REQUIRED if isinstance(body, dict) and "error" in body else TRACE_REQUIRED
    d = checked(body, {k: TRACE_KEYS[k] for k in form}, form, where, "trace")
    item_id, source = str(d["item_id"]), d["source"]
    if "error" in d:
        return TraceLine(item_id, source, error=d["error"])
    try:
        data = base64.b64decode(d["data"], validate=True)
    except (binascii.Error, ValueError):
        raise EvalpipeError(f"{where}: trace 'data' is not valid base64") from None
    from evalpipe.traces import decode

    try:
        trace = decode(data)
    except ValueError as exc:
        raise EvalpipeError(f"{where}: trace 'data' cannot be read: {exc}") from None
    if (trace.k, trace.n) != (d["k"], d["n_tokens"]):
        raise EvalpipeError(
            f"{where}: trace says k={d['k']}, n_tokens={d['n_tokens']} but its data holds "
            f"k={trace.k}, n_tokens={trace.n}"
        )
    return TraceLine(item_id, source, d["start"], data, trace)


def checked_traces(
    rows: Sequence[tuple[int, TraceLine]], items: Collection[str], version: int, source: str
) -> tuple[TraceLine, ...]:
    """The trace lines of a file, once its samples are known: each for an item with a sample
    line, one per (item, source), and only in a file of version 3 or later."""
    if rows and version < FIRST_VERSION:
        raise EvalpipeError(
            f"{source}:{rows[0][0]}: a trace line in a version {version} file (trace lines "
            f"came with version {FIRST_VERSION}); fix the run's schema_version"
        )
    first_line: dict[tuple[str, str], int] = {}
    for number, t in rows:
        if t.item_id not in items:
            raise EvalpipeError(
                f"{source}:{number}: trace for item {t.item_id!r}, which has no sample line"
            )
        if t.key in first_line:
            raise EvalpipeError(
                f"{source}:{number}: a second trace for item {t.item_id!r}, source "
                f"{t.source!r} (first on line {first_line[t.key]})"
            )
        first_line[t.key] = number
    return tuple(t for _, t in rows)


def stored_trace_lines(store: Store, run_id: str) -> list[TraceLine]:
    """Every trace row of ``run_id`` in ``store`` as it is stored (data not decoded), in no
    particular order.

    One query over all sources, errors included: :func:`evalpipe.store.traces.trace_sources`
    lists only sources with traces, which would lose a source whose every item failed.
    """
    from evalpipe.store.traces import trace_rows  # the format itself needs no database

    return [
        TraceLine(item, source, start, data, error=error)
        for item, source, start, data, error in trace_rows(store, run_id)
    ]


def write_trace_lines(store: Store, run_id: str, item_order: Sequence[str], out: IO[str]) -> int:
    """Write the trace lines of ``run_id`` (for the items in ``item_order``, the sample lines'
    order) to ``out``; return how many."""
    position = {item: i for i, item in enumerate(item_order)}
    rows = [t for t in stored_trace_lines(store, run_id) if t.item_id in position]
    rows.sort(key=lambda t: (t.source, position[t.item_id]))
    for t in rows:
        out.write(json_line({"trace": _to_dict(t)}))
    return len(rows)


def _to_dict(t: TraceLine) -> dict[str, Any]:
    if t.data is None:
        return {"item_id": t.item_id, "source": t.source, "error": t.error}
    from evalpipe.traces import decode

    # k and n_tokens from the data itself, so a file never disagrees with what it carries.
    trace = t.trace if t.trace is not None else decode(t.data)
    return {
        "item_id": t.item_id,
        "source": t.source,
        "start": t.start,
        "k": trace.k,
        "n_tokens": trace.n,
        "data": base64.b64encode(t.data).decode("ascii"),
    }


@dataclass(frozen=True)
class TracePlan:
    """What importing trace lines into a store that holds the run would do: the rows to
    write, and the conflicts (stored traces that differ from the file's) that forbid it."""

    new: tuple[TraceLine, ...]
    conflicts: tuple[str, ...]


def plan_trace_lines(store: Store, run_id: str, lines: Iterable[TraceLine]) -> TracePlan:
    """Compare ``lines`` with the rows stored for ``run_id`` (see the module docstring)."""
    stored = {t.key: t for t in stored_trace_lines(store, run_id)}
    new: list[TraceLine] = []
    conflicts: list[str] = []
    for t in lines:
        s = stored.get(t.key)
        if s is None or (s.error is not None and not t.same_as(s)):
            new.append(t)  # missing, or an error row the file's trace or reason replaces
        elif t.error is None and not t.same_as(s):
            conflicts.append(
                f"a different token trace for item {t.item_id!r}"
                + (f" scoring run {t.source}" if t.source else "")
            )
    return TracePlan(tuple(new), tuple(conflicts))


def put_trace_lines(store: Store, run_id: str, lines: Iterable[TraceLine]) -> None:
    """Store ``lines`` as trace rows of ``run_id``, with the store's rules (a trace replaces
    what is stored; an error row never replaces a trace)."""
    from evalpipe.store.traces import put_trace_errors, put_traces
    from evalpipe.traces import StoredTrace

    traces: list[StoredTrace] = []
    errors: dict[str, dict[str, str]] = {}
    for t in lines:
        if t.error is not None:
            errors.setdefault(t.source, {})[t.item_id] = t.error
        else:
            traces.append(StoredTrace(run_id, t.item_id, t.source, t.start, _trace(t)))
    put_traces(store, traces)
    for source in sorted(errors):
        put_trace_errors(store, run_id, source, errors[source])
