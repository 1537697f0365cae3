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
written. Version 4 adds ``"answer_sha256"`` to a decode-path trace: the digest of the answer
it describes (:func:`evalpipe.traces.answer_digest`), which must be its sample's ``output``.

``data`` is untrusted: it is decompressed no further than its header states, within
:data:`~evalpipe.limits.MAX_TRACE_POSITIONS` / :data:`~evalpipe.limits.MAX_TRACE_BYTES`
and, for a decode-path trace, its sample's ``output_tokens`` (which its length must equal);
NaN or +inf inside it are refused. A checked trace is kept compressed, as the file holds it.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any

from evalpipe.errors import EvalpipeError
from evalpipe.importers.lines import INT, STR, TEXT, Check, checked, json_line

if TYPE_CHECKING:
    from evalpipe.importers.endline import Summed
    from evalpipe.records import Sample
    from evalpipe.store import Store
    from evalpipe.traces import TokenTrace

FIRST_VERSION = 3
"""The exchange version that introduced trace lines; older files have none."""

_COUNT: Check = (lambda v: INT[0](v) and v >= 0, "a non-negative integer")
_DIGEST: Check = (
    lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
    "64 lowercase hex digits (sha256)",
)
TRACE_KEYS: dict[str, Check] = {
    "item_id": TEXT,
    "source": STR,
    "start": _COUNT,
    "k": _COUNT,
    "n_tokens": _COUNT,
    "data": STR,
    "answer_sha256": _DIGEST,
    "error": STR,
}
TRACE_REQUIRED = ("item_id", "source", "start", "k", "n_tokens", "data")
ERROR_REQUIRED = ("item_id", "source", "error")
_TRACE_FORM = {k: v for k, v in TRACE_KEYS.items() if k != "error"}


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
    k: int = 0
    n: int = 0
    answer: str | None = None
    """The digest of the answer a decode-path trace describes (None: unknown, or forced)."""

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
    error = isinstance(body, dict) and "error" in body
    form = ERROR_REQUIRED if error else TRACE_REQUIRED
    spec = {k: TRACE_KEYS[k] for k in form} if error else _TRACE_FORM
    d = checked(body, spec, form, where, "trace")
    item_id, source = str(d["item_id"]), d["source"]
    if "error" in d:
        return TraceLine(item_id, source, error=d["error"])
    try:
        data = base64.b64decode(d["data"], validate=True)
    except (binascii.Error, ValueError):
        raise EvalpipeError(f"{where}: trace 'data' is not valid base64") from None
    # Decompressed once the samples are known (checked_traces): its bound is its sample's.
    answer = d.get("answer_sha256")
    return TraceLine(item_id, source, d["start"], data, None, None, d["k"], d["n_tokens"], answer)


def checked_traces(
    rows: Sequence[tuple[int, TraceLine]], items: Mapping[str, Sample], version: int, source: str
) -> tuple[TraceLine, ...]:
    """The trace lines of a file, once its samples are known (by item id): each for an item
    with a sample line, one per (item, source), only in a file of version 3 or later, each
    one's data within its bounds and, on the decode path, describing its sample's answer."""
    if rows and version < FIRST_VERSION:
        raise EvalpipeError(
            f"{source}:{rows[0][0]}: a trace line in a version {version} file (trace lines "
            f"came with version {FIRST_VERSION}); fix the run's schema_version"
        )
    first_line: dict[tuple[str, str], int] = {}
    out: list[TraceLine] = []
    for number, t in rows:
        where = f"{source}:{number}"
        sample = items.get(t.item_id)
        if sample is None:
            raise EvalpipeError(f"{where}: trace for item {t.item_id!r}, which has no sample line")
        if t.key in first_line:
            raise EvalpipeError(
                f"{where}: a second trace for item {t.item_id!r}, source "
                f"{t.source!r} (first on line {first_line[t.key]})"
            )
        first_line[t.key] = number
        out.append(t if t.data is None else _checked_data(t, sample, where))
    return tuple(out)


