"""Teacher-forced scoring (the prefill path): a run's engine scores a baseline's generated
tokens, so both layouts are measured on the same token sequence.

``score(RUN, against=BASELINE)`` sends each item's prompt followed by the tokens BASELINE
generated for it (its decode trace) to RUN's engine, asking for prompt logprobs and one new
token; the logprobs of the forced positions are stored as RUN's trace with
``source = BASELINE``. This exercises prefill (and prefill context parallelism) and removes
the divergence cascade of free generation. So that both sides of the forced comparison come
from teacher forcing, BASELINE's own tokens are scored on BASELINE's engine too (source =
BASELINE on BASELINE) and, for the noise floor, under the id of each of BASELINE's repeats
(runs of the same configuration apart from ``repeat_index``), in BASELINE's session: the
configuration is the same, so one engine serves them all.

Engines are re-created from the stored configuration (model, layout, engine arguments,
platform) as ``evalpipe run`` made them: launched (``serve``) or in process (``offline``);
a run made on an endpoint (whose flags evalpipe never knew) or imported is scored by the
server at ``--endpoint``. When RUN and BASELINE share a configuration apart from the repeat
index, one session scores both. Items already scored are skipped (the command resumes),
items BASELINE errored on have no tokens to force and are left out, and every trace is
stored the moment it arrives.

Refused: runs that are missing or unfinished, whose model fingerprints differ (token ids mean
nothing across tokenizers), whose task or prompts differ, or a baseline without decode
traces. What is decided before any engine starts is :mod:`evalpipe.run.score_plan`; the
engine re-created for a run is :mod:`evalpipe.run.score_engine`; how each item's request is
built and stored is :mod:`evalpipe.run.forcing`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evalpipe.compare.core import item_order
from evalpipe.engine import models
from evalpipe.engine.args import EngineArgs
from evalpipe.engine.session import Engine, SessionSpec, open_session
from evalpipe.errors import EvalpipeError
from evalpipe.limits import (
    INT64_MAX,
    MAX_CONCURRENCY,
    MAX_LOGPROBS,
    check_fraction,
    check_int,
)
from evalpipe.records import Run
from evalpipe.run.forcing import TraceWriter, forced_requests, prompt_request
from evalpipe.run.plan import check_logprobs
from evalpipe.run.progress import Progress
from evalpipe.run.score_engine import engine_spec, version_notice
from evalpipe.run.score_plan import Baseline, Say, Side, baseline_of, check_pair, plan_sides
from evalpipe.store import Store, describe_store, open_store
from evalpipe.store.connect import resolve
from evalpipe.store.traces import traced_items
from evalpipe.traces import FORCED_PATHS, forced_source

__all__ = ["ScoreOptions", "ScoreReport", "TargetResult", "execute"]


@dataclass(frozen=True)
class ScoreOptions:
    """What ``evalpipe score`` was asked.

    ``engine`` ``None`` re-creates each run's engine the way it was made (``serve`` or
    ``offline``); ``"serve"``/``"offline"`` override that. ``endpoint`` is the server that
    scores RUN (required when RUN was made on an endpoint); ``baseline_endpoint`` the one
    that scores BASELINE and its repeats when they need a session of their own.
    ``served_model`` is the model name on those servers (default: the run's model).
    ``logprobs`` ``None`` takes the baseline's k. ``floor`` ``None`` scores the baseline's
    repeats when it has any. ``max_error_rate`` is the share of items that may fail before
    the command does.
    """

    run: str
    against: str
    store: str | None = None
    engine: str | None = None
    endpoint: str | None = None
    baseline_endpoint: str | None = None
    served_model: str | None = None
    logprobs: int | None = None
    floor: bool | None = None
    max_error_rate: float = 0.0
    concurrency: int | None = None
    engine_args: tuple[str, ...] = ()
    limit: int | None = None
    request_timeout_s: float = 3600.0
    health_timeout_s: float = 900.0
    runs_dir: Path | None = None
    progress: bool = True
    path: str = "forced-decode"
    """``forced-decode`` (the engine generates the tokens one decode step at a time: the decode
    kernels, at a generation's memory; 0.18× the time of prefill on 120 GSM8K items,
    ``benchmarks/forced.py``) or ``prefill`` (prompt logprobs of the tokens appended to the
    prompt, a vocabulary-sized row per position)."""


@dataclass(frozen=True)
class TargetResult:
    """One run's engine scoring the baseline's tokens. ``role`` is ``run`` (RUN),
    ``baseline`` (BASELINE on its own tokens) or ``repeat`` (a repeat of BASELINE, for the
    noise floor); ``items`` counts the baseline items with tokens, ``already`` those scored
    before this call, ``scored`` those scored now, ``errors`` those that failed now (item →
    reason)."""

    run_id: str
    role: str
    layout: str
    items: int
    already: int
    scored: int
    errors: Mapping[str, str]


@dataclass(frozen=True)
class ScoreReport:
    """What a ``score`` call did; every trace is stored under :attr:`source`."""

    run_id: str
    baseline_id: str
    k: int
    store: str
    targets: tuple[TargetResult, ...]
    notices: tuple[str, ...]
    path: str = "prefill"
    store_flag: str = ""
    """`` --store STORE`` when one was given: what a suggested command adds to find it."""

    @property
    def source(self) -> str:
        """The ``source`` its traces are stored under."""
        return forced_source(self.baseline_id, self.path)

    @property
    def n_errors(self) -> int:
        return sum(len(t.errors) for t in self.targets)


def execute(options: ScoreOptions) -> ScoreReport:
    """Score as the module docstring says. Raises :class:`EvalpipeError` on refused input, an
    engine that cannot start, or more failed items than ``max_error_rate`` allows (what was
    scored stays stored, and the same command retries the rest)."""
    check_int("--logprobs", options.logprobs, 1, MAX_LOGPROBS)
    check_fraction("--max-error-rate", options.max_error_rate)
    check_int("--concurrency", options.concurrency, 1, MAX_CONCURRENCY)
    check_int("--limit", options.limit, 1, INT64_MAX)
    if options.path not in FORCED_PATHS:
        raise EvalpipeError(f"--path must be one of {', '.join(FORCED_PATHS)}", exit_code=2)
    say = _sayer(options.progress)
    # The runs must exist, so must their store: a typo in --store creates nothing.
    with open_store(options.store, create=False, empty_ok=False) as store:
        run, base_run = store.get_run(options.run), store.get_run(options.against)
        notices = check_pair(run, base_run)
        for text in notices:
            say(f"note: {text}")
        base = baseline_of(store, base_run)
        k = options.logprobs or max(t.trace.k for t in base.traces.values())
        check_logprobs(k, tuple(EngineArgs(run.config.engine_args).as_pairs()))
        sides = plan_sides(
            store,
            run,
            base_run,
            say,
            endpoint=options.endpoint,
            baseline_endpoint=options.baseline_endpoint,
            floor=options.floor,
        )
        results: list[TargetResult] = []
        for work in plan_work(store, sides, base, k, options, say):
            results += score_side(store, work, base, options, say)
    report = ScoreReport(
        run.run_id,
        base_run.run_id,
        k,
        describe_store(options.store),
        tuple(results),
        notices,
        options.path,
        resolve(options.store).flag,
    )
    _check_errors(report, options.max_error_rate)
    return report


@dataclass(frozen=True)
class Work:
    """What one side has left: items to score per target run id, how many were already
    scored, and the session to open (``None`` when nothing is left)."""

    side: Side
    todo: Mapping[str, list[str]]
    already: Mapping[str, int]
    spec: SessionSpec | None


def plan_work(
    store: Store, sides: list[Side], base: Baseline, k: int, options: ScoreOptions, say: Say
) -> list[Work]:
    """Each side's remaining items and session, all decided before any engine starts (so a
    missing ``--baseline-endpoint`` fails before RUN's engine spends an hour)."""
    source = forced_source(base.run.run_id, options.path)
    items = set(base.traces)
    if options.limit is not None:
        # The first items in dataset order, the same on every side and every call.
        items = set(sorted(items, key=item_order)[: options.limit])
    out = []
    for side in sides:
        todo: dict[str, list[str]] = {}
        already: dict[str, int] = {}
        for r, role in side.targets:
            done = traced_items(store, r.run_id, source) & items
            todo[r.run_id] = sorted(items - done)
            already[r.run_id] = len(done)
            if not todo[r.run_id]:
                say(f"{_what(r, role, source)}: all {len(items)} items already scored")
        spec = None
        if any(todo.values()):
            spec = engine_spec(
                side.owner,
                side.endpoint,
                side.endpoint_flag,
                k,
                engine=options.engine,
                served_model=options.served_model,
                concurrency=options.concurrency,
                extra_args=options.engine_args,
                request_timeout_s=options.request_timeout_s,
                health_timeout_s=options.health_timeout_s,
                base_dir=options.runs_dir,
                forced_decode=options.path == "forced-decode",
            )
        out.append(Work(side, todo, already, spec))
    return out


def score_side(
    store: Store, work: Work, base: Baseline, options: ScoreOptions, say: Say
) -> list[TargetResult]:
    """Score ``work``'s targets in its one session (none opened when nothing is left)."""
    source = forced_source(base.run.run_id, options.path)
    n = len(base.traces)
    results = {
        r.run_id: TargetResult(r.run_id, role, r.config.layout, n, work.already[r.run_id], 0, {})
        for r, role in work.side.targets
    }
    if work.spec is None:
        return list(results.values())
    with open_session(work.spec, say) as engine:
        notice = version_notice(engine, work.side.owner)
        if notice:
            say(f"note: {notice}")
        needed = sorted({i for items in work.todo.values() for i in items})
        prompt_ids = tokenize(store, engine, base, needed)
        for r, role in work.side.targets:
            todo = work.todo[r.run_id]
            if not todo:
                continue
            say(
                f"{_what(r, role, source)}: {len(todo)} items to score, "
                f"{results[r.run_id].already} already stored"
            )
            progress = Progress(
                len(todo), f"score {r.run_id}", enabled=options.progress, accuracy=False
            )
            writer = TraceWriter(store, r.run_id, source, base.traces, progress)
            vocab = models.vocab_size(r.config.model)
            forced = forced_requests(todo, prompt_ids, base.traces, options.path, vocab)
            writer.refuse(forced.refused)
            engine.generate(forced.requests, writer)
            results[r.run_id] = dataclasses.replace(
                results[r.run_id], scored=writer.scored, errors=dict(writer.errors)
            )
    return list(results.values())


def tokenize(
    store: Store, engine: Engine, base: Baseline, items: list[str]
) -> dict[str, list[int] | str]:
    """Each item's prompt as the engine tokenizes it (or why it could not be)."""
    texts = store.get_prompts(base.prompt_hashes[i] for i in items)
    known = [i for i in items if base.prompt_hashes[i] in texts]
    out: dict[str, list[int] | str] = {
        i: "the baseline's prompt text is not stored" for i in items if i not in known
    }
    if known:
        out.update(
            engine.tokenize([prompt_request(i, texts[base.prompt_hashes[i]]) for i in known])
        )
    return out


def _what(run: Run, role: str, source: str) -> str:
    if role == "run":
        return f"run {run.run_id} ({run.config.layout}) on the tokens of {source}"
    if role == "baseline":
        return f"baseline {run.run_id} ({run.config.layout}) on its own tokens"
    return f"repeat {run.run_id} of the baseline (noise floor) on the tokens of {source}"


def _sayer(enabled: bool) -> Say:
    def say(text: str) -> None:
        if enabled:
            print(text, file=sys.stderr, flush=True)

    return say


def _check_errors(report: ScoreReport, max_error_rate: float) -> None:
    """Fail when more items failed than allowed; the scored ones stay stored."""
    # Over all items, as a run's error rate: every stored error is retried, so this call's
    # errors are all the errors there are.
    attempted = sum(t.items for t in report.targets)
    if not attempted or report.n_errors / attempted <= max_error_rate:
        return
    first = [f"{t.run_id} item {i}: {e}" for t in report.targets for i, e in t.errors.items()]
    raise EvalpipeError(
        f"{report.n_errors} of {attempted} teacher-forced items failed "
        f"({report.n_errors / attempted:.1%}), above --max-error-rate {max_error_rate:.1%}. "
        f"They are stored as errors, never as scores. First: {'; '.join(first[:3])}. Rerun "
        "the same command to retry only the failed items."
    )
