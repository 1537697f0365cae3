"""Runs as JSONL, the format runs move in between stores and other harnesses' results come in.

Line 1 is ``{"run": {...}}`` (the run and its config, flat); every further line is one
sample, then (version 3) one ``{"trace": {...}}`` line per stored token-trace row
(:mod:`evalpipe.importers.tracelines`), then (version 4) the end line with counts and a digest
(:mod:`evalpipe.importers.endline`). :func:`export_run` (:mod:`evalpipe.importers.export`)
writes every field evalpipe knows;
:func:`import_run` needs only ``model``, ``task``, ``task_version`` and ``layout`` on the run
and ``item_id``, ``output`` and ``correct`` on each sample, fills documented defaults for the
rest, checks values as a native run's (:mod:`evalpipe.importers.runcheck`) and stores the run
under its ``run_id`` (or, without one, an id made from its content), so that importing the
same file twice, or many times at once, changes nothing.

Import-light: SQLAlchemy and numpy are only reached through the :class:`~evalpipe.store.Store`
passed in and inside the trace functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from evalpipe.errors import EvalpipeError
from evalpipe.faults import parse_fault
from evalpipe.importers import endline, tracelines
from evalpipe.importers.export import export_run as export_run
from evalpipe.importers.export import run_to_dict as run_to_dict
from evalpipe.importers.export import sample_to_dict as sample_to_dict
from evalpipe.importers.lines import (
    COUNT,
    FAULT,
    INT,
    NUM,
    OBJ,
    ORDER,
    STR,
    STRS,
    TEXT,
    TIMESTAMP,
    Check,
    checked,
    numbered_texts,
    optional,
    read_json,
)
from evalpipe.importers.runcheck import (
    UNKNOWN_PROMPT,
    canonical_layout,
    content_id,
    derived_prompt_hash,
    same_run,
    summary,
)
from evalpipe.importers.tracelines import TraceLine
from evalpipe.records import (
    EXCHANGE_VERSION,
    RUN_STATUSES,
    Run,
    Sample,
    canonical_json,
    config_from_dict,
    new_run_id,
    sha256_text,
    utcnow,
)

if TYPE_CHECKING:
    from evalpipe.store import Store

# Version 2 writes an object (field name → value); version 1 files hold a flag list.
_ENGINE_ARGS: Check = (
    lambda v: isinstance(v, dict) or STRS[0](v),
    'an object like {"max_model_len": 4096} (or, in version 1 files, a list of flags)',
)
_ANSWERS: Check = (
    lambda v: isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values()),
    'an object of answers like {"strict": "42", "flexible": null}',
)
_VERDICTS: Check = (
    lambda v: isinstance(v, dict) and all(isinstance(x, bool) for x in v.values()),
    'an object of verdicts like {"strict": true}',
)
_STATUS: Check = (lambda v: v in RUN_STATUSES, f"one of {', '.join(RUN_STATUSES)}")


_PROMPT: Check = (
    lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(m, dict) for m in v)),
    "a string or a list of chat messages",
)

RUN_REQUIRED = ("model", "task", "task_version", "layout")
RUN_KEYS: dict[str, Check] = {
    **dict.fromkeys(("run_id", "model", "model_fingerprint", "task"), STR),
    "task_version": TEXT,
    **dict.fromkeys(("prompt_hash", "data_source"), STR),
    "data_sha256": optional(STR),
    **dict.fromkeys(("layout", "platform", "engine_kind"), STR),
    "engine_args": _ENGINE_ARGS,
    "sampling": OBJ,
    "seed": INT,
    "limit": optional(COUNT),
    "concurrency": COUNT,
    "engine_versions": OBJ,
    "repeat_index": COUNT,
    "fault": optional(FAULT),
    "request_order": ORDER,
    "config_hash": STR,  # derived from the config: written for readers, ignored on import
    "status": _STATUS,
    "started_at": TIMESTAMP,
    "finished_at": optional(TIMESTAMP),
    **dict.fromkeys(("n_items", "n_samples", "n_correct", "n_correct_flexible", "n_errors"), COUNT),
    **dict.fromkeys(("accuracy", "accuracy_flexible", "duration_s"), optional(NUM)),
    "output_tokens": COUNT,
    "throughput_tok_s": optional(NUM),
    "tags": STRS,
    "provenance": OBJ,
    "message": optional(STR),
    "schema_version": INT,
    "evalpipe_version": STR,  # informational
}

SAMPLE_REQUIRED = ("item_id", "output", "correct")
SAMPLE_KEYS: dict[str, Check] = {
    "item_id": TEXT,
    "prompt_hash": STR,
    "prompt": optional(_PROMPT),
    "output": optional(STR),
    "target": optional(TEXT),
    "correct": optional((lambda v: isinstance(v, bool), "true/false")),
    "extracted": _ANSWERS,
    "correct_by": _VERDICTS,
    **dict.fromkeys(("prompt_tokens", "output_tokens"), optional(COUNT)),
    "finish_reason": optional(STR),
    "latency_s": optional(NUM),
    "error": optional(STR),
    "completed_at": optional(TIMESTAMP),
    "meta": OBJ,
}

# What an import assumes when a field is absent (documented in the README).
CONFIG_DEFAULTS: dict[str, Any] = {
    "data_source": "import",
    "data_sha256": None,
    "platform": "unknown",
    "engine_kind": "import",
    "engine_args": {},
    "sampling": {},
    "seed": 0,
    "limit": None,
    "concurrency": 1,
    "engine_versions": {},
    "repeat_index": 0,
    "fault": None,
    "request_order": "dataset",
}
_FLOAT_FIELDS = ("accuracy", "accuracy_flexible", "duration_s", "throughput_tok_s")


@dataclass(frozen=True)
class Parsed:
    """A validated JSONL run: the records to store, and which of the run's fields the
    import's clock filled (``clock``: not the file's content, see :mod:`.runcheck`)."""

    run: Run
    samples: tuple[Sample, ...]
    prompts: dict[str, str]
    traces: tuple[TraceLine, ...] = ()
    clock: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()


def import_run(
    store: Store,
    lines: Iterable[str | bytes],
    *,
    new_id: bool = False,
    source: str | None = None,
    log: Callable[[str], object] = lambda _: None,
) -> str:
    """Store the run in JSONL ``lines`` (text, or bytes read as UTF-8); return its run id.

    The run keeps the ``run_id`` in the file; a file without one is stored under an id made
    from its content, and ``new_id`` gives a fresh one. If the store already holds that id
    with the same run and samples (the import's clock aside), only the file's trace rows the
    store lacks are written and the id is returned: importing twice, or many times at once,
    writes nothing more. A different run, samples or stored trace is an error. ``source``
    names the input in messages (``source:LINE: …``); by default the open file's name;
    ``log`` gets the notices (an old file whose end cannot be checked).
    """
    if source is None:
        name = getattr(lines, "name", None)
        source = name if isinstance(name, str) else "input"
    parsed = parse_jsonl(lines, source=source)
    list(map(log, parsed.notices))
    if new_id:
        parsed = _renamed(parsed, new_run_id())
    run_id = parsed.run.run_id
    existing = store.find_run(run_id)
    if existing is None:
        try:
            store.create_run(parsed.run, parsed.samples, parsed.prompts)
            # A second transaction: if interrupted, importing again adds the missing traces.
            tracelines.put_trace_lines(store, run_id, parsed.traces)
            return run_id
        except EvalpipeError:
            # Another importer may have stored it meanwhile; identical content is fine.
            existing = store.find_run(run_id)
            if existing is None:
                raise
    why = ""
    same = same_run(existing, parsed.run, parsed.clock)
    if same and _same_samples(store.samples(run_id), parsed.samples):
        plan = tracelines.plan_trace_lines(store, run_id, parsed.traces)
        if not plan.conflicts:
            if plan.new:
                tracelines.put_trace_lines(store, run_id, plan.new)
            return run_id
        why = f" ({plan.conflicts[0]})"
    raise EvalpipeError(
        f"{source}: run {run_id} is already in {store.name} with different content{why}; to "
        'keep both, remove "run_id" from line 1 (the run is then stored under an id made from '
        "its content)"
    )


def _same_samples(stored: list[Sample], parsed: tuple[Sample, ...]) -> bool:
    return {s.item_id: s for s in stored} == {s.item_id: s for s in parsed}


def _renamed(parsed: Parsed, run_id: str) -> Parsed:
    return replace(
        parsed,
        run=parsed.run.with_(run_id=run_id),
        samples=tuple(replace(s, run_id=run_id) for s in parsed.samples),
    )


def parse_jsonl(lines: Iterable[str | bytes], *, source: str = "input") -> Parsed:
    """Validate JSONL run lines and build the records, filling defaults; no store needed.

    Raises :class:`EvalpipeError` naming ``source``, the line and the key for bad input.
    """
    header: tuple[int, dict[str, Any]] | None = None
    rows: list[tuple[int, dict[str, Any]]] = []
    traces: list[tuple[int, TraceLine]] = []
    ends = endline.EndCheck(source)
    for number, line in numbered_texts(lines, source):
        if not line.strip():
            ends.add(line)
            continue
        ends.after_end(number)
        where = f"{source}:{number}"
        value = read_json(line, where)
        if header is not None and endline.is_end_line(value):
            ends.samples, ends.traces = len(rows), len(traces)
            ends.end(value, number)
            continue
        ends.add(line)
        if header is None:
            if not (isinstance(value, dict) and set(value) == {"run"}):
                raise EvalpipeError(
                    f'{where}: the first line must be {{"run": {{…}}}} holding at least '
                    f"{', '.join(RUN_REQUIRED)}"
                )
            header = (number, checked(value["run"], RUN_KEYS, RUN_REQUIRED, where, "run"))
        elif tracelines.is_trace_line(value):
            traces.append((number, tracelines.parse_trace_line(value, where)))
        else:
            hint = "; put extra data under 'meta'"
            rows.append(
                (number, checked(value, SAMPLE_KEYS, SAMPLE_REQUIRED, where, "sample", hint))
            )
    if header is None:
        raise EvalpipeError(f'{source}: empty; expected a first line {{"run": {{…}}}}')
    ends.samples, ends.traces = len(rows), len(traces)
    stated = header[1].get("schema_version")
    parsed = _build(header, rows, source)  # first: a newer version says so, and nothing else
    notice = ends.finish(stated)  # before any trace is decoded: a cut file costs nothing more
    version = EXCHANGE_VERSION if stated is None else stated
    items = {s.item_id: s for s in parsed.samples}
    found = tracelines.checked_traces(traces, items, version, source)
    return replace(parsed, traces=found, notices=() if notice is None else (notice,))


def _text(v: Any) -> Any:
    return v if v is None or isinstance(v, str) else str(v)


def _build(
    header: tuple[int, dict[str, Any]], rows: list[tuple[int, dict[str, Any]]], source: str
) -> Parsed:
    line_no, r = header
    where = f"{source}:{line_no}"
    if r.get("schema_version", EXCHANGE_VERSION) > EXCHANGE_VERSION:
        raise EvalpipeError(
            f"{where}: written by a newer evalpipe (schema {r['schema_version']}; this one "
            f"knows {EXCHANGE_VERSION}): upgrade evalpipe to import it"
        )
    layout = canonical_layout(r["layout"], where)
    samples, prompts = _samples(rows, source)
    config = config_from_dict(
        {
            **CONFIG_DEFAULTS,
            **{k: r[k] for k in CONFIG_DEFAULTS if k in r},
            "model": r["model"],
            "model_fingerprint": r.get("model_fingerprint", f"name:{r['model']}"),
            "task": r["task"],
            "task_version": _text(r["task_version"]),
            "prompt_hash": r.get("prompt_hash", derived_prompt_hash(samples)),
            "layout": layout,
            "fault": parse_fault(r["fault"]).canonical if r.get("fault") else None,
        }
    )
    status = r.get("status", "finished")
    # Times the file leaves out come from the clock: not content (see .runcheck).
    clock: tuple[str, ...] = () if "started_at" in r else ("started_at",)
    if clock and status == "finished" and "finished_at" not in r:
        clock += ("finished_at",)  # a finished run's absent finish is its start
    started = r["started_at"] if "started_at" in r else utcnow()
    given = {k: r[k] for k in (f.name for f in fields(Run)) if k in r and k != "run_id"}
    for k in _FLOAT_FIELDS:
        if given.get(k) is not None:
            given[k] = float(given[k])
    run = Run(
        **{
            "n_items": len(samples),
            "finished_at": started if status == "finished" else None,
            **given,
            **summary(given, samples, where),
            "run_id": "",
            "config": config,
            "status": status,
            "started_at": started,
            "tags": tuple(r.get("tags", ())),
        }
    )
    run_id = r.get("run_id") or content_id(run, samples, prompts, clock)
    parsed = Parsed(run, tuple(samples), prompts, clock=clock)
    return _renamed(parsed, run_id)


def _samples(
    rows: list[tuple[int, dict[str, Any]]], source: str
) -> tuple[list[Sample], dict[str, str]]:
    samples: list[Sample] = []
    prompts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, d in rows:
        item_id = str(d["item_id"])
        if item_id in first_line:
            raise EvalpipeError(
                f"{source}:{number}: item_id {item_id!r} again (first on line "
                f"{first_line[item_id]}); a run has one sample per item"
            )
        first_line[item_id] = number
        prompt = d.get("prompt")
        text = prompt if prompt is None or isinstance(prompt, str) else canonical_json(prompt)
        # The same hash the runner gives a rendered prompt: sha256 of its canonical text.
        prompt_hash = d.get("prompt_hash") or (sha256_text(text) if text else UNKNOWN_PROMPT)
        if text is not None and prompt_hash != UNKNOWN_PROMPT:
            prompts[prompt_hash] = text
        rest = {k: v for k, v in d.items() if k not in ("item_id", "prompt", "prompt_hash")}
        rest["target"] = _text(rest.get("target"))
        if rest.get("latency_s") is not None:
            rest["latency_s"] = float(rest["latency_s"])
        samples.append(Sample(run_id="", item_id=item_id, prompt_hash=prompt_hash, **rest))
    return samples, prompts