def _checked_data(t: TraceLine, sample: Sample, where: str) -> TraceLine:
    """``t`` with its data decompressed within its bounds and checked (then dropped: the
    trace is kept compressed) and, on the decode path, bound to its sample's answer."""
    from evalpipe.traces import DECODE, answer_digest, decode

    assert t.data is not None
    decode_path = t.source == DECODE
    tokens = sample.output_tokens if decode_path else None
    if decode_path and (sample.error is not None or sample.output is None):
        raise EvalpipeError(
            f"{where}: a trace of item {t.item_id!r}, whose sample is an infrastructure error "
            "with no answer for a trace to describe"
        )
    if not decode_path and t.answer is not None:
        raise EvalpipeError(f'{where}: answer_sha256 is for decode-path traces (source "")')
    try:
        trace = decode(t.data, tokens)
    except ValueError as exc:
        raise EvalpipeError(f"{where}: trace 'data' cannot be read: {exc}") from None
    if (trace.k, trace.n) != (t.k, t.n):
        raise EvalpipeError(
            f"{where}: trace says k={t.k}, n_tokens={t.n} but its data holds "
            f"k={trace.k}, n_tokens={trace.n}"
        )
    if tokens is not None and trace.n != tokens:
        raise EvalpipeError(
            f"{where}: the trace has {trace.n} positions but its sample has {tokens} output "
            "tokens; a decode-path trace has one position per generated token"
        )
    if not decode_path:
        return t
    digest = answer_digest(sample.output or "")
    if t.answer is not None and t.answer != digest:
        raise EvalpipeError(
            f"{where}: the trace describes another answer than item {t.item_id!r}'s output "
            "(answer_sha256 differs): the trace and the answer come from different generations"
        )
    return replace(t, answer=digest)


def stored_trace_lines(store: Store, run_id: str) -> list[TraceLine]:
    """Every trace row of ``run_id`` in ``store`` as it is stored (data not decoded), in no
    particular order.

    One query over all sources, errors included: :func:`evalpipe.store.traces.trace_sources`
    lists only sources with traces, which would lose a source whose every item failed.
    """
    from evalpipe.store.traces import trace_rows  # the format itself needs no database

    return [
        TraceLine(item, source, start, data, error=error, answer=answer)
        for item, source, start, data, error, answer in trace_rows(store, run_id)
    ]


def write_trace_lines(
    store: Store, run_id: str, answers: Mapping[str, Sample], out: IO[str] | Summed
) -> int:
    """Write the trace lines of ``run_id`` for its samples ``answers`` (by item id, in the
    sample lines' order) to ``out``; return how many. A decode-path trace whose answer is
    not its sample's (see :mod:`evalpipe.store.traces`) is not the run's and is left out;
    every other carries its answer's digest (computed for a trace stored before schema 5)."""
    from evalpipe.traces import DECODE, answer_digest

    position = {item: i for i, item in enumerate(answers)}
    rows = [t for t in stored_trace_lines(store, run_id) if t.item_id in position]
    rows.sort(key=lambda t: (t.source, position[t.item_id]))
    written = 0
    for t in rows:
        if t.data is not None and t.source == DECODE:
            output = answers[t.item_id].output
            digest = None if output is None else answer_digest(output)
            if digest is None or t.answer not in (None, digest):
                continue
            t = replace(t, answer=digest)
        out.write(json_line({"trace": _to_dict(t, run_id)}))
        written += 1
    return written


def _to_dict(t: TraceLine, run_id: str) -> dict[str, Any]:
    if t.data is None:
        return {"item_id": t.item_id, "source": t.source, "error": t.error}
    from evalpipe.traces import decode

    # k and n_tokens from the data itself, so a file never disagrees with what it carries.
    try:
        trace = t.trace if t.trace is not None else decode(t.data)
    except ValueError as exc:
        raise EvalpipeError(
            f"the stored token trace of item {t.item_id!r} of run {run_id} cannot be read "
            f"({exc}): the store was changed outside evalpipe; delete the run, or import it "
            "again from a good file"
        ) from exc
    out = {
        "item_id": t.item_id,
        "source": t.source,
        "start": t.start,
        "k": trace.k,
        "n_tokens": trace.n,
        "data": base64.b64encode(t.data).decode("ascii"),
    }
    return out if t.answer is None else {**out, "answer_sha256": t.answer}


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
    what is stored; an error row never replaces a trace). Traces are stored as the file
    holds them (compressed, checked by :func:`checked_traces`), never decoded all at once."""
    from evalpipe.store.traces import put_encoded, put_trace_errors

    traces: list[dict[str, Any]] = []
    errors: dict[str, dict[str, str]] = {}
    for t in lines:
        if t.error is not None:
            errors.setdefault(t.source, {})[t.item_id] = t.error
        else:
            traces.append(_row(t, run_id))
    put_encoded(store, traces)
    for source in sorted(errors):
        put_trace_errors(store, run_id, source, errors[source])


def _row(t: TraceLine, run_id: str) -> dict[str, Any]:
    """A checked trace line as a ``token_traces`` row (``k``, ``n_tokens`` as checked)."""
    data, k, n = t.data, t.k, t.n
    if t.trace is not None:  # built in memory (a test, a transfer): encoded here
        from evalpipe.traces import encode

        data, k, n = encode(t.trace), t.trace.k, t.trace.n
    return {
        "run_id": run_id,
        "item_id": t.item_id,
        "source": t.source,
        "start": t.start,
        "k": k,
        "n_tokens": n,
        "data": data,
        "answer_sha256": t.answer,
    }
