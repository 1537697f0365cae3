"""The dashboard's comparisons, computed by the comparison core from bulk-read answers.

Each :class:`Job` is one run against its baseline; :func:`compute` reads the answers of a
batch of jobs' runs in a few queries (each run once, only the fields figures need), calls
:func:`evalpipe.compare.core.compare_answers` and :func:`~evalpipe.compare.core.noise_floor`,
then reads the target and extracted answers of the flipped items only. A job whose run or
baseline has token traces (its ``traces`` stamps, read for all runs at once by
:func:`evalpipe.store.traces.trace_stamp`) also gets the token-level comparison
(:func:`evalpipe.compare.tokens.runs.token_comparison`), with the same baseline repeats as its
noise floor and the same shard period. The figures are
therefore ``evalpipe compare``'s own; only ``per_verdict`` (every extractor's accuracy, which
the dashboard does not show) is left empty, because it needs every sample's verdict map.

With many jobs on a multi-core machine the batches are spread over forked worker processes
(:mod:`evalpipe.report.fork`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from types import MappingProxyType
from typing import Any

from evalpipe.compare.core import (
    Answer,
    Comparison,
    Noise,
    Settings,
    ShardPeriod,
    compare_answers,
    noise_floor,
)
from evalpipe.compare.tokens.runs import token_comparison
from evalpipe.compare.tokens.types import PATHS, TokenComparison
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run
from evalpipe.report.fork import cores, forget_connections, fork_map
from evalpipe.store import Store
from evalpipe.store.answers import LIGHT_FIELDS, read_answers, read_fields

MAX_FLIPS = 200
"""Flip examples kept per comparison: a broken layout can flip hundreds of items, and a
page of a thousand 2 000-character outputs helps nobody; the counts stay exact."""
SETTINGS = Settings(max_flips=MAX_FLIPS)

RUNS_PER_BATCH = 100
"""Runs whose answers a process holds at once (about 30 MB for GSM8K-sized runs); small
enough that the batches of 1 000 runs spread evenly over the workers."""
MIN_JOBS_PER_WORKER = 40
"""Below this a worker process costs more than it saves."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Job:
    """One comparison to compute: ``run`` against ``baseline``, the noise floor from
    ``repeats`` (the baseline configuration's finished runs; fewer than two: unknown)."""

    run: Run
    baseline: Run
    repeats: tuple[Run, ...]
    shard: ShardPeriod
    traces: Mapping[str, Any] = field(default_factory=dict)
    """Trace stamps by run id of those of run, baseline and repeats that have token traces."""

    @property
    def floor_runs(self) -> tuple[Run, ...]:
        """The baseline's repeats other than itself: its token-level noise floor."""
        return tuple(r for r in self.repeats if r.run_id != self.baseline.run_id)

    @property
    def has_traces(self) -> bool:
        """Whether a token-level comparison is possible (one side alone: it says why not)."""
        return self.run.run_id in self.traces or self.baseline.run_id in self.traces

    def with_traces(self, stamps: Mapping[str, Any]) -> Job:
        """This job with the stamps, from ``stamps`` of every run, of its own runs."""
        ids = (self.run.run_id, self.baseline.run_id, *(r.run_id for r in self.repeats))
        return replace(self, traces={i: stamps[i] for i in ids if i in stamps})


Outcome = Comparison | str
"""A comparison, or why there is none (the runs share no scored item)."""


def _batches(jobs: Sequence[Job], max_runs: int) -> Iterator[list[Job]]:
    """Jobs grouped so that a batch needs at most about ``max_runs`` runs; jobs with one
    baseline stay together, so a shared baseline is read once."""
    batch: list[Job] = []
    needed: set[str] = set()
    for job in sorted(jobs, key=lambda j: (j.baseline.run_id, j.run.run_id)):
        ids = {job.run.run_id, job.baseline.run_id, *(r.run_id for r in job.repeats)}
        if batch and len(needed | ids) > max_runs:
            yield batch
            batch, needed = [], set()
        batch.append(job)
        needed |= ids
    if batch:
        yield batch


def _compute_batch(store: Store, batch: Sequence[Job]) -> dict[str, Outcome]:
    """Outcomes of one batch by run id."""
    ids = {r.run_id for j in batch for r in (j.run, j.baseline, *j.repeats)}
    # No target or maps: one shared empty map for every answer, not two fresh dicts each.
    answers = read_answers(store, ids, Answer, LIGHT_FIELDS, fill=(None, _EMPTY, _EMPTY))
    noise: dict[tuple[str, ...], Noise] = {}
    out: dict[str, Outcome] = {}
    for job in batch:
        group = tuple(r.run_id for r in job.repeats)
        if group not in noise:
            noise[group] = noise_floor([answers[i] for i in group])
        try:
            comparison = compare_answers(
                job.run,
                job.baseline,
                answers[job.run.run_id],
                answers[job.baseline.run_id],
                settings=SETTINGS,
                noise=noise[group],
                shard=job.shard,
            )
        except EvalpipeError as exc:  # the runs share no scored item
            out[job.run.run_id] = str(exc)
            continue
        if job.has_traces:
            comparison = replace(comparison, tokens=_tokens(store, job))
        out[job.run.run_id] = comparison
    return _with_flip_details(store, out)


def _tokens(store: Store, job: Job) -> TokenComparison | None:
    """The job's token-level comparison; a pair that cannot be compared token by token says
    why on its page instead of costing the page its accuracy figures."""
    try:
        return token_comparison(
            store,
            job.run,
            job.baseline,
            floor_runs=job.floor_runs,
            period=job.shard.period,
            alpha=SETTINGS.alpha,
        )
    except EvalpipeError as exc:
        reason = str(exc)
        return TokenComparison(
            job.run.run_id,
            job.baseline.run_id,
            job.shard.period,
            unavailable={path: reason for path in PATHS},
        )


def _with_flip_details(store: Store, outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
    """Fill each flip example's target and extracted answers, read for those items only."""
    keys = {
        key
        for c in outcomes.values()
        if isinstance(c, Comparison)
        for f in c.flip_examples
        for key in ((c.run.run_id, f.item_id), (c.baseline.run_id, f.item_id))
    }
    if not keys:
        return outcomes
    found = read_fields(store, keys, ("target", "extracted"))
    none: tuple[Any, ...] = (None, {})
    for run_id, c in outcomes.items():
        if isinstance(c, Comparison) and c.flip_examples:
            flips = []
            for f in c.flip_examples:
                target, extracted = found.get((c.run.run_id, f.item_id), none)
                base = found.get((c.baseline.run_id, f.item_id), none)[1]
                flips.append(
                    replace(f, target=target, run_extracted=extracted, baseline_extracted=base)
                )
            outcomes[run_id] = replace(c, flip_examples=tuple(flips))
    return outcomes


def workers_for(n_jobs: int) -> int:
    """Worker processes worth starting for ``n_jobs`` comparisons (1: compute in process)."""
    return max(1, min(cores(), n_jobs // MIN_JOBS_PER_WORKER))


def compute(
    store: Store,
    jobs: Sequence[Job],
    workers: int | None = None,
    runs_per_batch: int = RUNS_PER_BATCH,
) -> dict[str, Outcome]:
    """Every job's outcome by run id; ``workers`` processes (default :func:`workers_for`)."""
    batches = list(_batches(jobs, runs_per_batch))
    n = workers_for(len(jobs)) if workers is None else workers
    out: dict[str, Outcome] = {}
    init = partial(forget_connections, store)
    for part in fork_map(partial(_compute_batch, store), batches, n, init):
        out.update(part)
    return out
