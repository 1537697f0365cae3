"""Properties of the JSONL exchange format on real SQLite stores (hypothesis): any valid run
round-trips export → import → export byte for byte and imports again writing nothing, and no
line, however broken, raises anything but EvalpipeError."""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalpipe.errors import EvalpipeError
from evalpipe.importers.jsonl import (
    RUN_KEYS,
    SAMPLE_KEYS,
    export_run,
    import_run,
    parse_jsonl,
)
from evalpipe.importers.tracelines import TRACE_KEYS
from evalpipe.layout import Layout, validate
from evalpipe.records import RUN_STATUSES, Run, RunConfig, Sample, summary_of
from evalpipe.store import Store, open_store
from evalpipe.store.traces import put_trace_errors, put_traces
from evalpipe.traces import DECODE, StoredTrace, trace_of

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Unicode text a store keeps (no NUL, no lone surrogate), line separators included:
# U+2028, U+0085 and the like stay inside a JSON string but end a line for str.splitlines().
TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
NAME = TEXT.filter(bool)
INT64 = st.integers(-(2**63), 2**63 - 1)
COUNT = st.integers(0, 2**63 - 1)
FLOAT = st.floats(allow_nan=False, allow_infinity=False)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | FLOAT | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
OBJECT = st.dictionaries(TEXT, JSON, max_size=3)
TIME = st.datetimes(timezones=st.just(timezone.utc)).map(
    lambda t: t.isoformat(timespec="seconds")
) | st.just("unknown")
LAYOUT = st.builds(
    Layout,
    dp=st.integers(1, 4),
    tp=st.integers(1, 8),
    pp=st.integers(1, 2),
    pcp=st.integers(1, 2),
    dcp=st.integers(1, 8),
    ep=st.booleans(),
).filter(lambda layout: not validate(layout))


@st.composite
def configs(draw: st.DrawFn) -> RunConfig:
    return RunConfig(
        model=draw(TEXT),
        model_fingerprint=draw(TEXT),
        task=draw(TEXT),
        task_version=draw(TEXT),
        prompt_hash=draw(TEXT),
        data_source=draw(TEXT),
        data_sha256=draw(st.none() | TEXT),
        layout=draw(LAYOUT).canonical,
        platform=draw(TEXT),
        engine_kind=draw(TEXT),
        engine_args=draw(OBJECT),
        sampling=draw(OBJECT),
        seed=draw(INT64),
        limit=draw(st.none() | COUNT),
        concurrency=draw(COUNT),
        engine_versions=draw(OBJECT),
        repeat_index=draw(COUNT),
    )


@st.composite
def samples_of(draw: st.DrawFn, run_id: str) -> list[Sample]:
    ids = draw(st.lists(NAME, unique=True, max_size=5))
    out = []
    for item_id in ids:
        error = draw(st.none() | NAME)
        out.append(
            Sample(
                run_id=run_id,
                item_id=item_id,
                prompt_hash=draw(NAME.filter(lambda h: h != "unknown")),
                output=None if error else draw(st.none() | TEXT),
                target=draw(st.none() | TEXT),
                correct=None if error else draw(st.none() | st.booleans()),
                extracted=draw(st.dictionaries(TEXT, st.none() | TEXT, max_size=2)),
                correct_by=draw(st.dictionaries(TEXT, st.booleans(), max_size=2)),
                prompt_tokens=draw(st.none() | COUNT),
                output_tokens=draw(st.none() | st.integers(0, 2**40)),
                finish_reason=draw(st.none() | TEXT),
                latency_s=draw(st.none() | FLOAT),
                error=error,
                completed_at=draw(st.none() | TIME),
                meta=draw(OBJECT),
            )
        )
    return out


@st.composite
def stored_runs(draw: st.DrawFn) -> tuple[Run, list[Sample], dict[str, str], list[Any]]:
    run_id = draw(NAME)
    samples = draw(samples_of(run_id))
    run = Run(
        run_id=run_id,
        config=draw(configs()),
        status=draw(st.sampled_from(RUN_STATUSES)),
        started_at=draw(TIME),
        finished_at=draw(st.none() | TIME),
        n_items=draw(COUNT),
        duration_s=draw(st.none() | FLOAT),
        throughput_tok_s=draw(st.none() | FLOAT),
        tags=tuple(draw(st.lists(TEXT, max_size=3))),
        provenance=draw(OBJECT),
        message=draw(st.none() | TEXT),
        **summary_of(samples),
    )
    hashes = sorted({s.prompt_hash for s in samples})
    prompts = draw(st.dictionaries(st.sampled_from(hashes), TEXT)) if hashes else {}
    traces: list[Any] = []
    for i, s in enumerate(samples):
        kind = draw(st.sampled_from(["none", "trace", "error"]))
        source = draw(st.sampled_from([DECODE, "20261101-000000-eeeeee"]))
        if kind == "trace" and (source != DECODE or s.error is None):
            n = draw(st.integers(1, 4))
            ids = draw(st.lists(st.integers(0, 50_000), min_size=n, max_size=n))
            lps = draw(st.lists(st.floats(-30, 0, width=32), min_size=n, max_size=n))
            trace = trace_of(ids, lps, [[(t, lp)] for t, lp in zip(ids, lps, strict=True)], 2)
            traces.append(StoredTrace(run_id, s.item_id, source, draw(COUNT), trace))
            if source == DECODE and s.output_tokens is not None:
                # A decode-path trace has one position per generated token.
                samples[i] = dataclasses.replace(s, output_tokens=n)
        elif kind == "error" and source != DECODE:
            traces.append((source, s.item_id, draw(NAME)))
    return run.with_(**summary_of(samples)), samples, prompts, traces


