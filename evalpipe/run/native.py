"""One evaluation run, end to end: plan → engine session → score each sample → store it.

The run record is created (or resumed) before the engine starts, so a launch failure, a
Ctrl-C or a ``kill -9`` always leaves a stored run that says what happened; every sample is
committed the moment it is scored, and a resumed run sends only the items that have no good
sample yet. What is decided before the engine starts is :mod:`evalpipe.run.plan`; how a
completion becomes a stored sample is :mod:`evalpipe.run.record`.

One process at a time works on a run (:mod:`evalpipe.store.holders`): the same command
started twice resumes the same run, and the second is refused, naming the first, before it
sends anything.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalpipe.backends import backend_for, uses_cpu_dcp
from evalpipe.engine import provenance
from evalpipe.engine.session import HttpSession, connect, open_session
from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions
from evalpipe.records import Run, RunConfig, new_run_id, utcnow
from evalpipe.run.plan import Plan, generation, plan, run_config, runs_dir, session_spec
from evalpipe.run.progress import Progress
from evalpipe.run.record import Recorder, Tally, requests_of
from evalpipe.store import Store, open_store
from evalpipe.store.holders import Claim, hold
from evalpipe.store.traces import traced_items
from evalpipe.tasks.prompts import Prompt

__all__ = ["execute"]


def execute(options: RunOptions, shared: HttpSession | None = None) -> Run:
    """Run (or resume) an evaluation and return the finished run record.

    The run is stored before the engine starts. An engine that cannot start or an
    infrastructure-error rate above ``max_error_rate`` marks it ``failed`` and raises
    :class:`EvalpipeError`; Ctrl-C marks it ``aborted``. Either way the stored samples stay,
    and the same command resumes it.

    ``shared`` is a server already up for this run's model and layout (a sweep starts one per
    pair and runs every task on it): it is used instead of starting one, and since it was
    started from the same configuration the run's stored configuration is the one a run
    alone would store, so both pair, reuse and resume alike.
    """
    p = plan(options)
    endpoint = None
    if shared is not None:
        endpoint = shared.with_generation(generation(p))
        versions = endpoint.versions
    elif options.engine == "endpoint":
        # The endpoint's versions are part of the configuration, so it is reached first.
        assert options.endpoint is not None  # plan() checked it
        served = options.served_model or options.model
        endpoint = connect(options.endpoint, served, generation(p))
        versions = endpoint.versions
    else:
        versions = provenance.engine_versions()
    config = run_config(p, versions)
    store = open_store(options.store)
    try:
        run, resumed = _open_or_resume(store, p, config)
        return _run(store, p, run, resumed, endpoint)
    finally:
        store.close()


def _run(store: Store, p: Plan, run: Run, resumed: bool, endpoint: HttpSession | None) -> Run:
    """Send the items that have no good sample yet, then finish the run."""
    store.put_prompts({q.prompt_hash: q.canonical_text() for q in p.prompts})
    _, todo, recapture = _left(store, p, run)
    # Which run this is matters even with --quiet (which silences progress only).
    if not todo and run.status == "finished":
        # A finished run of the same config, reused (--with-baseline, --repeat).
        _notice(f"reusing finished run {run.run_id} ({run.config.layout})")
        if recapture:
            with hold(store, run.run_id) as claim:
                recapture = _left(store, p, run)[2]
                if recapture:
                    _complete_capture(store, p, run, endpoint, recapture, claim)
        return run
    with hold(store, run.run_id) as claim:
        return _work(store, p, run, resumed, endpoint, claim)


def _left(store: Store, p: Plan, run: Run) -> tuple[set[str], list[Prompt], dict[str, str]]:
    """The run's answered items, the prompts still to send, and the answered items whose
    trace is still to capture."""
    done = store.done_item_ids(run.run_id)
    todo = [q for q in p.prompts if q.item_id not in done]
    return done, todo, _untraced(store, p, run, done)


def _work(
    store: Store, p: Plan, run: Run, resumed: bool, endpoint: HttpSession | None, claim: Claim
) -> Run:
    """Generate what is left of ``run`` (this process holds it: read again now, as another
    process may have finished items before it let go), then finish it."""
    options = p.options
    run_dir = runs_dir(options) / run.run_id
    done, todo, recapture = _left(store, p, run)
    progress = Progress(len(p.prompts) + len(recapture), p.task.name, enabled=options.progress)
    progress.done = len(done)
    if resumed:
        _notice(
            f"resuming run {run.run_id}: {len(done)} of {len(p.prompts)} samples stored, "
            f"{len(todo)} to go"
        )
    if recapture:
        _notice(_recapture_message(run, len(recapture), options.logprobs))
    run = run.with_(
        status="running",
        n_items=len(p.prompts),
        provenance={
            **dict(run.provenance),
            **provenance.environment(),
            "packages": provenance.package_versions(),
            "data": {"source": p.dataset.source, "n_total": p.dataset.n_total},
            "task": {"template_hash": p.task.template_hash},
            "run_dir": str(run_dir),
            "capture": {"logprobs": options.logprobs},
            **_backend(p),
        },
    )
    store.update_run(run)
    recorder = Recorder(
        p.task,
        p.dataset,
        p.prompts,
        run.run_id,
        store,
        progress,
        options.logprobs,
        recapture,
        claim,
    )
    again = [q for q in p.prompts if q.item_id in recapture]
    if todo or again:
        # (No engine when it was killed after its last sample but before it was finished.)
        order = [*todo, *again]
        if options.request_order == "reversed":
            order.reverse()
        run = _generate(store, p, run, run_dir, endpoint, recorder, order)
    _capture_report(recorder.tally, options.logprobs)
    return _finish(store, run, recorder.tally, options.max_error_rate)


def _backend(p: Plan) -> dict[str, Any]:
    """The attention backend of an engine evalpipe starts on its own backend (a DCP layout on
    CPU), with why: provenance, not configuration (the layout and platform decide it)."""
    if p.options.engine == "endpoint" or not uses_cpu_dcp(p.layout, p.platform):
        return {}
    backend = backend_for(p.layout, p.platform)
    return {"attention_backend": {"name": backend.name, "why": backend.why}}


def _untraced(store: Store, p: Plan, run: Run, done: set[str]) -> dict[str, str]:
    """Answered items without a stored trace, with their stored answer, when capturing."""
    if p.options.logprobs <= 0 or not done:
        return {}
    traced = traced_items(store, run.run_id)
    missing = done - traced
    if not missing:
        return {}
    return {s.item_id: s.output or "" for s in store.samples(run.run_id) if s.item_id in missing}


def _recapture_message(run: Run, n: int, k: int) -> str:
    return (
        f"run {run.run_id}: {n} answered items have no token logprobs; generating them again "
        f"with --logprobs {k} to complete the capture (greedy decoding at the same "
        "configuration repeats the answer; a trace is kept only where it does, and the "
        "stored answers are not changed)"
    )


def _complete_capture(
    store: Store,
    p: Plan,
    run: Run,
    endpoint: HttpSession | None,
    recapture: dict[str, str],
    claim: Claim,
) -> None:
    """Capture traces for a finished run's answered items; a failure leaves the run as it
    was (finished, its answers stored) and says so."""
    _notice(_recapture_message(run, len(recapture), p.options.logprobs))
    progress = Progress(
        len(recapture), f"{p.task.name} capture", enabled=p.options.progress, accuracy=False
    )
    recorder = Recorder(
        p.task, p.dataset, p.prompts, run.run_id, store, progress, p.options.logprobs, recapture
    )
    recorder.holder = claim
    run_dir = runs_dir(p.options) / run.run_id
    spec = session_spec(p.options, p.layout, p.engine_args, p.engine_env, run_dir, generation(p))
    again = [q for q in p.prompts if q.item_id in recapture]
    try:
        with open_session(spec, progress.message, endpoint) as engine:
            engine.generate(requests_of(again), recorder)
    except EvalpipeError as exc:
        _notice(f"capture of run {run.run_id} not completed: {exc}")
    _capture_report(recorder.tally, p.options.logprobs)


def _capture_report(tally: Tally, k: int) -> None:
    if k and tally.mismatched:
        _notice(
            f"{tally.mismatched} regenerated answers differed from the stored ones: their "
            "traces are not stored (the engine is not deterministic at this configuration)"
        )
    if k and tally.untraced:
        _notice(f"{tally.untraced} answers came back without token logprobs (none stored)")


def _generate(
    store: Store,
    p: Plan,
    run: Run,
    run_dir: Path,
    endpoint: HttpSession | None,
    recorder: Recorder,
    todo: Sequence[Prompt],
) -> Run:
    """One engine session for ``todo``; a failure marks the run failed, Ctrl-C aborted."""
    spec = session_spec(p.options, p.layout, p.engine_args, p.engine_env, run_dir, generation(p))
    progress = recorder.progress
    try:
        with open_session(spec, progress.message, endpoint) as engine:
            run = run.with_(provenance={**dict(run.provenance), "engine": engine.report()})
            store.update_run(run)
            # Rates and throughput cover generation only, not the engine's start-up.
            started = time.monotonic()
            progress.restart()
            engine.generate(requests_of(todo), recorder)
            recorder.tally.generation_s = time.monotonic() - started
    except EvalpipeError as exc:
        store.update_run(_summarized(store, run).with_(status="failed", message=str(exc)))
        raise
    except BaseException:
        store.update_run(_summarized(store, run).with_(status="aborted"))
        raise
    return run


def _open_or_resume(store: Store, p: Plan, config: RunConfig) -> tuple[Run, bool]:
    o = p.options
    if o.resume:
        run = store.get_run(o.resume)
        if run.config.config_hash() != config.config_hash():
            diff = _config_diff(run.config, config)
            raise EvalpipeError(
                f"run {run.run_id} was made with a different configuration ({diff}); "
                "resume it with the same options, or start a new run without --resume"
            )
        return run, True
    found = store.find_unfinished(config.config_hash())
    if found is not None:
        return found, True
    if o.reuse_finished:
        done = store.find_finished(config.config_hash())
        if done is not None:
            return done, True
    run = Run(
        run_id=new_run_id(),
        config=config,
        status="running",
        started_at=utcnow(),
        n_items=len(p.prompts),
        tags=o.tags,
    )
    store.create_run(run)
    return run, False


def _config_diff(a: RunConfig, b: RunConfig) -> str:
    ka, kb = a.key(), b.key()
    changed = [k for k in ka if ka[k] != kb.get(k)]
    return ", ".join(f"{k}: {ka[k]!r} → {kb[k]!r}" for k in changed[:4]) or "unknown"


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _summarized(store: Store, run: Run) -> Run:
    s = store.summarize(run.run_id)
    return run.with_(**s)


def _finish(store: Store, run: Run, tally: Tally, max_error_rate: float) -> Run:
    run = _summarized(store, run)
    elapsed = tally.generation_s
    n_errors = run.n_errors
    error_rate = n_errors / run.n_items if run.n_items else 0.0
    throughput = tally.output_tokens / elapsed if elapsed > 0 else None
    run = run.with_(finished_at=utcnow(), duration_s=elapsed, throughput_tok_s=throughput)
    if error_rate > max_error_rate:
        first = store.first_errors(run.run_id, 3)
        message = (
            f"{n_errors} of {run.n_items} requests failed ({error_rate:.1%}), above "
            f"--max-error-rate {max_error_rate:.1%}. Infrastructure errors are not scored. "
            f"First errors: {'; '.join(first)}. Rerun the same command (or --resume "
            f"{run.run_id}) to retry only the failed items."
        )
        store.update_run(run.with_(status="failed", message=message))
        raise EvalpipeError(message)
    run = run.with_(status="finished", message=None)
    store.update_run(run)
    return run