def export_text(store: Store, run_id: str) -> str:
    out = io.StringIO()
    export_run(store, run_id, out)
    return out.getvalue()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


_counter = iter(range(10**9))


def fresh(workdir: Path) -> Store:
    return open_store(workdir / f"s{next(_counter)}.db")


@SETTINGS
@given(stored_runs())
def test_any_valid_run_round_trips_byte_for_byte(
    workdir: Path, case: tuple[Run, list[Sample], dict[str, str], list[Any]]
) -> None:
    run, samples, prompts, traces = case
    with fresh(workdir) as src, fresh(workdir) as dst:
        src.create_run(run, samples, prompts)
        put_traces(src, [t for t in traces if isinstance(t, StoredTrace)])
        for source, item_id, error in (t for t in traces if isinstance(t, tuple)):
            put_trace_errors(src, run.run_id, source, {item_id: error})
        text = export_text(src, run.run_id)
        assert import_run(dst, io.StringIO(text)) == run.run_id
        assert export_text(dst, run.run_id) == text
        assert dst.samples(run.run_id) == src.samples(run.run_id)
        # Again, into both stores: the same id, nothing written.
        assert import_run(dst, text.split("\n")) == run.run_id
        assert import_run(src, text.split("\n")) == run.run_id
        assert export_text(dst, run.run_id) == text


VALID = [
    json.dumps({"run": {"model": "m", "task": "t", "task_version": "1", "layout": "tp1"}}),
    json.dumps({"item_id": 1, "output": "4", "correct": True}),
]


def _imports_or_refuses(workdir: Path, lines: list[Any]) -> None:
    """Either the file is refused with an EvalpipeError naming it, or the store holds exactly
    what the file says (NaN stored as NULL, say, would be neither)."""
    with fresh(workdir) as store:
        try:
            run_id = import_run(store, lines, source="junk.jsonl")
        except EvalpipeError as exc:
            assert exc.message.startswith("junk.jsonl")
            assert store.list_runs() == []
            return
        parsed = parse_jsonl(lines)
        stored = store.get_run(run_id)
        assert stored == parsed.run.with_(**{f: getattr(stored, f) for f in parsed.clock})
        by_item = {s.item_id: s for s in parsed.samples}
        assert {s.item_id: s for s in store.samples(run_id)} == by_item


@SETTINGS
@given(st.lists(st.text(), max_size=4))
def test_junk_text_lines_raise_only_evalpipe_errors(workdir: Path, lines: list[str]) -> None:
    _imports_or_refuses(workdir, lines)


@SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=4))
def test_junk_bytes_raise_only_evalpipe_errors(workdir: Path, lines: list[bytes]) -> None:
    _imports_or_refuses(workdir, [VALID[0].encode(), *lines])


# Values no store keeps alike come often: NaN, ±Infinity, integers past 64 bits, NUL, lone
# surrogates.
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=10**40)
    | st.floats()
    | st.sampled_from([float("nan"), float("inf"), -float("inf")])
    | st.text(st.characters(codec="utf-8") | st.sampled_from("\x00\ud800\udfff")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


# A sample line whose meta is nested n levels deep (json.loads gives up near 1 000).
DEEP = st.integers(1, 100_000).map(
    lambda n: (
        '{"item_id": 1, "output": "x", "correct": true, "meta": {"a": ' + "[" * n + "]" * n + "}}"
    )
)


@SETTINGS
@given(st.lists(ANY_JSON.map(json.dumps) | DEEP, max_size=3))
def test_any_json_after_a_valid_header_raises_only_evalpipe_errors(
    workdir: Path, lines: list[str]
) -> None:
    _imports_or_refuses(workdir, [VALID[0], *lines])


# Every key the format knows, on its kind of line (0: the run, 1: a sample, 2: a trace).
PLACES = st.one_of(
    st.tuples(st.just(0), st.sampled_from(sorted(RUN_KEYS))),
    st.tuples(st.just(1), st.sampled_from(sorted(SAMPLE_KEYS))),
    st.tuples(st.just(2), st.sampled_from(sorted(TRACE_KEYS))),
)
TRACE = {"item_id": 1, "source": "", "error": "HTTP 400"}


@SETTINGS
@given(PLACES, ANY_JSON)
def test_any_value_under_a_known_key_raises_only_evalpipe_errors(
    workdir: Path, place: tuple[int, str], value: Any
) -> None:
    line, key = place
    objects = [*(json.loads(v) for v in VALID), {"trace": dict(TRACE)}]
    (objects[0]["run"], objects[1], objects[2]["trace"])[line][key] = value
    _imports_or_refuses(workdir, [json.dumps(o) for o in objects])
